"""The signed-redirect verifier: genuine redirects pass, every tampering fails with its own reason."""

import base64
import json
import time
from email.utils import formatdate
from urllib.parse import parse_qsl, quote, urlsplit

import httpsig
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from werkzeug.datastructures import MultiDict

from harness.emulator import open_on_phone
from webserver.signature import JwksCache, RedirectVerifier, SignatureError

WEBHOOK = "https://ssh.example.test/complete-check"
NUMBER = "447700900123"
PUBLISHED = rsa.generate_private_key(public_exponent=65537, key_size=2048)
UNPUBLISHED = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(key, kid):
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def signed_redirect(
    check_id="c-1",
    code="k-1",
    url=WEBHOOK,
    key=PUBLISHED,
    kid="test-a",
    algorithm="rsa-sha256",
    secret=None,
    date=None,
    headers=None,
    encode=True,
):
    """Sign like the API with httpsig (an independent draft-cavage signer); return outer args."""
    inner = f"{url}?check_id={check_id}&code={quote(code, safe='') if encode else code}"
    parts = urlsplit(inner)
    date = date or formatdate(time.time(), usegmt=True)
    signer = httpsig.HeaderSigner(
        kid,
        secret or pem(key),
        algorithm=algorithm,
        headers=headers or ["(request-target)", "host", "date"],
    )
    signed = signer.sign(
        {"host": parts.netloc, "date": date},
        host=parts.netloc,
        method="GET",
        path=f"{parts.path}?{parts.query}",
    )
    signed_inner = (
        f"{inner}&authorization={quote(b64(signed['authorization']), safe='')}"
        f"&date={quote(b64(date), safe='')}"
    )
    return {"check_id": check_id, "code": code, "redirect_url": signed_inner}


def as_received(outer_url: str) -> dict:
    """What a web framework hands the webhook: the outer query decoded once (+ becomes space)."""
    return dict(parse_qsl(urlsplit(outer_url).query))


class CountingJwks:
    def __init__(self, *jwks):
        self.document = {"keys": list(jwks)}
        self.fetches = 0

    def __call__(self):
        self.fetches += 1
        return self.document


@pytest.fixture
def jwks():
    return CountingJwks(jwk_of(PUBLISHED, "test-a"))


@pytest.fixture
def verifier(jwks):
    return RedirectVerifier(JwksCache(jwks), WEBHOOK)


def test_a_genuine_emulator_redirect_verifies(client):
    check = client.create_check(NUMBER, WEBHOOK)
    redirect = open_on_phone(check.check_url, sim=NUMBER)
    verifier = RedirectVerifier(JwksCache(client.jwks), WEBHOOK)
    verified = verifier.verify(as_received(redirect["location"]))
    assert (verified.check_id, verified.code) == (check.check_id, redirect["code"])


def test_a_redirect_signed_by_httpsig_verifies(verifier):
    verified = verifier.verify(signed_redirect())
    assert (verified.check_id, verified.code) == ("c-1", "k-1")


def test_an_emulator_redirect_signed_before_a_key_rotation_is_refused_after(
    private_client, private_emulator
):
    check = private_client.create_check(NUMBER, WEBHOOK)
    redirect = open_on_phone(check.check_url, sim=NUMBER)
    private_emulator.control("rotate-key")
    with pytest.raises(SignatureError) as refused:
        RedirectVerifier(JwksCache(private_client.jwks), WEBHOOK).verify(
            as_received(redirect["location"])
        )
    assert refused.value.reason == "unknown_key"


def test_verifier_follows_a_key_rotation_a_minute_later(private_client, private_emulator):
    now = [0.0]
    verifier = RedirectVerifier(JwksCache(private_client.jwks, clock=lambda: now[0]), WEBHOOK)
    for _ in range(2):
        check = private_client.create_check(NUMBER, WEBHOOK)
        redirect = open_on_phone(check.check_url, sim=NUMBER)
        assert verifier.verify(as_received(redirect["location"])).check_id == check.check_id
        private_emulator.control("rotate-key")
        now[0] += 60
    assert private_emulator.calls()["jwks"] == 2


def _tamper(name):
    args = signed_redirect()
    if name == "changed check_id":
        args["check_id"] = "c-2"
    elif name == "changed code":
        args["code"] = "k-2"
    elif name == "check_id changed inside the signed URL":
        args["redirect_url"] = args["redirect_url"].replace("check_id=c-1", "check_id=c-2")
        args["check_id"] = "c-2"
    elif name == "code changed inside the signed URL":
        args["redirect_url"] = args["redirect_url"].replace("code=k-1", "code=k-2")
        args["code"] = "k-2"
    elif name == "signed for another host":
        args = signed_redirect(url="https://attacker.example.test/complete-check")
    elif name == "signed for another path":
        args = signed_redirect(url="https://ssh.example.test/other-hook")
    elif name == "stale date":
        args = signed_redirect(date=formatdate(time.time() - 330, usegmt=True))
    elif name == "date from the future":
        args = signed_redirect(date=formatdate(time.time() + 330, usegmt=True))
    elif name == "unknown kid":
        args = signed_redirect(kid="test-unknown")
    elif name == "wrong key":
        args = signed_redirect(key=UNPUBLISHED)
    elif name == "HMAC with the public key as secret":
        public_pem = PUBLISHED.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        args = signed_redirect(algorithm="hmac-sha256", secret=public_pem)
    elif name == "signature covers no date":
        args = signed_redirect(headers=["(request-target)", "host"])
    elif name == "dropped signature":
        del args["redirect_url"]
    elif name == "dropped authorization":
        args["redirect_url"] = args["redirect_url"].split("&authorization=")[0]
    elif name == "authorization not base64":
        head, _, tail = args["redirect_url"].partition("&authorization=")
        args["redirect_url"] = head + "&authorization=%25%25%25&" + tail.split("&", 1)[1]
    return args


TAMPERING = [
    ("changed check_id", "mismatch"),
    ("changed code", "mismatch"),
    ("check_id changed inside the signed URL", "bad_signature"),
    ("code changed inside the signed URL", "bad_signature"),
    ("signed for another host", "wrong_url"),
    ("signed for another path", "wrong_url"),
    ("stale date", "stale_date"),
    ("date from the future", "stale_date"),
    ("unknown kid", "unknown_key"),
    ("wrong key", "bad_signature"),
    ("HMAC with the public key as secret", "algorithm"),
    ("signature covers no date", "headers"),
    ("dropped signature", "missing"),
    ("dropped authorization", "missing"),
    ("authorization not base64", "malformed"),
]


@pytest.mark.parametrize("tampering, reason", TAMPERING, ids=[t for t, _ in TAMPERING])
def test_each_tampering_fails_with_its_own_reason(verifier, tampering, reason):
    with pytest.raises(SignatureError) as refused:
        verifier.verify(_tamper(tampering))
    assert refused.value.reason == reason
    assert str(refused.value)


def test_a_plus_in_a_value_survives_both_layers_when_percent_encoded(verifier):
    args = signed_redirect(code="k+1/2=")
    outer = f"{WEBHOOK}?check_id=c-1&code={quote('k+1/2=', safe='')}&redirect_url=" + quote(
        args["redirect_url"], safe=""
    )
    assert verifier.verify(as_received(outer)).code == "k+1/2="


def test_plus_turned_into_space_is_reported_as_damage(verifier):
    # A sender that leaves '+' raw in both layers: the framework decodes it as a space.
    args = signed_redirect(code="k+1", encode=False)
    outer = f"{WEBHOOK}?check_id=c-1&code=k+1&redirect_url=" + quote(args["redirect_url"], safe="+")
    with pytest.raises(SignatureError) as refused:
        verifier.verify(as_received(outer))
    assert refused.value.reason == "damaged"


def test_hs2019_is_refused_by_name(verifier):
    args = signed_redirect()
    head, _, tail = args["redirect_url"].partition("&authorization=")
    value, _, rest = tail.partition("&")
    text = base64.b64decode(value.replace("%2B", "+").replace("%2F", "/").replace("%3D", "="))
    forged = b64(text.decode().replace('algorithm="rsa-sha256"', 'algorithm="hs2019"'))
    args["redirect_url"] = f"{head}&authorization={quote(forged, safe='')}&{rest}"
    with pytest.raises(SignatureError, match="'hs2019'") as refused:
        verifier.verify(args)
    assert refused.value.reason == "algorithm"


def test_unknown_kid_refetches_the_jwks_at_most_once_a_minute(jwks):
    now = [1000.0]
    verifier = RedirectVerifier(JwksCache(jwks, clock=lambda: now[0]), WEBHOOK)
    verifier.verify(signed_redirect())
    assert jwks.fetches == 1
    for _ in range(3):
        with pytest.raises(SignatureError):
            verifier.verify(signed_redirect(kid="test-b", key=UNPUBLISHED))
    assert jwks.fetches == 1  # within the minute: no refetch for an unknown kid
    now[0] += 60
    jwks.document["keys"].append(jwk_of(UNPUBLISHED, "test-b"))
    assert verifier.verify(signed_redirect(kid="test-b", key=UNPUBLISHED)).code == "k-1"
    assert jwks.fetches == 2


def test_a_jwks_that_cannot_be_fetched_is_its_own_reason():
    def down():
        raise ConnectionError("connection refused")

    with pytest.raises(SignatureError) as refused:
        RedirectVerifier(JwksCache(down), WEBHOOK).verify(signed_redirect())
    assert refused.value.reason == "jwks_unavailable"


def test_a_parameter_twice_inside_the_signed_url_is_refused(verifier):
    # Which copy would count? The verifier and the web framework might disagree: refuse both.
    with pytest.raises(SignatureError) as refused:
        verifier.verify(signed_redirect(code="k-1&code=k-2", encode=False))
    assert refused.value.reason == "duplicate"


def test_a_parameter_twice_outside_is_refused(verifier):
    args = MultiDict(signed_redirect())
    args.add("check_id", "c-2")
    with pytest.raises(SignatureError, match="carries check_id more than once"):
        verifier.verify(args)


def test_a_signed_error_redirect_verifies_with_its_error(client):
    check = client.create_check("447700900123", WEBHOOK)
    redirect = open_on_phone(check.check_url, network_error="not_mobile_ip")
    verifier = RedirectVerifier(JwksCache(client.jwks), WEBHOOK)
    verified = verifier.verify(as_received(redirect["location"]))
    assert (verified.check_id, verified.code, verified.error) == (
        check.check_id,
        None,
        "not_mobile_ip",
    )
