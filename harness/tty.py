"""A client program on a terminal of its own, as a person runs it: it reads its prompts from
/dev/tty, the test reads the screen and presses keys."""

import fcntl
import os
import pty
import struct
import termios
import threading

from .deployment import Session


class TtyClient(Session):
    """A Session whose controlling terminal is a pty (80x24 unless told): screen and keyboard."""

    def __init__(self, argv: list[str], columns: int = 80, rows: int = 24, **popen):
        # The test holds the terminal's far end open for the client's whole life: the client opens
        # /dev/tty only now and then, and a terminal nobody has open reads as ended (EIO).
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        terminal = os.ttyname(self.slave)
        self.screen = bytearray()

        def take_terminal():  # in the child, a session leader already: the pty becomes its terminal
            os.close(os.open(terminal, os.O_RDWR))

        super().__init__(argv, preexec_fn=take_terminal, **popen)
        self._screen_thread = threading.Thread(target=self._read_screen, daemon=True)
        self._screen_thread.start()

    def _read_screen(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the last process holding the terminal has gone
                return
            if not chunk:
                return
            self.screen.extend(chunk)

    def text(self) -> str:
        """Everything the person has seen: the terminal, then stdout and stderr."""
        return bytes(self.screen).decode(errors="replace") + super().text()

    def screen_text(self) -> str:
        """What was written to the terminal itself (prompts, the QR)."""
        return bytes(self.screen).decode(errors="replace")

    def type(self, keys: str) -> None:
        """Type on the terminal's keyboard."""
        os.write(self.master, keys.encode())

    def press_enter(self) -> None:
        """Press Enter."""
        self.type("\r")

    def kill(self) -> None:
        """End the client, then close the terminal (which ends the screen's reader)."""
        super().kill()
        for fd in (self.slave, self.master):
            try:
                os.close(fd)
            except OSError:
                pass
        self._screen_thread.join(timeout=5)
