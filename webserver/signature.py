"""Verifies the API's signed redirect (draft-cavage, rsa-sha256 over the JWKS) and binds it to us."""

import base64
import binascii
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urlsplit

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MAX_CLOCK_SKEW = 300
JWKS_REFETCH_INTERVAL = 60
JWKS_RETRY_WHEN_EMPTY = 5
SIGNED_HEADERS = ("(request-target)", "host", "date")
SIGNATURE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class SignatureError(Exception):
    """The signed redirect is not acceptable; `reason` is a short slug, str() a full sentence."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


REDIRECT_PARAMETERS = ("login", "check_id", "code", "error", "error_description")
# `login` is ours: a per-login nonce in the redirect_url we give the API, echoed in the redirect.


@dataclass(frozen=True)
class VerifiedRedirect:
    """The redirect's parameters as the API signed them: a code on success, an error on failure."""

    check_id: str
    code: str | None = None
    error: str | None = None
    login: str | None = None  # the nonce of the login this redirect was made for


class JwksCache:
    """The API's RSA keys by kid; refetched on an unknown kid at most once a minute."""

    def __init__(self, fetch: Callable[[], dict], clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._fetched_at: float | None = None

    def key(self, kid: str) -> rsa.RSAPublicKey | None:
        """The RSA public key for kid, or None if the API does not publish it."""
        with self._lock:
            if kid not in self._keys and self._may_refetch():
                self._fetched_at = self._clock()
                try:
                    self._keys = _rsa_keys(self._fetch())
                except Exception as error:  # noqa: BLE001 - any fetch failure means "no key"
                    raise SignatureError(
                        "jwks_unavailable", f"the API's signing keys could not be fetched: {error}"
                    ) from None
            return self._keys.get(kid)

    def _may_refetch(self) -> bool:
        if self._fetched_at is None:
            return True
        interval = JWKS_REFETCH_INTERVAL if self._keys else JWKS_RETRY_WHEN_EMPTY
        return self._clock() - self._fetched_at >= interval


def _rsa_keys(document: dict) -> dict[str, rsa.RSAPublicKey]:
    keys = {}
    for jwk in document.get("keys", []):
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not jwk.get("kid"):
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm="RS256").key
        except jwt.PyJWTError:
            continue
        if isinstance(key, rsa.RSAPublicKey):
            keys[str(jwk["kid"])] = key
    return keys


class RedirectVerifier:
    """Checks a phone's redirect to our webhook: signature, key, date, URL binding, parameters."""

    def __init__(self, jwks: JwksCache, webhook_url: str, clock: Callable[[], float] = time.time):
        self.jwks = jwks
        self.webhook = _origin_and_path(webhook_url)
        self.clock = clock

    def verify(self, args: Mapping[str, str]) -> VerifiedRedirect:
        """Verify the outer query's signed `redirect_url`; raise SignatureError with the reason."""
        try:
            return self._verify(args)
        except ValueError:  # a URL urlsplit cannot take apart, e.g. an unclosed IPv6 bracket
            raise SignatureError("malformed", "the signed redirect is not a URL") from None

    def _verify(self, args: Mapping[str, str]) -> VerifiedRedirect:
        outer = {name: _single(args, name) for name in (*REDIRECT_PARAMETERS, "redirect_url")}
        signed_url = outer["redirect_url"]
        if not signed_url:
            raise SignatureError("missing", "the redirect carries no signature (redirect_url)")
        if " " in signed_url:
            raise SignatureError(
                "damaged", "the signed redirect was damaged in transit ('+' decoded as a space)"
            )
        parts = urlsplit(signed_url)
        kept, signed = _split_query(parts.query)
        authorization = _b64_text(signed.get("authorization"), "authorization")
        date = _b64_text(signed.get("date"), "date")
        params = _signature_params(authorization)
        target = f"{parts.path}?{'&'.join(kept)}" if kept else parts.path
        signing_string = "\n".join(
            {
                "(request-target)": f"(request-target): get {target}",
                "host": f"host: {parts.netloc}",
                "date": f"date: {date}",
            }[name]
            for name in params["headers"].split()
        )
        key = self.jwks.key(params["keyId"])
        if key is None:
            raise SignatureError("unknown_key", f"the API publishes no key {params['keyId']!r}")
        try:
            key.verify(
                base64.b64decode(params["signature"]),
                signing_string.encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            raise SignatureError("bad_signature", "the redirect's signature is not valid") from None
        self._check_date(date)
        if _origin_and_path(signed_url) != self.webhook:
            raise SignatureError(
                "wrong_url",
                f"the redirect was signed for another webhook ({_origin_and_path(signed_url)})",
            )
        inner = _signed_parameters(kept)
        if any(inner.get(name) != outer[name] for name in REDIRECT_PARAMETERS):
            raise SignatureError("mismatch", "check_id or code differ from what the API signed")
        return VerifiedRedirect(
            inner["check_id"], inner.get("code"), inner.get("error"), inner.get("login")
        )

    def _check_date(self, date: str) -> None:
        try:
            signed_at = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            raise SignatureError("malformed", "the signed date is not an HTTP date") from None
        if abs(self.clock() - signed_at) > MAX_CLOCK_SKEW:
            raise SignatureError(
                "stale_date", f"the redirect's signed date is more than {MAX_CLOCK_SKEW} s from now"
            )


def _origin_and_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path or '/'}"


def _single(args, name: str) -> str | None:
    """The one value of a query parameter; two of them are refused (which one would count?)."""
    values = args.getlist(name) if hasattr(args, "getlist") else [args[name]] if name in args else []
    if len(values) > 1:
        raise SignatureError("duplicate", f"the redirect carries {name} more than once")
    return values[0] if values else None


def _signed_parameters(kept: list[str]) -> dict[str, str]:
    """check_id and code (or error) from the signed URL: each exactly once."""
    inner: dict[str, str] = {}
    for name, _, value in (item.partition("=") for item in kept):
        name, value = unquote(name), unquote(value)  # '+' is a plus here, never a space
        if name in inner:
            raise SignatureError("duplicate", f"the signed redirect carries {name} more than once")
        inner[name] = value
    if set(inner) - set(REDIRECT_PARAMETERS):
        raise SignatureError("malformed", "the signed redirect carries unknown parameters")
    if not inner.get("check_id") or bool(inner.get("code")) == bool(inner.get("error")):
        raise SignatureError("malformed", "the signed redirect needs check_id and a code or an error")
    return inner


def _split_query(query: str) -> tuple[list[str], dict[str, str]]:
    """Raw query items to keep (as signed), and the decoded authorization/date values."""
    kept, signed = [], {}
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        if unquote(name) in ("authorization", "date"):
            signed[unquote(name)] = unquote(value)  # not unquote_plus: '+' is base64, not space
        else:
            kept.append(item)
    return kept, signed


def _b64_text(value: str | None, name: str) -> str:
    if not value:
        raise SignatureError("missing", f"the signed redirect has no {name}")
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise SignatureError("malformed", f"the signed redirect's {name} is not base64") from None


def _signature_params(authorization: str) -> dict[str, str]:
    text = authorization.strip()
    if text[:10].lower() == "signature ":
        text = text[10:]
    params = dict(SIGNATURE_PARAM.findall(text))
    # Pin the algorithm before anything else: never let the header choose (HMAC-with-public-key).
    if params.get("algorithm", "").lower() != "rsa-sha256":
        raise SignatureError(
            "algorithm", f"the redirect is not signed with rsa-sha256 (got {params.get('algorithm')!r})"
        )
    if not params.get("keyId") or not params.get("signature"):
        raise SignatureError("malformed", "the signature lacks keyId or signature")
    names = params.get("headers", "").lower().split()
    if sorted(names) != sorted(SIGNED_HEADERS):
        raise SignatureError("headers", f"the signature must cover exactly {' '.join(SIGNED_HEADERS)}")
    params["headers"] = " ".join(names)
    return params
