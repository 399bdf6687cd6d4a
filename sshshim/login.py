"""One login: connect, send, show the challenge, wait for the verdict. Every other path denies."""

from __future__ import annotations

import os
import pwd
import select
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
    clean,
    encode,
    peer_uid,
)
from .terminal import Terminal

TRAPPED = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT)
# Without a pty sshd sends no SIGHUP when the client goes: the session's stdout and stderr
# pipes report POLLERR/POLLHUP instead. (stdin's EOF is no sign: `ssh host cmd </dev/null`.)
CLIENT_STREAMS = (1, 2)
HANGUP = select.POLLERR | select.POLLHUP | select.POLLNVAL
CLIENT_GONE = "the SSH client went away. Access denied."
CONNECT_RETRY = 0.02  # seconds between tries while the service's socket queue is full


class Denied(Exception):
    """Ends the login; the message is the one line the user sees."""


def run(socket_path: str) -> int:
    """Gate one login: exec the shell only on the service's allow; otherwise return 1."""
    terminal = Terminal.open()
    for number in TRAPPED:
        signal.signal(number, _interrupted)
    try:
        command = _wait_for_allow(socket_path, terminal)
        if client_gone():  # SECURITY: no verdict may run a command for a client that has left
            raise Denied(CLIENT_GONE)
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


def client_gone() -> bool:
    """Whether sshd has closed the session's stdout or stderr (the client disconnected)."""
    poller = select.poll()
    for fd in CLIENT_STREAMS:
        poller.register(fd, 0)  # no events asked for: only hang-ups and errors are reported
    return any(event & HANGUP for _, event in poller.poll(0))


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
        waiting = _Wait(sock, terminal)
        while True:
            message = waiting.next_message()
            event = message.get("event")
            if event == EVENT_VERDICT:
                reason = clean(message.get("reason") or "")
                if message.get("allow") is True:
                    terminal.line(f"ssh-auth: {reason or 'approved.'}")
                    return
                raise Denied(reason or "Access denied.")
            if event == EVENT_CHALLENGE and waiting.expires_at is None:
                waiting.expires_at = _challenge_deadline(message)
                terminal.show_challenge(message)
                waiting.deadline = waiting.expires_at + VERDICT_GRACE
            elif event != EVENT_STATUS:
                raise Denied("the ssh-auth service sent a malformed answer. Access denied.")


def _connect(socket_path: str) -> socket.socket:
    deadline = time.monotonic() + FIRST_REPLY_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(FIRST_REPLY_TIMEOUT)
        try:
            sock.connect(socket_path)
            break
        except BlockingIOError:  # the service's queue is full (a flood): wait for room
            sock.close()
            if time.monotonic() >= deadline:
                raise Denied("the ssh-auth service is too busy to answer. Access denied.") from None
            time.sleep(CONNECT_RETRY)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise Denied("the ssh-auth service is not running. Access denied.") from None
        except OSError as error:
            sock.close()
            raise Denied(
                f"cannot reach the ssh-auth service ({error.strerror}). Access denied."
            ) from None
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
    valid_time = isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool)
    if not isinstance(message.get("check_url"), str) or not valid_time:
        raise Denied("the ssh-auth service sent a malformed challenge. Access denied.")
    return float(expires_at)


class _Wait:
    """Waits on the service's socket and on the client's streams, ticking the countdown."""

    def __init__(self, sock: socket.socket, terminal: Terminal):
        self.sock, self.terminal = sock, terminal
        self.reader = LineReader(sock)
        self.deadline = time.time() + FIRST_REPLY_TIMEOUT
        self.expires_at: float | None = None
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        for fd in CLIENT_STREAMS:
            self.poller.register(fd, 0)
        self._next_tick = time.monotonic() + 1

    def next_message(self) -> dict:
        """The next message; Denied once the deadline passes or the client has gone."""
        while True:
            try:
                message = self.reader.buffered()
            except ProtocolError as error:
                raise Denied(f"the ssh-auth service failed ({error}). Access denied.") from None
            if message is not None:
                return message
            left = self.deadline - time.time()
            if left <= 0:
                if self.expires_at is None:
                    raise Denied("the ssh-auth service did not answer. Access denied.")
                raise Denied("no verdict from the ssh-auth service in time. Access denied.")
            wait = min(left, max(0.0, self._next_tick - time.monotonic()))
            for fd, event in self.poller.poll(wait * 1000):
                if fd != self.sock.fileno() and event & HANGUP:
                    raise Denied(CLIENT_GONE)
                if fd == self.sock.fileno():
                    self._receive()
            if time.monotonic() >= self._next_tick:
                self._next_tick = time.monotonic() + 1
                if self.expires_at is not None:
                    self.terminal.countdown(self.expires_at - time.time())

    def _receive(self) -> None:
        try:
            self.reader.feed()
        except ProtocolError as error:
            raise Denied(f"the ssh-auth service failed ({error}). Access denied.") from None
        except OSError as error:
            raise Denied(f"lost the ssh-auth service ({error.strerror}). Access denied.") from None
