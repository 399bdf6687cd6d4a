"""Where the shim's words go: the terminal, else stderr, never stdout (it would corrupt scp/rsync)."""

from __future__ import annotations

import os
import sys
import time

from .protocol import HEADER, clean, rows_of, text_below

PLAIN_STATUS_EVERY = 30  # seconds between "still waiting" lines when there is no tty


def _environment_as_sshd_set_it() -> dict[str, str]:
    # Under LANG=C, CPython coerces its own os.environ to LC_CTYPE=C.UTF-8 (PEP 538): read the
    # environment the process was started with instead.
    try:
        with open("/proc/self/environ", "rb") as handle:
            pairs = handle.read().split(b"\0")
    except OSError:
        return dict(os.environ)
    return dict(p.decode(errors="replace").partition("=")[::2] for p in pairs if b"=" in p)


def _speaks_utf8() -> bool:
    environment = _environment_as_sshd_set_it()
    if environment.get("TERM") == "dumb":  # no TERM at all is normal without a tty
        return False
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = environment.get(name)
        if value:
            return "utf-8" in value.lower() or "utf8" in value.lower()
    return False


class Terminal:
    """The user's terminal when the session has one, else stderr."""

    def __init__(self, stream, is_tty: bool, columns: int = 80, rows: int = 24, unicode: bool = False):
        self.stream, self.is_tty = stream, is_tty
        self.columns, self.rows, self.unicode = columns, rows, unicode
        self._in_place = False
        self._last_plain = 0.0
        self.show_countdown = True

    @classmethod
    def open(cls) -> Terminal:
        """The controlling tty for interactive sessions; stderr for scp, sftp, rsync, git."""
        if os.isatty(0):
            try:
                fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
                size = os.get_terminal_size(fd)
                stream = os.fdopen(fd, "w", encoding="utf-8", errors="replace")
                # A pty nobody sized (ssh -tt from a script) reports 0 x 0.
                return cls(stream, True, size.columns or 80, size.lines or 24, _speaks_utf8())
            except OSError:
                pass
        return cls(sys.stderr, False, 80, 24, _speaks_utf8())

    def line(self, text: str) -> None:
        """One line for the user (control characters removed)."""
        self._end_in_place()
        self._write(clean(text) + "\n")

    def show_challenge(self, challenge: dict) -> None:
        """The QR code, the URL as text under it, the number to pick, then the countdown.

        When the QR fills the screen the URL goes above it and no countdown follows (a line
        under a full-screen QR would scroll its top away).
        """
        qr = str(challenge.get("qr") or "").splitlines()
        below = text_below(challenge["check_url"], challenge.get("number"))
        self.line(HEADER)
        fits_below = rows_of(qr + below, self.columns) + 1 <= self.rows
        for row in qr + below if fits_below else below + qr:
            self.line(row)
        self.show_countdown = fits_below or not self.is_tty

    def countdown(self, seconds_left: float) -> None:
        """A one-line countdown, updated in place on a tty; an occasional line otherwise."""
        if not self.show_countdown:
            return
        left = max(0, int(seconds_left))
        text = f"Waiting for your phone: {left // 60}:{left % 60:02d} left"
        if self.is_tty:
            self._write("\r\x1b[K" + text)
            self._in_place = True
        elif time.monotonic() - self._last_plain >= PLAIN_STATUS_EVERY:
            self._last_plain = time.monotonic()
            self._write(f"ssh-auth: {text}\n")

    def _end_in_place(self) -> None:
        if self._in_place:
            self._write("\r\x1b[K")
            self._in_place = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the terminal went away; the verdict still decides
