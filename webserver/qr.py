"""Renders the check URL as a QR code that fits the shim's terminal (half-blocks, or ASCII)."""

from urllib.parse import urlsplit

import qrcode
from qrcode.constants import ERROR_CORRECT_L
from qrcode.util import MODE_8BIT_BYTE, MODE_ALPHA_NUM, QRData

ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
UPPER, LOWER, FULL = "\u2580", "\u2584", "\u2588"


def _segments(url: str) -> list:
    """Scheme and host are case-insensitive: upper-cased they fit the denser alphanumeric mode."""
    parts = urlsplit(url)
    head = f"{parts.scheme}://{parts.netloc}".upper()
    rest = url[len(head) :]
    if not rest or any(c not in ALPHANUMERIC for c in head):
        return [QRData(url.encode(), mode=MODE_8BIT_BYTE)]
    return [QRData(head.encode(), mode=MODE_ALPHA_NUM), QRData(rest.encode(), mode=MODE_8BIT_BYTE)]


def _matrix(url: str) -> list[list[bool]]:
    """The code's modules (True = dark), without a quiet zone: encoded once per render."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_L, border=0)
    for segment in _segments(url):
        code.add_data(segment)
    code.make(fit=True)
    return code.get_matrix()


def _bordered(matrix: list[list[bool]], border: int) -> list[list[bool]]:
    """The matrix inside a light quiet zone `border` modules wide."""
    width = len(matrix[0]) + 2 * border
    blank = [[False] * width for _ in range(border)]
    return blank + [[False] * border + row + [False] * border for row in matrix] + blank


def render(url: str, columns: int, rows: int, unicode: bool, reserved: int = 0) -> str | None:
    """The QR as text that fits columns x rows, or None when even the smallest cannot fit.

    Prefers a 2-module quiet zone and `reserved` rows left for the shim's text; then gives the
    text rows up (the shim then prints the URL above a QR that fills the screen).
    """
    draw = _half_blocks if unicode else _ascii
    matrix = _matrix(url)
    for border, text_rows in ((2, reserved), (1, reserved), (2, 0), (1, 0)):
        lines = draw(_bordered(matrix, border)).splitlines()
        if len(lines) + text_rows <= rows and max(map(len, lines)) <= columns:
            return "\n".join(lines)
    return None


def _half_blocks(matrix: list[list[bool]]) -> str:
    """Two modules per character cell; light modules drawn, dark left blank (for dark terminals)."""
    if len(matrix) % 2:
        matrix = [*matrix, [False] * len(matrix[0])]
    glyph = {(False, False): FULL, (False, True): UPPER, (True, False): LOWER, (True, True): " "}
    return "\n".join(
        "".join(glyph[(top, bottom)] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(matrix[::2], matrix[1::2], strict=True)
    )


def _ascii(matrix: list[list[bool]]) -> str:
    """Two characters per module, one line per row: for TERM=dumb or a non-UTF-8 locale."""
    return "\n".join("".join("  " if dark else "##" for dark in row) for row in matrix)
