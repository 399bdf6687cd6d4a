"""The PhoneCheck v0.2 API client: token cache, create/get/patch, one error type per failure class."""

import socket
import threading
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError

from .config import Credentials

RESIDENCIES = ("eu", "in", "us")
STATUSES = frozenset({"ACCEPTED", "PENDING", "COMPLETED", "EXPIRED", "ERROR"})
TOKEN_MARGIN = 60  # seconds before expiry at which a cached token is replaced
MAX_RETRY_AFTER_WAIT = 5.0  # a GET waits out a 429 this short once; longer ones are reported


def base_url_for(data_residency: str) -> str:
    """The API's base URL for a data residency (eu, in, us)."""
    if data_residency not in RESIDENCIES:
        raise ValueError(f"data_residency must be one of {', '.join(RESIDENCIES)}")
    return f"https://{data_residency}.api.idlayr.com"


class PhoneCheckError(Exception):
    """The API refused or answered something unusable; carries its problem status/type/detail."""

    def __init__(
        self,
        detail: str,
        status: int | None = None,
        problem_type: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.problem_type = problem_type
        self.retry_after = retry_after


class ApiUnreachable(PhoneCheckError):
    """The API gave no usable answer: no connection, a timeout, a broken TLS or HTTP exchange, 5xx.

    `down` is true only for what says the API itself is down and an attacker on the path cannot
    fake into it more cheaply than by taking the API down: connection refused, DNS failure,
    connect timeout, a 5xx answer. Only those may open a login under failmode = safe.
    """

    def __init__(self, detail: str, status: int | None = None, down: bool = False, **kwargs):
        super().__init__(detail, status, **kwargs)
        self.down = down


@dataclass(frozen=True)
class Check:
    """What the client needs of a PhoneCheck."""

    check_id: str
    status: str
    check_url: str | None = None
    match: bool | None = None
    error_code: str | None = None
    ttl: int | None = None
    snapshot_balance: int | None = None

    @classmethod
    def from_json(cls, body) -> "Check":
        """Validate an API answer; anything missing or odd is a PhoneCheckError."""
        if not isinstance(body, dict):
            raise PhoneCheckError("malformed answer from the PhoneCheck API: not a JSON object")
        check_id, status = body.get("check_id"), body.get("status")
        if not isinstance(check_id, str) or not check_id:
            raise PhoneCheckError("malformed answer from the PhoneCheck API: no check_id")
        if status not in STATUSES:
            raise PhoneCheckError(f"malformed answer from the PhoneCheck API: status {status!r}")
        match = body.get("match")
        if status == "COMPLETED" and not isinstance(match, bool):
            raise PhoneCheckError("malformed answer from the PhoneCheck API: COMPLETED without match")
        links = body.get("_links")
        check_url = None
        if isinstance(links, dict) and isinstance(links.get("check_url"), dict):
            check_url = links["check_url"].get("href")
        ttl, balance = body.get("ttl"), body.get("snapshot_balance")
        return cls(
            check_id=check_id,
            status=status,
            check_url=check_url if isinstance(check_url, str) else None,
            match=match if status == "COMPLETED" else None,
            error_code=str(body.get("error_code")) if status == "ERROR" else None,
            ttl=ttl if isinstance(ttl, int) else None,
            snapshot_balance=balance if isinstance(balance, int | float) else None,
        )


class PhoneCheckClient:
    """Talks to the PhoneCheck API; safe to share between threads; never logs secrets."""

    def __init__(
        self, credentials: Credentials, base_url: str, timeout: tuple[float, float] = (3.05, 10.0)
    ):
        self.credentials = credentials
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.mount("http://", HTTPAdapter(pool_maxsize=64))
        self._session.mount("https://", HTTPAdapter(pool_maxsize=64))
        self._session.headers["User-Agent"] = "ssh-auth/0.1"
        self._token_lock = threading.Lock()
        self._token: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"PhoneCheckClient({self.base_url!r})"

    # --- public calls ---------------------------------------------------------------------

    def token(self, deadline: float | None = None) -> str:
        """A bearer token, fetched once and reused until 60 s before it expires."""
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        # Waiting for another thread's fetch says nothing about the API: never "down".
        if not self._token_lock.acquire(timeout=wait):
            raise ApiUnreachable("another request for an access token is still running")
        try:
            return self._cached_or_new_token(deadline)
        finally:
            self._token_lock.release()

    def _cached_or_new_token(self, deadline: float | None) -> str:
        if self._token and time.monotonic() < self._token[1]:
            return self._token[0]
        body = self._call(
            "POST",
            "/oauth2/v1/token",
            bearer=False,
            deadline=deadline,
            auth=(self.credentials.client_id, self.credentials.client_secret),
            data={"grant_type": "client_credentials", "scope": "phone_check coverage"},
        )
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int):
            raise PhoneCheckError("malformed token answer from the PhoneCheck API")
        self._token = (token, time.monotonic() + expires_in - TOKEN_MARGIN)
        return token

    def create_check(
        self, phone_number: str, redirect_url: str | None, within: float | None = None
    ) -> Check:
        """Start a PhoneCheck for an E.164 number; never retried (it costs money).

        `within` bounds the whole call, token included: a login cannot wait on a hung API.
        """
        payload = {"phone_number": phone_number}
        if redirect_url:
            payload["redirect_url"] = redirect_url
        deadline = time.monotonic() + within if within else None
        check = Check.from_json(
            self._call("POST", "/phone_check/v0.2/checks", json=payload, deadline=deadline)
        )
        if not check.check_url:
            raise PhoneCheckError("malformed answer from the PhoneCheck API: no check_url")
        return check

    def get_check(self, check_id: str) -> Check:
        """The check's current status (retried once on a timeout or 5xx)."""
        return Check.from_json(self._call("GET", f"/phone_check/v0.2/checks/{check_id}", retry=True))

    def patch_check(self, check_id: str, code: str) -> Check:
        """Send the code from the phone's redirect; the answer says COMPLETED and match."""
        return Check.from_json(
            self._call(
                "PATCH",
                f"/phone_check/v0.2/checks/{check_id}",
                json=[{"op": "add", "path": "/code", "value": code}],
                headers={"Content-Type": "application/json-patch+json"},
            )
        )

    def jwks(self) -> dict:
        """The API's signing keys (no credentials needed)."""
        body = self._call("GET", "/.well-known/jwks.json", bearer=False, retry=True)
        if not isinstance(body.get("keys"), list):
            raise PhoneCheckError("malformed JWKS from the PhoneCheck API: no keys")
        return body

    def forget_token(self) -> None:
        """Drop the cached token (after the API refused it)."""
        with self._token_lock:
            self._token = None

    # --- plumbing -------------------------------------------------------------------------

    def _timeout(self, deadline: float | None) -> tuple[float, float]:
        """(connect, read) for one request: the client's own, cut to what a deadline leaves."""
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0.05:  # this login's own budget ran out: not a sign that the API is down
            raise ApiUnreachable("PhoneCheck API did not answer in time")
        return min(self.timeout[0], left), min(self.timeout[1], left)

    def _call(
        self,
        method: str,
        path: str,
        *,
        bearer: bool = True,
        retry: bool = False,
        headers: dict | None = None,
        deadline: float | None = None,
        **kwargs,
    ) -> dict:
        tries_left = 2 if retry else 1
        token_refreshed = False
        while True:
            tries_left -= 1
            send_headers = dict(headers or {})
            if bearer:
                send_headers["Authorization"] = f"Bearer {self.token(deadline)}"
            timeout = self._timeout(deadline)
            try:
                response = self._session.request(
                    method,
                    self.base_url + path,
                    headers=send_headers,
                    timeout=timeout,
                    allow_redirects=False,
                    **kwargs,
                )
            except requests.RequestException as exc:
                # A connect cut short by this login's own deadline proves nothing about the API.
                error = _unreachable(exc, whole_connect=timeout[0] >= self.timeout[0])
            else:
                if response.status_code == 401 and bearer and not token_refreshed:
                    self.forget_token()  # revoked or expired early: one fresh token, then give up
                    token_refreshed, tries_left = True, tries_left + 1
                    continue
                if response.status_code < 400:
                    return _json_object(response)
                error = _problem(response)
            if tries_left <= 0 or not _worth_retrying(error):
                raise error
            if error.retry_after:
                time.sleep(error.retry_after)


def _worth_retrying(error: PhoneCheckError) -> bool:
    if isinstance(error, ApiUnreachable):
        return True
    return error.status == 429 and (error.retry_after or 0) <= MAX_RETRY_AFTER_WAIT


def _unreachable(exc: requests.RequestException, whole_connect: bool = True) -> ApiUnreachable:
    """Classify a failed request; only a refused connection, DNS or a connect timeout is "down"
    (a connect timeout only when the whole configured connect timeout was given)."""
    if isinstance(exc, requests.exceptions.SSLError):  # before ConnectionError: it is one
        return ApiUnreachable("PhoneCheck API unreachable: TLS certificate or handshake failed")
    if isinstance(exc, requests.ConnectTimeout):
        return ApiUnreachable("PhoneCheck API did not accept a connection in time", down=whole_connect)
    if isinstance(exc, requests.Timeout):
        return ApiUnreachable("PhoneCheck API did not answer in time")
    causes = _causes(exc)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return ApiUnreachable("PhoneCheck API unreachable: connection refused", down=True)
    if any(isinstance(c, (socket.gaierror, NameResolutionError)) for c in causes):
        return ApiUnreachable("PhoneCheck API unreachable: DNS lookup failed", down=True)
    return ApiUnreachable(f"PhoneCheck API unreachable: {type(causes[-1]).__name__}")


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (requests -> urllib3 -> the socket's OSError)."""
    chain, seen = [], set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        chain.append(current)
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return chain


def _json_object(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        raise PhoneCheckError(
            f"malformed answer from the PhoneCheck API (HTTP {response.status_code}, not JSON)",
            status=response.status_code,
        ) from None
    if not isinstance(body, dict):
        raise PhoneCheckError(
            "malformed answer from the PhoneCheck API: not a JSON object", status=response.status_code
        )
    return body


def _problem(response: requests.Response) -> PhoneCheckError:
    """Map an error answer (problem+json or not) to the right exception."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") or body.get("title") or response.reason or "error"
    problem_type = body.get("type")
    retry_after = _retry_after(response.headers.get("Retry-After"))
    text = f"PhoneCheck API answered HTTP {status}: {str(detail)[:200]}"
    problem_type = str(problem_type) if problem_type else None
    if status >= 500:
        return ApiUnreachable(
            text, status, down=True, problem_type=problem_type, retry_after=retry_after
        )
    return PhoneCheckError(text, status, problem_type=problem_type, retry_after=retry_after)


def _retry_after(value: str | None) -> int | None:
    if value and value.strip().isdigit():
        return int(value.strip())
    return None
