"""The QR the service renders fits the shim's terminal and decodes back to the check URL."""

import pytest
import zxingcpp

from sshshim.terminal import rows_reserved
from webserver.qr import FULL, LOWER, UPPER, render

BASE = "https://eu.api.idlayr.com/phone_check/v0.2/checks/"
# (top is light, bottom is light) for each half-block character: light modules are drawn.
HALVES = {FULL: (True, True), UPPER: (True, False), LOWER: (False, True), " ": (False, False)}


def url_of_length(n: int) -> str:
    url = BASE + "0d9c1e7e-6f7f-4a53-9c7d-3c5d1e0b2f11/redirect"
    return (url + "?pad=" + "x" * n)[:n] if n > len(url) else url[: n - 9] + "/redirect"


def same_url(url: str) -> str:
    """The URL as the QR carries it: scheme and host upper-cased (case-insensitive), path as is."""
    scheme, rest = url.split("://", 1)
    host, slash, path = rest.partition("/")
    return f"{scheme.upper()}://{host.upper()}{slash}{path}"


def test_the_path_keeps_its_case():
    text = render(BASE + "AbC-check/redirect", 80, 24, unicode=True)
    assert decode(text, unicode=True) == [
        "HTTPS://EU.API.IDLAYR.COM/phone_check/v0.2/checks/AbC-check/redirect"
    ]


def light_pixels(text: str, unicode: bool) -> list[list[bool]]:
    """What the terminal shows, back as modules (True = light)."""
    if not unicode:
        return [[row[i : i + 2] == "##" for i in range(0, len(row), 2)] for row in text.splitlines()]
    pixels = []
    for row in text.splitlines():
        pixels.append([HALVES[c][0] for c in row])
        pixels.append([HALVES[c][1] for c in row])
    return pixels


def decode(text: str, unicode: bool, scale: int = 4, margin: int = 4) -> list[str]:
    modules = light_pixels(text, unicode)
    width = len(modules[0]) + 2 * margin
    height = len(modules) + 2 * margin
    image = bytearray(b"\xff" * (width * scale * height * scale))
    for y, row in enumerate(modules):
        for x, light in enumerate(row):
            if not light:
                for dy in range(scale):
                    start = ((y + margin) * scale + dy) * width * scale + (x + margin) * scale
                    image[start : start + scale] = b"\x00" * scale
    view = memoryview(image).cast("B", shape=[height * scale, width * scale])
    return [result.text for result in zxingcpp.read_barcodes(view)]


@pytest.mark.parametrize("length", [60, 100, 160])
def test_half_blocks_fit_80x24_and_decode(length):
    url = url_of_length(length)
    assert len(url) == length
    text = render(url, 80, 24, unicode=True)
    assert text is not None
    lines = text.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert decode(text, unicode=True) == [same_url(url)]


def test_a_typical_check_url_leaves_room_for_the_shims_text():
    url = url_of_length(92)
    reserved = rows_reserved(url, None, 80)
    assert reserved == 4  # header, URL (wrapped to 2 rows), countdown
    text = render(url, 80, 24, unicode=True, reserved=reserved)
    assert len(text.splitlines()) + reserved <= 24


def test_with_a_number_to_pick_the_qr_alone_fills_80x24():
    url = url_of_length(92)
    reserved = rows_reserved(url, "37", 80)
    text = render(url, 80, 24, unicode=True, reserved=reserved)
    assert len(text.splitlines()) + reserved > 24 >= len(text.splitlines())
    assert decode(text, unicode=True) == [same_url(url)]


def test_ascii_rendering_decodes_where_it_fits():
    url = url_of_length(100)
    text = render(url, 120, 60, unicode=False)
    assert set(text) <= {"#", " ", "\n"}
    assert decode(text, unicode=False) == [same_url(url)]


def test_ascii_does_not_fit_80x24_so_the_url_alone_is_shown():
    assert render(url_of_length(100), 80, 24, unicode=False) is None


def test_a_40x12_terminal_gets_the_url_only_fallback():
    assert render(url_of_length(60), 40, 12, unicode=True) is None
