"""Agent requests signed by the host's Ed25519 key: who sent it, when, once, and exactly what.

The signed text binds the method, the path, the host's name, the date, a nonce and the body's
SHA-256, so a request cannot be replayed (the hub keeps nonces for the replay window), moved to
another path, or sent with another body.
"""

import base64
import binascii
import hashlib
import secrets
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

CONTEXT = "ssh-auth-fleet-v1"
REPLAY_WINDOW = 300  # seconds a request's date may differ from the hub's clock
HOST, DATE, NONCE, SIGNATURE = (
    "SSH-Auth-Host",
    "SSH-Auth-Date",
    "SSH-Auth-Nonce",
    "SSH-Auth-Signature",
)


STALE_DATE = "date outside the replay window"


class SignatureRefused(Exception):
    """Why a request's signature was refused (one short reason, logged by the hub)."""


def signed_text(method: str, path: str, host: str, date: str, nonce: str, body: bytes) -> bytes:
    """What the host signs for one request."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((CONTEXT, method.upper(), path, host, date, nonce, digest)).encode()


def sign(key: Ed25519PrivateKey, host: str, method: str, path: str, body: bytes) -> dict:
    """The headers that sign one request as this host."""
    date, nonce = str(int(time.time())), secrets.token_urlsafe(16)
    signature = key.sign(signed_text(method, path, host, date, nonce, body))
    return {
        HOST: host,
        DATE: date,
        NONCE: nonce,
        SIGNATURE: base64.b64encode(signature).decode(),
    }


def check(
    public_key: bytes, headers, method: str, path: str, body: bytes, now: float | None = None
) -> str:
    """The request's nonce, once its date and signature are good; SignatureRefused otherwise.
    (The caller makes sure the nonce was never seen before.)"""
    date, nonce = headers.get(DATE, ""), headers.get(NONCE, "")
    if not date.isdigit() or not 16 <= len(nonce) <= 64:
        raise SignatureRefused("no date or nonce")
    if abs((time.time() if now is None else now) - int(date)) > REPLAY_WINDOW:
        raise SignatureRefused(STALE_DATE)
    try:
        signature = base64.b64decode(headers.get(SIGNATURE, ""), validate=True)
        text = signed_text(method, path, headers.get(HOST, ""), date, nonce, body)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, text)
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureRefused("bad signature") from None
    return nonce
