"""One login's phone check, from creation to verdict: create it with this login's nonce, send the
challenge, wait for the webhook's verdict (polling the API as a fallback), keep the deadline."""

import logging
import os
import secrets
import select
import socket
import time
from pathlib import Path

from sshshim.protocol import (
    EVENT_CHALLENGE,
    EVENT_STATUS,
    FIRST_REPLY_TIMEOUT,
    OP_PAM_LOGIN,
    encode,
    rows_reserved,
)

from . import pam_login, qr, reasons
from .audit import clean
from .config import Settings
from .logins import Caller, Login, PendingLogins, Verdict, deny, new_token
from .phonecheck import ApiUnreachable, PhoneCheckClient, PhoneCheckError

log = logging.getLogger("ssh-auth.flow")

CREATE_BUDGET = FIRST_REPLY_TIMEOUT - 2  # token + create must end before the shim stops waiting
FIRST_POLL_DELAY = 10.0  # a phone that answers within this costs no GET at all
STATUS_EVERY = 10.0
NO_ROOM_FOR_QR = "(No room for a QR code in this terminal: open the URL below on the phone.)"


class CheckFlow:
    """Runs phone checks for the broker, handing each to the webhook through PendingLogins."""

    def __init__(self, settings: Settings, client: PhoneCheckClient, logins: PendingLogins):
        self.settings, self.client, self.logins = settings, client, logins

    def run(self, sock: socket.socket, caller: Caller, phone: str) -> tuple[str | None, Verdict]:
        """(check_id, verdict) of a check for this caller's login, shown on its socket."""
        login, refusal = self.start(sock, caller, phone)
        if refusal:
            return None, refusal
        try:
            return login.check_id, self.wait(sock, login)
        finally:
            self.logins.drop(login.check_id)

    def start(self, sock, caller: Caller, phone: str) -> tuple[Login | None, Verdict | None]:
        """Create the check and send the challenge; or the verdict that it could not start."""
        login, answer = self.open(caller, phone)
        if login is None:
            return None, answer
        send(sock, answer)
        return login, None

    def open(self, caller: Caller, phone: str) -> tuple[Login | None, dict | Verdict]:
        """Create the check and add its login to self.logins: (the login, its challenge message);
        or (None, the verdict that it could not start)."""
        # SECURITY: the redirect must echo this login's own nonce: a signature the API made for
        # another customer's check (whose redirect_url they chose) can never match it.
        nonce = new_token()
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
        self.note_balance(check.snapshot_balance)
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
            check.check_url,
            caller.key,
            whole_connection=caller.request["op"] == OP_PAM_LOGIN,
            host=caller.host,
            uid=caller.uid,
        )
        self.logins.add(login)
        if caller.request["op"] == OP_PAM_LOGIN:
            challenge = self.pam_challenge(login, ttl)
        else:
            challenge = self.challenge(caller.request, check, number, ttl)
        where = f" on {caller.host}" if caller.host else ""
        log.info("check %s started for %s%s from %s", check.check_id, caller.user, where, caller.address)
        return login, challenge

    @staticmethod
    def challenge(request: dict, check, number: str | None, ttl: float) -> dict:
        """The challenge message: the check URL, a QR sized for the terminal, the deadline."""
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

    def pam_challenge(self, login: Login, ttl: float) -> dict:
        """The PAM module's challenge: the whole prompt, around a QR of the login's short URL."""
        short_url = f"{self.settings.public_url}/q/{login.short_token}"
        return {
            "event": EVENT_CHALLENGE,
            "check_id": login.check_id,
            "prompt": pam_login.prompt(short_url, login.number, self.settings.pam_qr),
            "expires_at": time.time() + ttl,
        }

    def note_balance(self, balance) -> None:
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

    def wait(self, sock: socket.socket, login: Login) -> Verdict:
        """Wait for the webhook's verdict, polling the API as a fallback, until the deadline."""
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        poller.register(login.wake[0], select.POLLIN)
        next_poll = login.created + FIRST_POLL_DELAY
        next_status = time.monotonic() + STATUS_EVERY
        while True:
            now = time.monotonic()
            if login.verdict:
                return login.verdict
            if now >= login.deadline:
                self.logins.finish(login.check_id, deny(reasons.EXPIRED))
                return login.verdict
            if now >= next_poll:
                self.poll(login)
                if login.verdict:
                    return login.verdict
                next_poll = time.monotonic() + self.settings.poll_interval
                continue
            if now >= next_status:
                left = int(login.deadline - now)
                send(sock, {"event": EVENT_STATUS, "status": "PENDING", "seconds_left": left})
                next_status = now + STATUS_EVERY
            timeout = min(login.deadline, next_poll, next_status) - now
            for fd, _ in poller.poll(max(0, timeout) * 1000):
                if fd != login.wake[0]:  # the shim went away (EOF) or spoke out of turn
                    self.logins.finish(login.check_id, deny(reasons.ABANDONED))
                    return login.verdict

    def poll(self, login: Login) -> None:
        """The fallback GET, for a login whose redirect has not come."""
        verdict = fallback_verdict(self.client, login.check_id, login.claimed)
        if verdict:
            self.logins.finish(login.check_id, verdict)


def fallback_verdict(client: PhoneCheckClient, check_id: str, claimed: bool) -> Verdict | None:
    """What the API's own state decides: expiry, a network error, or a completion this service
    did not make (None: nothing yet, or the GET failed)."""
    try:
        check = client.get_check(check_id)
    except PhoneCheckError as error:
        log.warning("fallback GET of %s failed: %s", check_id, error)
        return None
    if check.status == "EXPIRED":
        return deny(reasons.EXPIRED)
    if check.status == "ERROR":
        log.info("check %s: network error %s", check_id, clean(check.error_code)[:64])
        return deny(reasons.network_error(check.error_code))
    if check.status == "COMPLETED" and not claimed:
        return deny(reasons.COMPLETED_ELSEWHERE)
    return None


def send(sock: socket.socket, message: dict) -> None:
    """One message to the shim; a shim that went away is covered by its deadline and the audit."""
    try:
        sock.settimeout(5)
        sock.sendall(encode(message))
    except OSError:
        pass
