"""Renders the check URL as a QR code that fits the shim's terminal (half-blocks, or ASCII)."""

import qrcode
from qrcode.constants import ERROR_CORRECT_L

TEXT_LINES = 2  # the URL line and the countdown stay on screen under the QR
UPPER, LOWER, FULL = "\u2580", "\u2584", "\u2588"


def _matrix(url: str, border: int) -> list[list[bool]]:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_L, border=border)
    code.add_data(url)
    code.make(fit=True)
    return code.get_matrix()


def render(url: str, columns: int, rows: int, unicode: bool) -> str | None:
    """The QR as text that fits columns x rows, or None when even the smallest cannot fit."""
    for border in (2, 1):
        matrix = _matrix(url, border)
        text = _half_blocks(matrix) if unicode else _ascii(matrix)
        lines = text.splitlines()
        if len(lines) + TEXT_LINES <= rows and max(map(len, lines)) <= columns:
            return text
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
