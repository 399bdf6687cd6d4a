"""Where the shim's words go: the terminal, else stderr, never stdout (it would corrupt scp/rsync)."""

import os
import re
import sys
import time

CONTROL_CHARACTERS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
PLAIN_STATUS_EVERY = 30  # seconds between "still waiting" lines when there is no tty


def clean(text) -> str:
    """Text from outside with control characters (escape sequences, CR, BEL...) removed."""
    return CONTROL_CHARACTERS.sub("", str(text))


def _speaks_utf8() -> bool:
    if os.environ.get("TERM") == "dumb":  # no TERM at all is normal without a tty
        return False
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = os.environ.get(name)
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

    @classmethod
    def open(cls) -> "Terminal":
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
        """The QR code, the URL as text, the number to pick, and how to scan."""
        self.line("ssh-auth: confirm this login with your phone.")
        self.line("Turn off Wi-Fi on the phone (the check needs mobile data), then scan:")
        for row in str(challenge.get("qr") or "").splitlines():
            self.line(row)
        self.line(f"Or open on the phone: {challenge['check_url']}")
        if challenge.get("number"):
            self.line(f"When the phone asks, pick the number {challenge['number']}.")

    def countdown(self, seconds_left: float) -> None:
        """A one-line countdown, updated in place on a tty; an occasional line otherwise."""
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
