"""An agent's HTTPS client for its hub: every request signed by the host's key, failing over to
the next of `hub_urls` on a connect error or a 5xx."""

import json
import logging
import os
import time

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ..errors import SshAuthError
from .signing import sign

log = logging.getLogger("ssh-auth.agent")
CONNECT_TIMEOUT = 2.0  # seconds to reach one replica before trying the next
POOL_SIZE = 128  # keep-alive connections to each replica (logins created at once, per agent)


class HubUnavailable(Exception):
    """No hub answered; `why` is "unreachable", "database", "refused", "clock", "busy", or
    "rejected" (the hub will never accept this request)."""

    def __init__(self, why: str, detail: str):
        super().__init__(detail)
        self.why = why


class HostKeyError(SshAuthError):
    """The host's key cannot be read: the agent cannot sign, so it does not start."""


def load_host_key(path: str) -> Ed25519PrivateKey:
    """The host's Ed25519 key (written by `ssh-auth fleet join`)."""
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_mode & 0o077:
                raise HostKeyError(f"{path} can be read by others: chmod 600 {path}")
            key = load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError) as error:
        raise HostKeyError(f"cannot read the host key {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise HostKeyError(f"{path} is not an Ed25519 key")
    return key


class HubClient:
    """Signed JSON requests to the first hub URL that answers."""

    def __init__(self, urls: tuple[str, ...], host: str, key: Ed25519PrivateKey):
        self.urls, self.host, self.key = urls, host, key
        self._current = 0
        # One pool of keep-alive connections for every login thread (no cookies: thread-safe).
        self._pooled = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=len(urls), pool_maxsize=POOL_SIZE)
        self._pooled.mount("http://", adapter)
        self._pooled.mount("https://", adapter)

    def post(self, path: str, body: dict, timeout: float, attempt: float | None = None) -> dict:
        """The JSON answer of the first replica that answers with a 2xx; HubUnavailable if none
        does (each replica tried once, starting from the one that last answered, each for
        `attempt` seconds or its share of `timeout`)."""
        data = json.dumps(body, separators=(",", ":")).encode()
        deadline = time.monotonic() + timeout
        why, detail = "unreachable", "no hub URL"
        start = self._current
        for offset in range(len(self.urls)):
            index = (start + offset) % len(self.urls)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # A replica that accepts and never answers gets its share, not the whole budget.
            share = attempt or left / (len(self.urls) - offset)
            share = min(share, left)
            url = self.urls[index]
            headers = {
                "Content-Type": "application/json",
                **sign(self.key, self.host, "POST", path, data),
            }
            try:
                response = self._pooled.post(
                    url + path,
                    data=data,
                    headers=headers,
                    timeout=(min(CONNECT_TIMEOUT, share), share),
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                if why != "database":
                    why, detail = "unreachable", f"{url}: {type(error).__name__}"
                continue
            if response.status_code >= 500:
                # A replica that answered "no database" says more than one that did not answer.
                database = why == "database" or _error_of(response) == "database_unavailable"
                why, detail = (
                    ("database" if database else "unreachable"),
                    f"{url}: HTTP {response.status_code}",
                )
                continue
            self._current = index
            if response.status_code == 401:
                clock = _error_of(response) == "clock"
                raise HubUnavailable(
                    "clock" if clock else "refused", f"{url}: the hub refused this host"
                )
            if response.status_code == 429:
                raise HubUnavailable("busy", f"{url}: this host is over its limits")
            if response.status_code != 200:
                raise HubUnavailable("rejected", f"{url}: HTTP {response.status_code}")
            try:
                answer = response.json()
            except ValueError:
                raise HubUnavailable("unreachable", f"{url}: not JSON") from None
            if not isinstance(answer, dict):
                raise HubUnavailable("unreachable", f"{url}: not a JSON object")
            return answer
        raise HubUnavailable(why, detail)


def _error_of(response: requests.Response) -> str | None:
    try:
        return response.json().get("error")
    except (ValueError, AttributeError):
        return None
