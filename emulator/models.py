"""The emulator's state: clients, tokens, checks and their state machine. No HTTP; injectable clock."""

import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from . import problems

E164_DIGITS = re.compile(r"[1-9][0-9]{6,14}")
TERMINAL = frozenset({"COMPLETED", "EXPIRED", "ERROR"})
TOKEN_LIFETIME = 3600
RATE_WINDOW = 60
SANDBOX_ERROR_SUFFIX = "99"
SANDBOX_ERROR_CODE = "mno_not_supported"
NETWORK_ERRORS = {
    "not_mobile_ip": "The device is not on a mobile data connection",
    "mno_not_supported": "The mobile network of this number is not supported",
    "ip_msisdn_mismatch": "The mobile data connection does not belong to this phone number",
}


class Clock:
    """Wall-clock time plus an offset the controls can advance (to expire checks without waiting)."""

    def __init__(self, now=time.time):
        self._now = now
        self.offset = 0.0

    def __call__(self) -> float:
        return self._now() + self.offset

    def advance(self, seconds: float) -> None:
        """Move time forward for every check and token."""
        self.offset += seconds


@dataclass
class Check:
    """One PhoneCheck as the API keeps it."""

    check_id: str
    phone_number: str
    redirect_url: str
    created_at: float
    ttl: int
    status: str = "ACCEPTED"
    code: str | None = None
    device_matches: bool | None = None
    match: bool | None = None
    error_code: str | None = None

    def to_json(self, base_url: str, balance: int) -> dict:
        """The check as the API answers it; match only when COMPLETED, error_code only on ERROR."""
        href = f"{base_url}/phone_check/v0.2/checks/{self.check_id}"
        body = {
            "check_id": self.check_id,
            "status": self.status,
            "charge_amount": 1,
            "charge_currency": "API",
            "created_at": datetime.fromtimestamp(self.created_at, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S+0000"
            ),
            "ttl": self.ttl,
            "snapshot_balance": balance,
            "_links": {"self": {"href": href}, "check_url": {"href": href + "/redirect"}},
        }
        if self.status == "COMPLETED":
            body["match"] = bool(self.match)
        if self.status == "ERROR":
            body["error_code"] = self.error_code
        return body


@dataclass
class DeviceResult:
    """Where the mobile network sends the device after it opens the check URL."""

    check: Check
    code: str | None = None
    error: str | None = None
    description: str | None = None


class Model:
    """The whole emulated API: one lock guards every change."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        ttl: int = 120,
        clock=None,
        balance: int = 1000,
        rate_limit: int = 6000,
    ):
        self.client_id = client_id
        self.client_secret = client_secret
        self.ttl = ttl
        self.clock = clock or Clock()
        self.initial_balance = balance
        self.rate_limit = rate_limit
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every token, check and rate-limit window, and undo clock advances."""
        with self._lock:
            self.clock.offset = 0.0
            self.tokens: dict[str, float] = {}
            self.checks: dict[str, Check] = {}
            self.balance = self.initial_balance
            self._window: tuple[int, int] = (0, 0)

    # --- OAuth2 ---------------------------------------------------------------------------

    def issue_token(self, client_id: str, client_secret: str, grant_type: str, scope: str) -> dict:
        """client_credentials grant: a bearer token for an hour."""
        if grant_type != "client_credentials":
            raise problems.BadRequest("grant_type must be client_credentials")
        same_id = secrets.compare_digest(client_id.encode(), self.client_id.encode())
        same_secret = secrets.compare_digest(client_secret.encode(), self.client_secret.encode())
        if not (same_id and same_secret):
            raise problems.Unauthorized("invalid client credentials")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[token] = self.clock() + TOKEN_LIFETIME
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": TOKEN_LIFETIME,
            "scope": scope or "phone_check coverage",
        }

    def authorize(self, token: str | None) -> None:
        """Raise Unauthorized unless the bearer token was issued here and is unexpired."""
        with self._lock:
            expiry = self.tokens.get(token or "")
        if expiry is None or expiry <= self.clock():
            raise problems.Unauthorized("missing, invalid or expired access token")

    def count_request(self) -> tuple[int, int, int]:
        """Fixed-window rate limit: (limit, remaining, reset epoch), or TooManyRequests."""
        now = self.clock()
        window_start = int(now // RATE_WINDOW * RATE_WINDOW)
        with self._lock:
            start, used = self._window
            if start != window_start:
                start, used = window_start, 0
            used += 1
            self._window = (start, used)
        reset = start + RATE_WINDOW
        if used > self.rate_limit:
            retry = max(1, int(reset - now))
            raise problems.TooManyRequests("rate limit exceeded", {"Retry-After": str(retry)})
        return self.rate_limit, self.rate_limit - used, reset

    # --- checks ---------------------------------------------------------------------------

    def create_check(self, phone_number, redirect_url) -> Check:
        """A new check in ACCEPTED; the number must be E.164 digits without '+'."""
        if not isinstance(phone_number, str) or not E164_DIGITS.fullmatch(phone_number):
            raise problems.PhoneFormatInvalid(
                "phone_number must be E.164 digits without '+', e.g. 447700900123"
            )
        if redirect_url is not None and not (
            isinstance(redirect_url, str)
            and redirect_url.startswith(("https://", "http://"))
            and "#" not in redirect_url  # what follows a '#' would sit outside the signed query
        ):
            raise problems.BadRequest("redirect_url must be an absolute http(s) URL, no fragment")
        check = Check(str(uuid.uuid4()), phone_number, redirect_url or "", self.clock(), self.ttl)
        with self._lock:
            self.checks[check.check_id] = check
            self.balance -= 1
        return check

    def get_check(self, check_id: str) -> Check:
        """The check with its status brought up to date (expiry is lazy)."""
        with self._lock:
            return self._find(check_id)

    def open_check(self, check_id: str, sim: str | None, network_error: str | None) -> DeviceResult:
        """The device opens the check URL on mobile data; the network decides the SIM."""
        with self._lock:
            check = self._find(check_id)
            if check.status == "EXPIRED":
                return DeviceResult(
                    check,
                    error="check_expired",
                    description="The check expired before the phone opened it",
                )
            if check.status != "ACCEPTED":
                return DeviceResult(
                    check, error="check_already_used", description="This check was already opened"
                )
            error = network_error or self._sandbox_error(check, sim)
            if error:
                check.status, check.error_code = "ERROR", error
                return DeviceResult(check, error=error, description=NETWORK_ERRORS.get(error, error))
            check.status = "PENDING"
            check.code = secrets.token_hex(16)
            check.device_matches = self._sim_matches(check, sim)
            return DeviceResult(check, code=check.code)

    def patch_check(self, check_id: str, code) -> Check:
        """Complete a PENDING check; match needs the right code and the right SIM."""
        with self._lock:
            check = self._find(check_id)
            if check.status == "ACCEPTED":
                raise problems.CheckNotFound("the device has not opened the check URL yet")
            if check.status in TERMINAL:
                raise problems.CheckNotFound(f"check is already {check.status}")
            right_code = isinstance(code, str) and secrets.compare_digest(
                code.encode(), check.code.encode()
            )
            check.status = "COMPLETED"
            check.match = bool(right_code and check.device_matches)
            return check

    def _find(self, check_id: str) -> Check:
        """The check, its status brought up to date (expiry is lazy); the caller holds the lock."""
        check = self.checks.get(check_id)
        if check is None:
            raise problems.CheckNotFound(f"no check with id {check_id}")
        self._expire(check)
        return check

    def _expire(self, check: Check) -> None:
        if check.status in ("ACCEPTED", "PENDING") and self.clock() >= check.created_at + check.ttl:
            check.status = "EXPIRED"

    @staticmethod
    def _sandbox_error(check: Check, sim: str | None) -> str | None:
        if sim is None and check.phone_number.endswith(SANDBOX_ERROR_SUFFIX):
            return SANDBOX_ERROR_CODE
        return None

    @staticmethod
    def _sim_matches(check: Check, sim: str | None) -> bool:
        # The simulated mobile network: an explicit SIM, else the sandbox rule (even last digit).
        if sim is not None:
            return sim.lstrip("+") == check.phone_number
        return int(check.phone_number[-1]) % 2 == 0
