"""The docs say what the code does: every setting and default, and no reference leaves the repo."""

import dataclasses
import re
from pathlib import Path

from webserver.config import PARSERS, Settings

REPO = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `(\w+)` \| (.+?) \| (.+) \|$")


def documented_settings() -> dict[str, str]:
    text = (REPO / "docs" / "configuration.md").read_text()
    return {m.group(1): m.group(2) for line in text.splitlines() if (m := ROW.match(line))}


def shown(value) -> str:
    """A default as the table writes it."""
    if value is None:
        return "(none)"
    if value == ():
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{value[0]}:{value[1]}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def test_every_setting_is_documented_with_its_default():
    defaults = {
        field.name: shown(field.default)
        for field in dataclasses.fields(Settings)
        if field.name != "config_path"
    }
    assert set(defaults) == set(PARSERS)
    assert documented_settings() == defaults
