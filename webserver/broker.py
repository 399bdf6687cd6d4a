"""The Unix-socket broker: knows the caller and its SSH connection by the kernel, keeps what is
per connection (reuse, one answer in auth-time mode), and asks its gatekeeper for the rest."""

import logging
import os
import pwd
import socket
import socketserver
import time

from sshshim.protocol import (
    EVENT_VERDICT,
    FIRST_LINE_TIMEOUT,
    OP_LOGIN,
    OP_PAM_LOGIN,
    OP_VERIFY,
    LineReader,
    ProtocolError,
    peer_credentials,
)

from . import connection as connections
from . import pam_login, reasons
from .audit import SUPPRESSED, Audit, Decision
from .config import Settings
from .flow import send
from .logins import Caller, Verdict, deny
from .policy import (
    DENIAL_BURST,
    Approvals,
    ConnectionAddresses,
    Denials,
    OneAnswerPerConnection,
    Waiting,
)
from .registry import E164_DIGITS, USERNAME

log = logging.getLogger("ssh-auth.broker")

HOUSEKEEPING_EVERY = 10.0  # pruning of per-login state, summaries of refused floods
LOCAL = "local"  # the address of a caller outside any SSH connection
# Waiting at once: connections that have not sent their line yet, per uid; logins per
# (uid, SSH connection) and per (uid, client address), so one address cannot crowd out another;
# and in total.
LIMITS = {"unsent": 8, "connection": 3, "address": 3, "total": 512}


class Broker:
    """The socket, and one login's flow from its line to its verdict."""

    def __init__(self, settings: Settings, audit: Audit, gatekeeper):
        """gatekeeper: who needs a check and runs it (LocalGatekeeper, or a fleet's agent)."""
        self.settings, self.audit, self.gatekeeper = settings, audit, gatekeeper
        self.denials = Denials()
        self.approvals = Approvals()
        self.addresses = ConnectionAddresses()
        self.answered = OneAnswerPerConnection()
        self.waiting = Waiting(LIMITS)
        self._housekept = time.monotonic()
        self._stopping = False
        self._server: socketserver.UnixStreamServer | None = None

    # --- the socket -----------------------------------------------------------------------

    def bind(self) -> None:
        """Create the listening socket with its final mode 0666 (every login user may connect)."""
        path = self.settings.socket
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)  # a stale socket from a previous run
        broker = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                broker.handle_connection(self.request)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True
            request_queue_size = 4096  # a full queue makes a connect fail at once (EAGAIN)

            def server_bind(self):
                old = os.umask(0o111)  # bound before any other thread starts: nothing races
                try:
                    super().server_bind()
                finally:
                    os.umask(old)

            def service_actions(self):
                broker.housekeeping()

        self._server = Server(path, Handler)

    def serve_forever(self) -> None:
        """Serve logins on the bound socket until shutdown(); if it ever fails, end the process.

        A dead broker behind a live webhook would deny every login while /healthz says ok and
        systemd sees nothing wrong: better to exit and be restarted.
        """
        if self._server is None:
            self.bind()
        try:
            self._server.serve_forever(poll_interval=0.5)
        except BaseException:
            log.exception("the broker failed")
        finally:
            if not self._stopping:
                log.critical("the broker stopped: exiting so that the service is restarted")
                logging.shutdown()
                os._exit(1)

    def shutdown(self) -> None:
        """Stop accepting logins."""
        self._stopping = True
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        self._summarise(final=True)

    def housekeeping(self) -> None:
        """Prune every per-login store, and log what floods were refused without a line each."""
        if time.monotonic() - self._housekept < HOUSEKEEPING_EVERY:
            return
        self._housekept = time.monotonic()
        try:
            for store in (self.denials, self.approvals, self.addresses, self.answered):
                store.prune()
            self.gatekeeper.prune()
            self._summarise()
        except Exception:  # never let housekeeping take the socket's loop down with it
            log.exception("housekeeping failed")

    def _summarise(self, final: bool = False) -> None:
        for (uid, address), count, seconds in self.denials.summaries(final):
            reason = f"denied {count} more times, not logged one by one (over {DENIAL_BURST} at once)"
            self.audit.record(Decision(_user_name(uid), uid, address, None, SUPPRESSED, reason, seconds))

    def handle_connection(self, sock: socket.socket) -> None:
        """One shim connection, from its login line to its verdict."""
        started = time.monotonic()
        accepted = connections.boot_ticks()
        pid, uid, _ = peer_credentials(sock)
        if not self.waiting.admit({"total": None}):
            return self._send_verdict(sock, deny(reasons.TOO_MANY_WAITING))
        try:
            request = self._read_login(sock, uid)
            if request is not None:
                self._serve_login(sock, pid, uid, request, started, accepted)
        except Exception:
            if self.denials.loggable((uid, LOCAL)):  # a bug one caller can trigger: not a flood
                log.exception("login from uid %d failed", uid)
            self._send_verdict(sock, deny(reasons.INTERNAL, "error"))
        finally:
            self.waiting.release({"total": None})

    def _read_login(self, sock: socket.socket, uid: int) -> dict | None:
        """The caller's login line, within FIRST_LINE_TIMEOUT in total (not per read)."""
        if not self.waiting.admit({"unsent": uid}):
            if self.denials.loggable((uid, LOCAL)):
                log.warning("uid %d holds too many connections without a login line", uid)
            self._send_verdict(sock, deny(reasons.TOO_MANY_WAITING))
            return None
        try:
            return LineReader(sock).read_message(time.monotonic() + FIRST_LINE_TIMEOUT)
        except (OSError, ProtocolError) as error:
            if self.denials.loggable((uid, LOCAL)):
                log.warning("uid %d sent no valid login line: %s", uid, error)
            return None
        finally:
            self.waiting.release({"unsent": uid})

    # --- one login ------------------------------------------------------------------------

    def _serve_login(self, sock, pid, uid, request: dict, started: float, accepted: int) -> None:
        if request.get("op") == OP_PAM_LOGIN:
            caller, refusal = self._identify_pam(pid, uid, request)
        else:
            caller, refusal = self._identify(pid, uid, request)
        if refusal is None and not connections.started_by(pid, accepted):
            # SECURITY: the peer's pid now names a process that started after it connected: the
            # peer is gone and its pid reused, so what /proc said was about someone else.
            caller, refusal = None, deny(reasons.NOT_SSH)
        # The account logging in: the peer's own, or (PAM module, as root) the one sshd names.
        uid = caller.uid if caller else uid
        user = caller.user if caller else _user_name(uid)
        address = caller.address if caller else LOCAL
        check_id, verdict = None, refusal
        if verdict is None:
            keys = {"address": (uid, address)}
            if caller.connection:
                keys["connection"] = (uid, caller.connection)
            if not self.waiting.admit(keys):
                verdict = deny(reasons.TOO_MANY_WAITING)
            else:
                try:
                    check_id, verdict = self._decide(sock, caller)
                finally:
                    self.waiting.release(keys)
        if verdict.outcome == "allowed" and caller.connection and request["op"] == OP_LOGIN:
            if self.settings.connection_reuse_seconds:
                self.approvals.remember(uid, caller.connection, self.settings.connection_reuse_seconds)
        # A denial without a check costs the caller nothing: a flood of them is summarised.
        if not verdict.allow and check_id is None and not self.denials.loggable((uid, address)):
            return self._send_verdict(sock, verdict)
        self._finish(sock, user, uid, address, check_id, started, verdict)

    def _identify(self, pid: int, uid: int, request: dict) -> tuple[Caller | None, Verdict | None]:
        """The caller as the kernel knows it, or the verdict refusing it (nothing logged yet)."""
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return None, deny(reasons.UNKNOWN_UID)
        if not _valid_request(request):
            return None, deny(reasons.MALFORMED)
        command = request.get("command")  # shown on the phone exactly, never cut or cleaned
        if request["op"] == OP_VERIFY:
            # Root asks for a check on a number before registering it (ssh-auth register-user).
            if uid != 0:
                return None, deny(reasons.MALFORMED)
            return Caller(uid, entry.pw_gid, entry.pw_name, None, LOCAL, command, request), None
        connection = connections.of_process(pid, uid)
        if connection is None:
            return None, deny(reasons.NOT_SSH)
        address = connections.client_address(request.get("connection"))
        if address is None:
            return None, deny(reasons.MALFORMED)
        bound = self.addresses.bind(connection, address)
        caller = Caller(uid, entry.pw_gid, entry.pw_name, connection, bound, command, request)
        if bound != address:  # logged and limited under the address sshd gave, not the claim
            return caller, deny(reasons.ADDRESS_CHANGED)
        return caller, None

    def _identify_pam(self, pid: int, uid: int, request: dict):
        """The user the PAM module authenticates, as sshd (root) names it; or the refusal."""
        if uid != 0 or not pam_login.valid_request(request):
            return None, deny(reasons.MALFORMED)
        connection = connections.of_pam_process(pid)
        if connection is None:
            return None, deny(reasons.NOT_SSH)
        try:
            entry = pwd.getpwnam(request["user"]) if USERNAME.fullmatch(request["user"]) else None
        except KeyError:
            entry = None
        address = pam_login.client_address(request["rhost"])
        if entry is None or address is None:
            return None, deny(reasons.UNKNOWN_UID if address else reasons.MALFORMED)
        bound = self.addresses.bind(connection, address)
        key = pam_login.key_fingerprint(request["auth_info"])
        caller = Caller(entry.pw_uid, entry.pw_gid, entry.pw_name, connection, bound, None, request, key)
        if bound != address:
            return caller, deny(reasons.ADDRESS_CHANGED)
        return caller, None

    def _decide(self, sock, caller: Caller) -> tuple[str | None, Verdict]:
        """(check_id, verdict): by what this connection already had, else by the gatekeeper."""
        op = caller.request["op"]
        if op == OP_VERIFY:
            return self._verify_phone(sock, caller)
        if op == OP_PAM_LOGIN and not self.answered.first(caller.connection):
            # The client retries keyboard-interactive after a failure: one answer (and at most
            # one check) per connection, and no second line under the first one.
            return None, Verdict(False, "denied", reasons.RETRY_ON_CONNECTION, told=False)
        if op == OP_PAM_LOGIN and caller.uid == 0 and self.settings.pam_root == "deny":
            # sshd would refuse root after the phone approved (PermitRootLogin prohibit-password).
            return None, deny(reasons.ROOT_KEY_ONLY)
        if op == OP_LOGIN and self.approvals.reused(caller.uid, caller.connection):
            return None, Verdict(True, "reused", reasons.REUSED)
        return self.gatekeeper.decide(sock, caller)

    def _verify_phone(self, sock, caller: Caller) -> tuple[str | None, Verdict]:
        """The full phone flow on a number root is about to register."""
        who, phone = caller.request.get("user"), caller.request.get("phone")
        if not (isinstance(who, str) and USERNAME.fullmatch(who) and isinstance(phone, str)):
            return None, deny(reasons.MALFORMED)
        if not E164_DIGITS.fullmatch(phone):
            return None, deny(reasons.MALFORMED)
        shown = Caller(
            caller.uid, caller.gid, who, None, LOCAL, f"(register this phone for {who})", caller.request
        )
        check_id, verdict = self.gatekeeper.check(sock, shown, phone)
        if verdict.outcome == "failsafe":  # a login may be let in so; a phone is never verified so
            return check_id, deny(f"phone verification for {who}: {reasons.NOT_VERIFIED}", "error")
        reason = f"phone verification for {who}: {verdict.reason}"
        return check_id, Verdict(verdict.outcome == "allowed", verdict.outcome, reason)

    def _finish(self, sock, user, uid, address, check_id, started, verdict: Verdict) -> None:
        """Log the decision once, then send the verdict (nothing opens without its audit line)."""
        self.audit.record(
            Decision(
                user, uid, address, check_id, verdict.outcome, verdict.reason, time.monotonic() - started
            ),
            central=verdict.central,
        )
        self._send_verdict(sock, verdict)

    def _send_verdict(self, sock: socket.socket, verdict: Verdict) -> None:
        reason = verdict.reason if verdict.told else ""
        send(sock, {"event": EVENT_VERDICT, "allow": verdict.allow, "reason": reason})


def _valid_request(request: dict) -> bool:
    """Types and bounds of the login line (its strings are bounded by the line's 64 KiB)."""

    def small_int(value):
        return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10000

    return (
        request.get("op") in (OP_LOGIN, OP_VERIFY)
        and isinstance(request.get("command"), str | None)
        and isinstance(request.get("connection"), str | None)
        and isinstance(request.get("tty"), bool)
        and isinstance(request.get("unicode"), bool)
        and small_int(request.get("columns"))
        and small_int(request.get("rows"))
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"
