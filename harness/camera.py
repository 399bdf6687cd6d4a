"""What a phone's camera reads off the terminal: the QR's text decoded back to its URL."""

import zxingcpp

from webserver.qr import FULL, LOWER, UPPER

# (top is light, bottom is light) for each half-block character: light modules are drawn.
HALVES = {FULL: (True, True), UPPER: (True, False), LOWER: (False, True), " ": (False, False)}


def same_url(url: str) -> str:
    """The URL as the QR carries it: scheme and host upper-cased (case-insensitive), path as is."""
    scheme, rest = url.split("://", 1)
    host, slash, path = rest.partition("/")
    return f"{scheme.upper()}://{host.upper()}{slash}{path}"


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
    """Every QR code in the terminal text, as zxing reads it from a rendered image."""
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
