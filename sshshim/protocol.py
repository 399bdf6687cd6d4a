"""THE shim <-> service wire protocol (DESIGN §4): JSON objects, one per line, bounded. Stdlib only."""

import json
import socket
import struct

VERSION = 1
MAX_LINE = 64 * 1024
DEFAULT_SOCKET = "/run/ssh-auth/ssh-auth.sock"
SERVICE_USER = "ssh-auth"

OP_LOGIN = "login"
OP_VERIFY = "verify"  # root only: check a phone before `ssh-auth register-user` saves it
EVENT_CHALLENGE = "challenge"
EVENT_STATUS = "status"
EVENT_VERDICT = "verdict"

FIRST_REPLY_TIMEOUT = 10.0  # the shim's wait for the service's first line
VERDICT_GRACE = 10.0  # the shim waits until expires_at + this for the verdict
FIRST_LINE_TIMEOUT = 5.0  # the service's wait for the shim's login line


class ProtocolError(Exception):
    """The peer broke the protocol: closed, bad JSON, over-long line, wrong version or shape."""


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
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    if message.get("v") != VERSION:
        raise ProtocolError(f"unknown protocol version {message.get('v')!r}")
    return message


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket, as the kernel reports it."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class LineReader:
    """Reads bounded lines from a socket whose timeout the caller sets."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def read_message(self) -> dict:
        """The next message; socket.timeout if none yet, ProtocolError if the peer misbehaves."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ProtocolError("line too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ProtocolError("connection closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        if len(line) > MAX_LINE:
            raise ProtocolError("line too long")
        return decode(line)
