"""The Unix-socket broker: knows the caller by SO_PEERCRED, runs its check, hands over the verdict."""

import grp
import logging
import os
import pwd
import random
import secrets
import select
import socket
import socketserver
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
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
    peer_uid,
)
from sshshim.terminal import rows_reserved

from . import qr
from .audit import Audit, Decision, clean
from .config import Settings
from .phonecheck import ApiUnreachable, PhoneCheckClient, PhoneCheckError
from .policy import is_exempt, is_sftp_session
from .registry import E164_DIGITS, Registry

log = logging.getLogger("ssh-auth.broker")

CREATE_BUDGET = FIRST_REPLY_TIMEOUT - 2  # token + create must end before the shim stops waiting
FIRST_POLL_DELAY = 10.0  # a phone that answers within this costs no GET at all
STATUS_EVERY = 10.0
RATE_WINDOW = 600.0


class Reasons:
    """Every line a user can be shown, in one place."""

    APPROVED = "approved on your phone."
    EXEMPT = "this account is exempt from the phone check."
    ALLOW_ONCE = "an administrator exempted this account from the phone check until {until}."
    UNREGISTERED_ALLOWED = "no phone is registered for this account; let in by policy."
    REUSED = "approved earlier on this SSH connection."
    FAILSAFE = "the phone check service is unreachable; let in by failmode = safe."
    NO_MATCH = "No match: the phone that answered is not using the registered SIM. Access denied."
    EXPIRED = "the phone check expired before it was completed. Access denied."
    DENIED_ON_PHONE = "the login was denied on the phone. Access denied."
    WRONG_PICK = "the wrong number was picked on the phone. Access denied."
    SFTP_NEEDS_MASTER = (
        "sftp and scp (in SFTP mode) cannot show the phone check: sshd discards their messages. "
        "Approve an ssh ControlMaster connection first and run them over it, or use scp -O. "
        "Access denied."
    )
    UNREGISTERED = "no phone is registered for this account; ask your administrator. Access denied."
    API_DOWN = "the phone check service cannot be reached right now. Access denied."
    API_REFUSED = "the phone check could not be started ({detail}). Access denied."
    API_BUSY = "the phone check service is busy; try again in {seconds} s. Access denied."
    PATCH_FAILED = "the phone check could not be completed ({detail}). Access denied."
    NETWORK = (
        "the mobile network could not confirm the SIM ({detail}). Turn off Wi-Fi on the "
        "phone and try again. Access denied."
    )
    COMPLETED_ELSEWHERE = "the phone check was completed outside this service. Access denied."
    MALFORMED = "the login request was malformed. Access denied."
    UNKNOWN_UID = "this account is not in the password database. Access denied."
    TOO_MANY_CONNECTIONS = "too many logins are waiting at once. Access denied."
    TOO_MANY_ATTEMPTS = "too many attempts; try again in {seconds} s. Access denied."
    NO_PUBLIC_URL = "the ssh-auth service has no public URL for the phone. Access denied."
    INTERNAL = "internal error in the ssh-auth service. Access denied."


@dataclass
class Login:
    """One login waiting for its phone; the webhook finds it by check_id."""

    check_id: str
    user: str
    client: str
    command: str | None
    number: str | None
    choices: list[str]
    created: float
    deadline: float
    page_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    code: str | None = None
    claimed: bool = False
    verdict: tuple[bool, str, str] | None = None  # (allow, outcome, reason)
    wake: tuple[int, int] = field(default_factory=os.pipe)


class Broker:
    """Pending logins and the socket that serves them; shared with the webhook."""

    def __init__(
        self,
        settings: Settings,
        client: PhoneCheckClient,
        registry: Registry,
        audit: Audit,
        max_per_uid: int = 3,
        max_total: int = 512,
        poll_only: bool = False,
    ):
        # poll_only: learn verdicts only from the GET every poll_interval, as the tutorial's
        # design does; used by the benchmarks to compare, never by the service itself.
        self.poll_only = poll_only
        self.settings, self.client, self.registry, self.audit = settings, client, registry, audit
        self.max_per_uid, self.max_total = max_per_uid, max_total
        self.hostname = socket.gethostname()
        self._lock = threading.Lock()
        self._logins: dict[str, Login] = {}
        self._connections: dict[int, int] = defaultdict(int)
        self._attempts: dict[tuple[str, str], deque] = defaultdict(deque)
        self._approved: dict[tuple[int, str], float] = {}
        self._server: socketserver.UnixStreamServer | None = None

    # --- the webhook's side ---------------------------------------------------------------

    def pending(self, check_id: str) -> Login | None:
        """The waiting login for a check this service created, if it is still waiting."""
        with self._lock:
            login = self._logins.get(check_id)
            return login if login and login.verdict is None else None

    def claim(self, check_id: str) -> Login | None:
        """Take a pending login for completion; only the first caller ever gets it."""
        with self._lock:
            login = self._logins.get(check_id)
            if login is None or login.verdict is not None or login.claimed:
                return None
            login.claimed = True
            return login

    def finish(self, check_id: str, allow: bool, outcome: str, reason: str) -> bool:
        """Hand a verdict to the waiting login at once; False if it already had one."""
        with self._lock:
            login = self._logins.get(check_id)
            if login is None or login.verdict is not None:
                return False
            login.verdict = (allow, outcome, reason)
            os.write(login.wake[1], b"!")  # under the lock: the fds close under it too
        return True

    # --- the socket -----------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Listen on the configured socket (mode 0666 from the start) until shutdown()."""
        path = self.settings.socket
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)  # a stale socket from a previous run
        broker = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                broker.handle_connection(self.request)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True
            request_queue_size = 256

            def server_bind(self):
                old = os.umask(0o111)  # every login user may connect; created so, in one step
                try:
                    super().server_bind()
                finally:
                    os.umask(old)

        self._server = Server(path, Handler)
        self._server.serve_forever(poll_interval=0.5)

    def shutdown(self) -> None:
        """Stop accepting logins."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def handle_connection(self, sock: socket.socket) -> None:
        """One shim connection, from its login line to its verdict."""
        uid = peer_uid(sock)
        with self._lock:
            total = sum(self._connections.values())
            admitted = total < self.max_total and self._connections[uid] < self.max_per_uid
            if admitted:
                self._connections[uid] += 1
        if not admitted:
            log.warning("refused a connection from uid %d: too many at once", uid)
            self._send(
                sock, {"event": EVENT_VERDICT, "allow": False, "reason": Reasons.TOO_MANY_CONNECTIONS}
            )
            return
        try:
            self._serve_login(sock, uid)
        except Exception:
            log.exception("login from uid %d failed", uid)
            self._send(sock, {"event": EVENT_VERDICT, "allow": False, "reason": Reasons.INTERNAL})
        finally:
            with self._lock:
                self._connections[uid] -= 1
                if not self._connections[uid]:
                    del self._connections[uid]

    # --- one login ------------------------------------------------------------------------

    def _serve_login(self, sock: socket.socket, uid: int) -> None:
        started = time.monotonic()
        sock.settimeout(FIRST_LINE_TIMEOUT)
        try:
            request = LineReader(sock).read_message()
        except (OSError, ProtocolError) as error:
            log.warning("uid %d sent no valid login line: %s", uid, error)
            return
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return self._verdict(
                sock, uid, f"uid:{uid}", "?", None, started, False, "denied", Reasons.UNKNOWN_UID
            )
        user = entry.pw_name
        connection = request.get("connection")
        client = clean(connection.split()[0]) if isinstance(connection, str) and connection else "-"
        if not _valid_login(request):
            return self._verdict(
                sock, uid, user, client, None, started, False, "denied", Reasons.MALFORMED
            )
        if request["op"] == OP_VERIFY:
            return self._verify_phone(sock, uid, user, client, request, started)
        phone, exempt_until = self.registry.lookup(user)
        sftp = is_sftp_session(request.get("command"), request["tty"])
        decided = self._before_check(
            uid, user, _group_names(user, entry.pw_gid), client, connection, phone, exempt_until, sftp
        )
        if decided:
            return self._verdict(sock, uid, user, client, None, started, *decided)
        checked = self._check(sock, uid, user, client, phone, request, started)
        if checked is None:
            return None
        login, (allow, outcome, reason) = checked
        if allow and isinstance(connection, str) and self.settings.connection_reuse_seconds:
            with self._lock:
                self._approved[(uid, connection)] = (
                    time.monotonic() + self.settings.connection_reuse_seconds
                )
        self._verdict(sock, uid, user, client, login.check_id, started, allow, outcome, reason)

    def _verify_phone(self, sock, uid, user, client, request, started) -> None:
        """Root asks for a check on a number before registering it: the full phone flow."""
        who = request.get("user")
        if uid != 0 or not isinstance(who, str) or not E164_DIGITS.fullmatch(str(request.get("phone"))):
            return self._verdict(
                sock, uid, user, client, None, started, False, "denied", Reasons.MALFORMED
            )
        request = {**request, "command": f"(register this phone for {clean(who)})"}
        checked = self._check(sock, uid, clean(who), client, request["phone"], request, started)
        if checked is None:
            return None
        login, (allow, outcome, reason) = checked
        self._verdict(
            sock,
            uid,
            user,
            client,
            login.check_id,
            started,
            allow,
            outcome,
            f"phone verification for {clean(who)}: {reason}",
        )

    def _check(self, sock, uid, user, client, phone, request, started):
        """Create the check, show it, wait for its verdict: (login, verdict), or None if the
        check could not even start (its verdict was sent already)."""
        login = self._start_check(sock, uid, user, client, phone, request, started)
        if login is None:
            return None
        try:
            return login, self._wait(sock, login)
        finally:
            with self._lock:
                self._logins.pop(login.check_id, None)
                for fd in login.wake:
                    os.close(fd)

    def _before_check(self, uid, user, groups, client, connection, phone, exempt_until, sftp):
        """A verdict that needs no phone (exempt, reused, unregistered, rate limited), or None."""
        settings = self.settings
        if is_exempt(user, groups, settings.exempt_users, settings.exempt_groups):
            return True, "exempt", Reasons.EXEMPT
        if exempt_until:
            when = time.strftime("%H:%M", time.localtime(exempt_until))
            return True, "exempt", Reasons.ALLOW_ONCE.format(until=when)
        if isinstance(connection, str):
            with self._lock:
                until = self._approved.get((uid, connection), 0)
            if time.monotonic() < until:
                return True, "reused", Reasons.REUSED
        if sftp:  # nobody could see its QR: refuse at once rather than hang until the deadline
            return False, "denied", Reasons.SFTP_NEEDS_MASTER
        if phone is None:
            if settings.unregistered == "allow":
                return True, "exempt", Reasons.UNREGISTERED_ALLOWED
            return False, "denied", Reasons.UNREGISTERED
        if not self.settings.public_url:
            return False, "error", Reasons.NO_PUBLIC_URL
        now = time.monotonic()
        with self._lock:
            attempts = self._attempts[(user, client)]
            while attempts and attempts[0] <= now - RATE_WINDOW:
                attempts.popleft()
            if len(attempts) >= settings.max_checks_per_user:
                wait = int(attempts[0] + RATE_WINDOW - now) + 1
                return False, "denied", Reasons.TOO_MANY_ATTEMPTS.format(seconds=wait)
            attempts.append(now)
        return None

    def _start_check(self, sock, uid, user, client, phone, request, started) -> Login | None:
        """Create the check and send the challenge; on failure send the verdict and return None."""
        try:
            check = self.client.create_check(phone, self.settings.webhook_url, within=CREATE_BUDGET)
        except ApiUnreachable as error:
            log.error("creating a check for %s: %s", user, error)
            # SECURITY: the only fail-open path: opt-in, API wholly unreachable, at creation only.
            if self.settings.failmode == "safe":
                self._verdict(sock, uid, user, client, None, started, True, "failsafe", Reasons.FAILSAFE)
            else:
                self._verdict(sock, uid, user, client, None, started, False, "error", Reasons.API_DOWN)
            return None
        except PhoneCheckError as error:
            log.error("creating a check for %s: %s", user, error)
            reason = (
                Reasons.API_BUSY.format(seconds=error.retry_after)
                if error.status == 429 and error.retry_after
                else Reasons.API_REFUSED.format(
                    detail=f"HTTP {error.status}" if (error.status or 0) >= 400 else "bad answer"
                )
            )
            self._verdict(sock, uid, user, client, None, started, False, "error", reason)
            return None
        self._note_balance(check.snapshot_balance)
        ttl = min(self.settings.ttl, check.ttl or self.settings.ttl)
        number, choices = None, []
        if self.settings.number_match:
            choices = random.sample(range(10, 100), 3)
            number = str(choices[0])
            random.shuffle(choices)
        columns, rows = request["columns"], request["rows"]
        reserved = rows_reserved(check.check_url, number, columns)
        rendering = qr.render(check.check_url, columns, rows, request["unicode"], reserved)
        login = Login(
            check.check_id,
            user,
            client,
            clean(request["command"]) if request["command"] is not None else None,
            number,
            [str(c) for c in choices],
            time.monotonic(),
            time.monotonic() + ttl,
        )
        with self._lock:
            self._logins[check.check_id] = login
        self._send(
            sock,
            {
                "event": EVENT_CHALLENGE,
                "check_id": check.check_id,
                "check_url": check.check_url,
                "qr": rendering
                or "(No room for a QR code in this terminal: open the URL below on the phone.)",
                "number": number,
                "expires_at": time.time() + ttl,
            },
        )
        log.info("check %s started for %s from %s", check.check_id, user, client)
        return login

    def _note_balance(self, balance) -> None:
        """Leave the API's last snapshot_balance beside the socket, for `ssh-auth doctor`."""
        if balance is not None:
            try:
                (Path(self.settings.socket).parent / "balance").write_text(f"{balance}\n")
            except OSError:
                pass

    def _wait(self, sock: socket.socket, login: Login) -> tuple[bool, str, str]:
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
                self.finish(login.check_id, False, "denied", Reasons.EXPIRED)
                return login.verdict
            if now >= next_poll:
                self._poll(login)
                if login.verdict:
                    return login.verdict
                next_poll = time.monotonic() + self.settings.poll_interval
                continue
            if now >= next_status:
                self._send(
                    sock,
                    {
                        "event": EVENT_STATUS,
                        "status": "PENDING",
                        "seconds_left": int(login.deadline - now),
                    },
                )
                next_status = now + STATUS_EVERY
            timeout = min(login.deadline, next_poll, next_status) - now
            for fd, _ in poller.poll(max(0, timeout) * 1000):
                if fd != login.wake[0]:  # the shim went away (EOF) or spoke out of turn
                    self.finish(
                        login.check_id,
                        False,
                        "denied",
                        "the login was abandoned (the SSH session went away).",
                    )
                    return login.verdict

    def _poll(self, login: Login) -> None:
        """The fallback GET: expiry, network errors, or a completion this service did not make."""
        try:
            check = self.client.get_check(login.check_id)
        except PhoneCheckError as error:
            log.warning("fallback GET of %s failed: %s", login.check_id, error)
            return
        if check.status == "EXPIRED":
            self.finish(login.check_id, False, "denied", Reasons.EXPIRED)
        elif check.status == "ERROR":
            self.finish(
                login.check_id,
                False,
                "denied",
                Reasons.NETWORK.format(detail=clean(check.error_code or "error")),
            )
        elif check.status == "COMPLETED" and not login.claimed:
            self.finish(login.check_id, False, "denied", Reasons.COMPLETED_ELSEWHERE)

    def _verdict(self, sock, uid, user, client, check_id, started, allow, outcome, reason):
        self._send(sock, {"event": EVENT_VERDICT, "allow": allow, "reason": reason})
        self.audit.record(
            Decision(user, uid, client, check_id, outcome, reason, time.monotonic() - started)
        )

    @staticmethod
    def _send(sock: socket.socket, message: dict) -> None:
        try:
            sock.settimeout(5)
            sock.sendall(encode(message))
        except OSError:
            pass  # the shim went away; its own deadline and the audit line cover it


def _valid_login(request: dict) -> bool:
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


def _group_names(user: str, primary_gid: int) -> list[str]:
    """The names of every group the user is in (gids without a name are skipped)."""
    names = []
    for gid in os.getgrouplist(user, primary_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names
