"""The emulator's RSA signing key, its JWKS, and the signed redirect the device is sent to."""

import base64
import json
import secrets
import threading
from email.utils import formatdate
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

SIGNED_HEADERS = "(request-target) host date"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def add_query(url: str, query: str) -> str:
    """Append an encoded query to a URL that may already have one."""
    return url + ("&" if urlsplit(url).query else "?") + query


class Signer:
    """Holds the current key; rotate() replaces it with a new key and kid."""

    def __init__(self):
        self._lock = threading.Lock()
        self.rotate()

    def rotate(self) -> str:
        """A fresh 2048-bit RSA key with a new kid; the old one is no longer published."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self._lock:
            self._key, self.kid = key, "emulator-" + secrets.token_hex(8)
        return self.kid

    def jwks(self) -> dict:
        """The public key as a JWKS document."""
        with self._lock:
            jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
            jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def sign_redirect(self, redirect_url: str, params: dict[str, str], now: float) -> str:
        """The device's final URL: redirect_url with the params and a signed copy of itself.

        params are check_id and code on success, check_id, error and error_description on failure.
        """
        params = "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
        inner = add_query(redirect_url, params)
        parts = urlsplit(inner)
        date = formatdate(now, usegmt=True)
        signing_string = (
            f"(request-target): get {parts.path}?{parts.query}\nhost: {parts.netloc}\ndate: {date}"
        )
        with self._lock:
            signature = self._key.sign(signing_string.encode(), padding.PKCS1v15(), hashes.SHA256())
            kid = self.kid
        authorization = (
            f'Signature keyId="{kid}",algorithm="rsa-sha256",'
            f'headers="{SIGNED_HEADERS}",signature="{_b64(signature)}"'
        )
        signed_inner = (
            f"{inner}&authorization={quote(_b64(authorization.encode()), safe='')}"
            f"&date={quote(_b64(date.encode()), safe='')}"
        )
        return add_query(redirect_url, f"{params}&redirect_url={quote(signed_inner, safe='')}")
