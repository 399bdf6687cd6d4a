"""One login: connect, send, show the challenge, wait for the verdict. Every other path denies."""

import os
import pwd
import signal
import socket
import time

from . import shell
from .protocol import (
    EVENT_CHALLENGE,
    EVENT_STATUS,
    EVENT_VERDICT,
    FIRST_REPLY_TIMEOUT,
    OP_LOGIN,
    SERVICE_USER,
    VERDICT_GRACE,
    LineReader,
    ProtocolError,
    encode,
    peer_uid,
)
from .terminal import Terminal, clean

TRAPPED = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT)


class Denied(Exception):
    """Ends the login; the message is the one line the user sees."""


def run(socket_path: str) -> int:
    """Gate one login: exec the shell only on the service's allow; otherwise return 1."""
    terminal = Terminal.open()
    for number in TRAPPED:
        signal.signal(number, _interrupted)
    try:
        command = _wait_for_allow(socket_path, terminal)
        shell.exec_shell(command)  # returns only if the exec failed
        terminal.line("ssh-auth: your shell could not be started. Access denied.")
    except Denied as denied:
        terminal.line(f"ssh-auth: {denied}")
    except Exception:  # noqa: BLE001 - any surprise is a denial, never a traceback
        terminal.line("ssh-auth: internal error. Access denied.")
    return 1


def _interrupted(number, frame):
    for each in TRAPPED:
        signal.signal(each, signal.SIG_IGN)  # one line, then out: no second interruption
    raise Denied(f"interrupted ({signal.Signals(number).name}). Access denied.")


def _wait_for_allow(socket_path: str, terminal: Terminal) -> str | None:
    """The command to exec once the service allows; Denied for anything else."""
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    ask(
        socket_path,
        terminal,
        {"op": OP_LOGIN, "command": command, "connection": os.environ.get("SSH_CONNECTION")},
    )
    return command


def ask(socket_path: str, terminal: Terminal, request: dict) -> None:
    """Send one request, show its challenge, and return on allow; Denied for anything else."""
    with _connect(socket_path) as sock:
        login = {
            **request,
            "tty": terminal.is_tty,
            "columns": terminal.columns,
            "rows": terminal.rows,
            "unicode": terminal.unicode,
        }
        try:
            sock.sendall(encode(login))
        except OSError:
            pass  # the service may have answered and closed already: read what it said
        reader = LineReader(sock)
        deadline = time.time() + FIRST_REPLY_TIMEOUT
        expires_at = None
        while True:
            message = _next_message(reader, sock, deadline, expires_at, terminal)
            event = message.get("event")
            if event == EVENT_VERDICT:
                reason = clean(message.get("reason") or "")
                if message.get("allow") is True:
                    terminal.line(f"ssh-auth: {reason or 'approved.'}")
                    return
                raise Denied(reason or "Access denied.")
            if event == EVENT_CHALLENGE and expires_at is None:
                expires_at = _challenge_deadline(message)
                terminal.show_challenge(message)
                deadline = expires_at + VERDICT_GRACE
            elif event != EVENT_STATUS:
                raise Denied("the ssh-auth service sent a malformed answer. Access denied.")


def _connect(socket_path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(FIRST_REPLY_TIMEOUT)
    try:
        sock.connect(socket_path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise Denied("the ssh-auth service is not running. Access denied.") from None
    except OSError as error:
        sock.close()
        raise Denied(f"cannot reach the ssh-auth service ({error.strerror}). Access denied.") from None
    uid = peer_uid(sock)
    # SECURITY: only root or the service account may decide; anyone else could answer "allow".
    if uid not in _trusted_uids():
        sock.close()
        raise Denied(
            f"the ssh-auth socket is served by an untrusted process (uid {uid}). Access denied."
        )
    return sock


def _trusted_uids() -> set[int]:
    try:
        return {0, pwd.getpwnam(SERVICE_USER).pw_uid}
    except KeyError:
        return {0}


def _challenge_deadline(message: dict) -> float:
    expires_at = message.get("expires_at")
    if not isinstance(message.get("check_url"), str) or not isinstance(expires_at, int | float):
        raise Denied("the ssh-auth service sent a malformed challenge. Access denied.")
    return float(expires_at)


def _next_message(reader, sock, deadline, expires_at, terminal) -> dict:
    """The next message, ticking the countdown each second; Denied once the deadline passes."""
    while True:
        left = deadline - time.time()
        if left <= 0:
            if expires_at is None:
                raise Denied("the ssh-auth service did not answer. Access denied.")
            raise Denied("no verdict from the ssh-auth service in time. Access denied.")
        sock.settimeout(min(1.0, left))
        try:
            return reader.read_message()
        except TimeoutError:
            if expires_at is not None:
                terminal.countdown(expires_at - time.time())
        except ProtocolError as error:
            raise Denied(f"the ssh-auth service failed ({error}). Access denied.") from None
        except OSError as error:
            raise Denied(f"lost the ssh-auth service ({error.strerror}). Access denied.") from None
