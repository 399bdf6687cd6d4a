"""THE shim <-> service wire protocol: JSON lines, bounded (docs/architecture.md). Stdlib only."""

from __future__ import annotations

import json
import socket
import struct
import time
import unicodedata

VERSION = 1
MAX_LINE = 64 * 1024
DEFAULT_SOCKET = "/run/ssh-auth/ssh-auth.sock"
SERVICE_USER = "ssh-auth"

OP_LOGIN = "login"
OP_VERIFY = "verify"  # root only: check a phone before `ssh-auth register-user` saves it
OP_PAM_LOGIN = "pam-login"  # root only: the PAM module, inside sshd's authentication
EVENT_CHALLENGE = "challenge"
EVENT_STATUS = "status"
EVENT_VERDICT = "verdict"

FIRST_REPLY_TIMEOUT = 10.0  # the shim's wait for the service's first line
VERDICT_GRACE = 10.0  # the shim waits until expires_at + this for the verdict
FIRST_LINE_TIMEOUT = 5.0  # the service's wait for the shim's login line: a total deadline

# Control characters, format characters (bidi overrides such as U+202E, zero-width marks),
# surrogates and line/paragraph separators: none of them may reach a terminal, a log or a page.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


# The text around the QR, shared so the service can leave it room when it sizes the QR.
HEADER = "ssh-auth: confirm this login with your phone (Wi-Fi off, mobile data on):"


class ProtocolError(Exception):
    """The peer broke the protocol: closed, bad JSON, over-long line, wrong version or shape."""


def clean(text) -> str:
    """Text from outside with control and format characters removed (newlines kept)."""
    return "".join(c for c in str(text) if c == "\n" or unicodedata.category(c) not in UNSAFE_CATEGORIES)


def text_below(check_url: str, number) -> list[str]:
    """The lines printed under the QR."""
    lines = [f"Or open on the phone: {clean(check_url)}"]
    if number:
        lines.append(f"When the phone asks, pick the number {clean(number)}.")
    return lines


def rows_of(lines: list[str], columns: int) -> int:
    """Terminal rows these lines take once wrapped."""
    return sum(max(1, -(-len(line) // max(1, columns))) for line in lines)


def rows_reserved(check_url: str, number, columns: int) -> int:
    """Rows the shim's text takes around the QR: header, URL, number and countdown lines."""
    return rows_of([HEADER, *text_below(check_url, number)], columns) + 1


def encode(message: dict) -> bytes:
    """One message as a line, with the version added."""
    line = json.dumps({"v": VERSION, **message}, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise ProtocolError("message too long")
    return line


def decode(line: bytes) -> dict:
    """Parse one line; anything but a version-1 JSON object is a ProtocolError."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("not JSON") from None
    except RecursionError:  # e.g. 60,000 nested brackets: still just bad input
        raise ProtocolError("JSON nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    if message.get("v") != VERSION:
        raise ProtocolError(f"unknown protocol version {message.get('v')!r}")
    return message


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket, as the kernel reports it."""
    return peer_credentials(sock)[1]


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected the other end, as the kernel reports it."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)


class LineReader:
    """Reads bounded lines from a socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def buffered(self) -> dict | None:
        """The next complete message already received, or None."""
        if b"\n" not in self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        if len(line) > MAX_LINE:
            raise ProtocolError("line too long")
        return decode(line)

    def feed(self) -> None:
        """Receive what the peer sent (one recv); ProtocolError when it closed or sends too much."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ProtocolError("connection closed")
        self.buffer += chunk
        if b"\n" not in self.buffer and len(self.buffer) > MAX_LINE:
            raise ProtocolError("line too long")

    def read_message(self, deadline: float | None = None) -> dict:
        """The next message; socket.timeout once `deadline` (time.monotonic) has passed."""
        while True:
            message = self.buffered()
            if message is not None:
                return message
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete line in time")
                self.sock.settimeout(left)  # the whole line, not each read, is bounded
            self.feed()
