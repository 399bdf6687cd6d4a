"""Logins waiting for their phone, and the handoff of a verdict from the webhook to the broker."""

import grp
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass, field

from .connection import SshConnection

OUTCOMES = frozenset({"allowed", "denied", "exempt", "reused", "failsafe", "error"})
# SECURITY: the only outcomes that may ever open a login (checked even under python -O).
ALLOWING = frozenset({"allowed", "exempt", "reused", "failsafe"})


@dataclass(frozen=True)
class Verdict:
    """What was decided for one login, as the user is told and the audit records it."""

    allow: bool
    outcome: str
    reason: str
    told: bool = True  # False: the person already saw a reason on this connection (a retry)
    central: bool = False  # a fleet's hub decided it and has it in its audit table already

    def __post_init__(self):
        if self.outcome not in OUTCOMES or (self.allow and self.outcome not in ALLOWING):
            raise ValueError(f"no such verdict: allow={self.allow} outcome={self.outcome!r}")


@dataclass(frozen=True)
class Caller:
    """Who asks: identity and connection from the kernel (or, in auth-time mode, from sshd);
    terminal facts from the shim."""

    uid: int
    gid: int
    user: str
    connection: SshConnection | None
    address: str
    command: str | None
    request: dict
    key: str | None = None  # the first factor's key, in auth-time mode
    host: str | None = None  # in a fleet: the enrolled host the login is on (the hub's name)

    def groups(self) -> list[str]:
        """The names of every group the user is in (gids without a name are skipped)."""
        names = []
        for gid in os.getgrouplist(self.user, self.gid):
            try:
                names.append(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return names


def deny(reason: str, outcome: str = "denied") -> Verdict:
    """A verdict that keeps the login out."""
    return Verdict(False, outcome, reason)


def new_token() -> str:
    """128 bits, URL-safe: a login's redirect_url nonce, or the path of its short URL /q/<token>."""
    return secrets.token_urlsafe(16)


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
    nonce: str = ""  # in the redirect_url this check was created with; the redirect must echo it
    check_url: str = ""
    key: str | None = None  # the first factor's key (auth-time mode), shown on the phone
    whole_connection: bool = False  # auth-time mode: approving opens the connection, not a command
    host: str | None = None  # in a fleet: the host's enrolled name, shown on the phone
    uid: int | None = None  # the account's uid on its host (for the audit)
    short_token: str = field(default_factory=new_token)  # /q/<token> redirects to check_url
    page_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    device: bytes | None = None  # hash of the cookie of the first browser that opened the page
    code: str | None = None
    claimed: bool = False
    verdict: Verdict | None = None
    wake: tuple[int, int] | None = None  # the broker's wake-up pipe, made by PendingLogins.add


def device_hash(cookie: str) -> bytes:
    """What is kept of a browser's device cookie (the cookie itself is the secret)."""
    return hashlib.sha256(cookie.encode()).digest()


class PendingLogins:
    """Every login waiting for a verdict, shared by the broker (waits) and the webhook (decides)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._logins: dict[str, Login] = {}

    def add(self, login: Login) -> None:
        """Make a login findable by the webhook, with the pipe that wakes its broker thread."""
        login.wake = os.pipe()
        with self._lock:
            self._logins[login.check_id] = login

    def drop(self, check_id: str) -> None:
        """Forget a login whose wait is over; its wake-up pipe is closed."""
        with self._lock:
            login = self._logins.pop(check_id, None)
            if login is not None:
                for fd in login.wake:
                    os.close(fd)

    def pending(self, check_id: str) -> Login | None:
        """The waiting login for a check this service created, if it is still waiting."""
        with self._lock:
            login = self._logins.get(check_id)
            return login if login and login.verdict is None else None

    def by_short_token(self, token: str) -> Login | None:
        """The waiting login whose short URL this is, if it is still waiting."""
        with self._lock:
            for login in self._logins.values():
                if login.verdict is None and hmac.compare_digest(login.short_token, token):
                    return login
        return None

    def bind_device(self, login: Login, cookie: str) -> bool:
        """Bind the confirmation to the first browser that opens it; False for any other one."""
        wanted = device_hash(cookie)
        with self._lock:
            if login.device is None:
                login.device = wanted
            return hmac.compare_digest(login.device, wanted)

    def remember_code(self, login: Login, code: str) -> None:
        """Keep the code of the first verified redirect for this login (a later one is ignored)."""
        with self._lock:
            if login.code is None:
                login.code = code

    def claim(self, check_id: str) -> Login | None:
        """Take a pending login for completion; only the first caller ever gets it."""
        with self._lock:
            login = self._logins.get(check_id)
            if login is None or login.verdict is not None or login.claimed:
                return None
            login.claimed = True
            return login

    def finish(self, check_id: str, verdict: Verdict) -> bool:
        """Hand a verdict to the waiting login at once; False if it already had one or is gone."""
        with self._lock:
            login = self._logins.get(check_id)
            if login is None or login.verdict is not None:
                return False
            login.verdict = verdict
            os.write(login.wake[1], b"!")  # under the lock: drop() closes the pipe under it too
        return True
