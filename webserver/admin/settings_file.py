"""`ssh-auth config set KEY VALUE`: one setting in ssh-auth.conf, checked first, written atomically.

Comments, order and the registry lines are kept; the file keeps its mode and owner; the result
must parse as a whole (so a change can never leave the service unable to start).
"""

import os
import stat

from ..config import PARSERS, ConfigError, Settings
from ..files import atomic_write, locked


def set_setting(path: str, key: str, value: str) -> bool:
    """Set `key = value` (replacing every line for the key); whether the file changed."""
    return set_settings(path, {key: value})


def set_settings(path: str, changes: dict[str, str]) -> bool:
    """Set each `key = value` in one atomic write; whether the file changed."""
    for key, value in changes.items():
        parser = PARSERS.get(key)
        if parser is None:
            raise ConfigError(f"unknown setting {key!r} (see docs/configuration.md)")
        if "\n" in value or "\r" in value:
            raise ConfigError(f"{key}: a value is one line")
        try:
            parser(value.strip())
        except ValueError as error:
            raise ConfigError(f"{key} {error}") from None
    with locked(path):
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines(keepends=True)
        info = os.stat(path)
        kept = lines
        for key, value in changes.items():
            kept = _with_setting(kept, key, value.strip())
        if kept == lines:
            return False
        Settings.parse("".join(kept), path)  # the whole file must still be a valid configuration
        atomic_write(path, "".join(kept).encode(), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
        return True


def _with_setting(lines: list[str], key: str, value: str) -> list[str]:
    """The lines with `key = value` in place of the key's first line (its others dropped)."""
    new_line = f"{key} = {value}\n"
    kept, placed = [], False
    for line in lines:
        if line.partition("=")[0].strip() == key and not line.lstrip().startswith("#"):
            if not placed:
                kept.append(new_line)
                placed = True
            continue
        kept.append(line)
    if not placed:
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        kept.append(new_line)
    return kept
