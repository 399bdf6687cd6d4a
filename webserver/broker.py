"""The Unix-socket broker: knows the caller by the kernel, applies policy, runs its phone check."""

import grp
import logging
import os
import pwd
import secrets
import select
import socket
import socketserver
import time
from dataclasses import dataclass
from pathlib import Path

from sshshim.protocol import (
    EVENT_CHALLENGE,
    EVENT_STATUS,
    EVENT_VERDICT,
    FIRST_LINE_TIMEOUT,
    FIRST_REPLY_TIMEOUT,
    OP_LOGIN,
    OP_VERIFY,
    LineReader,
    ProtocolError,
    encode,
    peer_credentials,
)
from sshshim.terminal import rows_reserved

from . import connection as connections
from . import qr, reasons
from .audit import SUPPRESSED, Audit, Decision, clean
from .config import Settings
from .connection import SshConnection
from .logins import Login, PendingLogins, Verdict, deny, new_nonce
from .phonecheck import ApiUnreachable, PhoneCheckClient, PhoneCheckError
from .policy import (
    DENIAL_BURST,
    Approvals,
    CheckBudget,
    ConnectionAddresses,
    Denials,
    TrustedPlaces,
    Waiting,
    is_exempt,
    is_sftp_session,
)
from .registry import E164_DIGITS, USERNAME, Registry, RegistryUnavailable

log = logging.getLogger("ssh-auth.broker")

CREATE_BUDGET = FIRST_REPLY_TIMEOUT - 2  # token + create must end before the shim stops waiting
FIRST_POLL_DELAY = 10.0  # a phone that answers within this costs no GET at all
STATUS_EVERY = 10.0
HOUSEKEEPING_EVERY = 10.0  # pruning of per-login state, summaries of refused floods
MAX_COMMAND = 4096  # characters of a command the phone can show; a longer one is refused
NO_ROOM_FOR_QR = "(No room for a QR code in this terminal: open the URL below on the phone.)"
LOCAL = "local"  # the address of a caller outside any SSH connection
# Waiting at once: connections that have not sent their line yet, per uid; logins per
# (uid, SSH connection) and per (uid, client address), so one address cannot crowd out another;
# and in total.
LIMITS = {"unsent": 8, "connection": 3, "address": 3, "total": 512}


@dataclass(frozen=True)
class Caller:
    """Who asks: identity and connection from the kernel; terminal facts from the shim."""

    uid: int
    gid: int
    user: str
    connection: SshConnection | None
    address: str
    command: str | None
    request: dict

    def groups(self) -> list[str]:
        """The names of every group the user is in (gids without a name are skipped)."""
        names = []
        for gid in os.getgrouplist(self.user, self.gid):
            try:
                names.append(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return names


class Broker:
    """The socket, and one login's flow from its line to its verdict."""

    def __init__(
        self,
        settings: Settings,
        client: PhoneCheckClient,
        registry: Registry,
        audit: Audit,
        logins: PendingLogins,
        poll_only: bool = False,
    ):
        # poll_only: learn verdicts only from the GET every poll_interval, as the tutorial's
        # design does; used by the benchmarks to compare, never by the service itself.
        self.poll_only = poll_only
        self.settings, self.client, self.registry, self.audit = settings, client, registry, audit
        self.logins = logins
        self.denials = Denials()
        self.budget = CheckBudget(settings.max_checks_per_user, settings.max_checks_per_minute)
        self.approvals = Approvals()
        self.trusted = TrustedPlaces()
        self.addresses = ConnectionAddresses()
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
            for store in (self.denials, self.budget, self.approvals, self.addresses, self.trusted):
                store.prune()
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
        pid, uid, _ = peer_credentials(sock)
        if not self.waiting.admit({"total": None}):
            return self._send_verdict(sock, deny(reasons.TOO_MANY_WAITING))
        try:
            request = self._read_login(sock, uid)
            if request is not None:
                self._serve_login(sock, pid, uid, request, started)
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

    def _serve_login(self, sock, pid: int, uid: int, request: dict, started: float) -> None:
        caller, refusal = self._identify(pid, uid, request)
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
        if verdict.outcome == "allowed" and caller.connection:
            self.trusted.remember(uid, address)
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

    def _decide(self, sock, caller: Caller) -> tuple[str | None, Verdict]:
        """(check_id, verdict): by policy alone, or by the phone check it runs."""
        if caller.request["op"] == OP_VERIFY:
            return self._verify_phone(sock, caller)
        settings = self.settings
        if is_exempt(caller.user, caller.groups(), settings.exempt_users, settings.exempt_groups):
            return None, Verdict(True, "exempt", reasons.EXEMPT)
        try:
            registration = self.registry.lookup(caller.user)
        except RegistryUnavailable:
            return None, deny(reasons.NO_REGISTRY, "error")
        if registration.allow_once_until:
            when = time.strftime("%H:%M", time.localtime(registration.allow_once_until))
            return None, Verdict(True, "exempt", reasons.ALLOW_ONCE.format(until=when))
        if self.approvals.reused(caller.uid, caller.connection):
            return None, Verdict(True, "reused", reasons.REUSED)
        if is_sftp_session(caller.command, caller.request["tty"]):
            # Nobody could see its QR: refuse at once rather than hang until the deadline.
            return None, deny(reasons.SFTP_NEEDS_MASTER)
        if registration.malformed:
            return None, deny(reasons.BAD_REGISTRATION)
        if registration.phone is None:
            if settings.unregistered == "allow":
                return None, Verdict(True, "exempt", reasons.UNREGISTERED_ALLOWED)
            return None, deny(reasons.UNREGISTERED)
        return self._check(sock, caller, registration.phone)

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
        check_id, verdict = self._check(sock, shown, phone)
        reason = f"phone verification for {who}: {verdict.reason}"
        return check_id, Verdict(verdict.allow, verdict.outcome, reason)

    def _check(self, sock, caller: Caller, phone: str) -> tuple[str | None, Verdict]:
        """Create the check, show it, wait for its verdict."""
        if not self.settings.public_url:
            return None, deny(reasons.NO_PUBLIC_URL, "error")
        if caller.command and len(caller.command) > MAX_COMMAND:
            # SECURITY: the person approves what the phone shows: nothing may run unseen.
            line = reasons.COMMAND_TOO_LONG.format(length=len(caller.command), limit=MAX_COMMAND)
            return None, deny(line)
        over = self.budget.take(
            caller.uid, caller.address, self.trusted.trusted(caller.uid, caller.address)
        )
        if over:
            which, seconds = over
            line = reasons.TOO_MANY_ATTEMPTS if which == "user" else reasons.TOO_MANY_CHECKS
            return None, deny(line.format(seconds=seconds))
        login, refusal = self._start_check(sock, caller, phone)
        if refusal:
            return None, refusal
        try:
            return login.check_id, self._wait(sock, login)
        finally:
            self.logins.drop(login.check_id)

    def _start_check(self, sock, caller: Caller, phone: str) -> tuple[Login | None, Verdict | None]:
        """Create the check and send the challenge; or the verdict that it could not start."""
        # SECURITY: the redirect must echo this login's own nonce: a signature the API made for
        # another customer's check (whose redirect_url they chose) can never match it.
        nonce = new_nonce()
        redirect_url = f"{self.settings.webhook_url}?login={nonce}"
        try:
            check = self.client.create_check(phone, redirect_url, within=CREATE_BUDGET)
        except ApiUnreachable as error:
            log.error("creating a check for %s: %s", caller.user, error)
            # SECURITY: the only fail-open path: opt-in, at creation only, and only when the API
            # is down (refused, DNS, connect timeout, 5xx), never a TLS or protocol failure.
            if self.settings.failmode == "safe" and error.down:
                return None, Verdict(True, "failsafe", reasons.FAILSAFE)
            return None, deny(reasons.API_DOWN, "error")
        except PhoneCheckError as error:
            log.error("creating a check for %s: %s", caller.user, error)
            if error.status == 429 and error.retry_after:
                return None, deny(reasons.API_BUSY.format(seconds=error.retry_after), "error")
            detail = f"HTTP {error.status}" if (error.status or 0) >= 400 else "bad answer"
            return None, deny(reasons.API_REFUSED.format(detail=detail), "error")
        self._note_balance(check.snapshot_balance)
        ttl = min(self.settings.ttl, check.ttl or self.settings.ttl)
        number, choices = None, []
        if self.settings.number_match:
            choices = secrets.SystemRandom().sample(range(10, 100), 3)
            number = str(choices[0])
            secrets.SystemRandom().shuffle(choices)
        login = Login(
            check.check_id,
            caller.user,
            caller.address,
            caller.command,
            number,
            [str(c) for c in choices],
            time.monotonic(),
            time.monotonic() + ttl,
            nonce,
        )
        self.logins.add(login)
        self._send(sock, self._challenge(caller.request, check, number, ttl))
        log.info("check %s started for %s from %s", check.check_id, caller.user, caller.address)
        return login, None

    @staticmethod
    def _challenge(request: dict, check, number: str | None, ttl: float) -> dict:
        columns, rows = request["columns"], request["rows"]
        reserved = rows_reserved(check.check_url, number, columns)
        rendering = qr.render(check.check_url, columns, rows, request["unicode"], reserved)
        return {
            "event": EVENT_CHALLENGE,
            "check_id": check.check_id,
            "check_url": check.check_url,
            "qr": rendering or NO_ROOM_FOR_QR,
            "number": number,
            "expires_at": time.time() + ttl,
        }

    def _note_balance(self, balance) -> None:
        """Leave the API's last snapshot_balance beside the socket, for `ssh-auth doctor`."""
        if balance is None:
            return
        path = Path(self.settings.socket).parent / "balance"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{balance}\n")
        except OSError:
            pass

    def _wait(self, sock: socket.socket, login: Login) -> Verdict:
        """Wait for the webhook's verdict, polling the API as a fallback, until the deadline."""
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not self.poll_only:
            poller.register(login.wake[0], select.POLLIN)
        first_poll = self.settings.poll_interval if self.poll_only else FIRST_POLL_DELAY
        next_poll = login.created + first_poll
        next_status = time.monotonic() + STATUS_EVERY
        while True:
            now = time.monotonic()
            if login.verdict and not self.poll_only:
                return login.verdict
            if now >= login.deadline:
                self.logins.finish(login.check_id, deny(reasons.EXPIRED))
                return login.verdict
            if now >= next_poll:
                self._poll(login)
                if login.verdict:
                    return login.verdict
                next_poll = time.monotonic() + self.settings.poll_interval
                continue
            if now >= next_status:
                left = int(login.deadline - now)
                self._send(sock, {"event": EVENT_STATUS, "status": "PENDING", "seconds_left": left})
                next_status = now + STATUS_EVERY
            timeout = min(login.deadline, next_poll, next_status) - now
            for fd, _ in poller.poll(max(0, timeout) * 1000):
                if fd != login.wake[0]:  # the shim went away (EOF) or spoke out of turn
                    self.logins.finish(login.check_id, deny(reasons.ABANDONED))
                    return login.verdict

    def _poll(self, login: Login) -> None:
        """The fallback GET: expiry, network errors, or a completion this service did not make."""
        try:
            check = self.client.get_check(login.check_id)
        except PhoneCheckError as error:
            log.warning("fallback GET of %s failed: %s", login.check_id, error)
            return
        if check.status == "EXPIRED":
            self.logins.finish(login.check_id, deny(reasons.EXPIRED))
        elif check.status == "ERROR":
            log.info("check %s: network error %s", login.check_id, clean(check.error_code)[:64])
            self.logins.finish(login.check_id, deny(reasons.network_error(check.error_code)))
        elif check.status == "COMPLETED" and not login.claimed:
            self.logins.finish(login.check_id, deny(reasons.COMPLETED_ELSEWHERE))

    def _finish(self, sock, user, uid, address, check_id, started, verdict: Verdict) -> None:
        """Send the verdict and log the decision once."""
        self._send_verdict(sock, verdict)
        self.audit.record(
            Decision(
                user, uid, address, check_id, verdict.outcome, verdict.reason, time.monotonic() - started
            )
        )

    def _send_verdict(self, sock: socket.socket, verdict: Verdict) -> None:
        self._send(sock, {"event": EVENT_VERDICT, "allow": verdict.allow, "reason": verdict.reason})

    @staticmethod
    def _send(sock: socket.socket, message: dict) -> None:
        try:
            sock.settimeout(5)
            sock.sendall(encode(message))
        except OSError:
            pass  # the shim went away; its own deadline and the audit line cover it


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
