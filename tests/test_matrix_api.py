"""The attack/fault matrix, the API's side: its faults in both failmodes, the network, the phone."""

import datetime
import http.server
import ipaddress
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from emulator.models import NETWORK_ERRORS
from harness.deployment import USERS, Gate
from harness.outcomes import attempt, denied, outcome
from harness.people import PhoneHolder
from harness.processes import free_port

ALICE, BOB = USERS["sa-alice"], USERS["sa-bob"]


# --- create-time faults, in both failmodes ------------------------------------------------


@pytest.fixture
def secure(deployments, emulator):
    """The default deployment."""
    return deployments.get({})


@pytest.fixture
def safe(deployments, emulator):
    """The shared deployment with {"failmode": "safe"}."""
    return deployments.get({"failmode": "safe"})


DOWN, FAILSAFE = (
    "denied: the phone check service cannot be reached right now. Access denied.",
    "allowed: the phone check service is unreachable; let in by failmode = safe.",
)

CREATE_FAULTS = [
    ("API answers 500", {"endpoint": "create", "mode": "status", "status": 500}, DOWN, FAILSAFE),
    ("API answers 503", {"endpoint": "create", "mode": "status", "status": 503}, DOWN, FAILSAFE),
    # Answers an on-path attacker can fake more cheaply than taking the API down never let in.
    ("API times out", {"endpoint": "create", "mode": "timeout", "seconds": 15}, DOWN, DOWN),
    ("API drops the connection", {"endpoint": "create", "mode": "close"}, DOWN, DOWN),
    (
        "token endpoint answers 500",
        {"endpoint": "token", "mode": "status", "status": 500},
        DOWN,
        FAILSAFE,
    ),
    (
        "API sends a non-JSON body",
        {"endpoint": "create", "mode": "garbage"},
        "denied: the phone check could not be started (bad answer). Access denied.",
        None,
    ),
    (
        "API sends JSON missing fields",
        {"endpoint": "create", "mode": "partial"},
        "denied: the phone check could not be started (bad answer). Access denied.",
        None,
    ),
    (
        "API rate-limits: 429 Retry-After 30",
        {"endpoint": "create", "mode": "status", "status": 429, "retry_after": 30},
        "denied: the phone check service is busy; try again in 30 s. Access denied.",
        None,
    ),
    (
        "API wants payment: 402",
        {"endpoint": "create", "mode": "status", "status": 402},
        "denied: the phone check could not be started (HTTP 402). Access denied.",
        None,
    ),
    (
        "API refuses the credentials: token 401",
        {"endpoint": "token", "mode": "status", "status": 401},
        "denied: the phone check could not be started (HTTP 401). Access denied.",
        None,
    ),
]


@pytest.mark.parametrize("failmode", ["secure", "safe"])
@pytest.mark.parametrize(
    "name, fault, secure_expected, safe_expected", CREATE_FAULTS, ids=[row[0] for row in CREATE_FAULTS]
)
def test_create_time_fault(
    request, matrix, emulator, failmode, name, fault, secure_expected, safe_expected
):
    gate = request.getfixturevalue(failmode)
    expected = secure_expected if failmode == "secure" or safe_expected is None else safe_expected
    emulator.fault(**fault)
    session, marker = attempt(gate)
    got = matrix(f"at create: {name} (failmode = {failmode})", expected, outcome(session, marker))
    assert got == expected


@pytest.mark.parametrize("failmode, expected", [("secure", DOWN), ("safe", FAILSAFE)])
def test_api_refusing_connections(emulator_server, matrix, failmode, expected):
    settings = {"failmode": failmode, "api_base_url": f"http://127.0.0.1:{free_port()}"}
    with Gate(emulator_server, settings=settings, users={"sa-alice": ALICE}) as gate:
        session, marker = attempt(gate)
        got = matrix(
            f"at create: API refuses connections (failmode = {failmode})",
            expected,
            outcome(session, marker),
        )
    assert got == expected


@pytest.fixture
def untrusted_tls_api(tmp_path):
    """An HTTPS server on loopback whose certificate nobody signed (an on-path attacker's)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "attacker.pem"
    pem.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_an_untrusted_tls_certificate_never_opens_failmode_safe(
    emulator_server, matrix, untrusted_tls_api
):
    settings = {"failmode": "safe", "api_base_url": untrusted_tls_api}
    with Gate(emulator_server, settings=settings, users={"sa-alice": ALICE}) as gate:
        session, marker = attempt(gate)
        expected = "denied: the phone check service cannot be reached right now. Access denied."
        got = matrix(
            "at create: API's TLS certificate not trusted (failmode = safe)",
            expected,
            outcome(session, marker),
        )
    assert got == expected


# --- after creation: errors never let anyone in ---------------------------------------------


@pytest.mark.parametrize("failmode", ["secure", "safe"])
def test_patch_failing_at_approve_denies_in_both_failmodes(request, matrix, emulator, failmode):
    gate = request.getfixturevalue(failmode)
    session, marker = attempt(gate)
    url = session.check_url()
    emulator.fault("patch", "status", status=500)
    page = PhoneHolder(ALICE).approve(url)
    expected = "denied: the phone check could not be completed (500). Access denied."
    got = matrix(
        f"while waiting: PATCH answers 500 (failmode = {failmode})", expected, outcome(session, marker)
    )
    assert got == expected and page.status_code == 502


def test_get_failing_while_waiting_then_approve(secure, matrix, emulator):
    session, marker = attempt(secure)
    url = session.check_url()
    emulator.fault("get", "status", status=500, count=10)
    time.sleep(11)  # the fallback GET runs (and fails) after 10 s
    PhoneHolder(ALICE).approve(url)
    expected = "allowed: approved on your phone."
    got = matrix(
        "while waiting: fallback GET fails, then the phone approves", expected, outcome(session, marker)
    )
    assert got == expected
    assert emulator.calls()["get"] >= 1


# --- the network and the phone ----------------------------------------------------------------


NETWORK_LINES = {
    "not_mobile_ip": (
        "the phone was not on mobile data. Turn off Wi-Fi on the phone and try again. Access denied."
    ),
    "ip_msisdn_mismatch": (
        "the phone's mobile data is not the registered number's SIM. Use the phone with the "
        "registered SIM, with Wi-Fi off. Access denied."
    ),
    "mno_not_supported": (
        "the mobile network of the registered number does not support SIM checks; ask your "
        "administrator. Access denied."
    ),
}


@pytest.mark.parametrize("code", sorted(NETWORK_ERRORS))
def test_network_error(secure, matrix, emulator, code):
    session, marker = attempt(secure)
    page = PhoneHolder(ALICE).scan(session.check_url(), network_error=code)
    expected = denied(NETWORK_LINES[code]) + "; the phone: turn off Wi-Fi"
    advice = "turn off Wi-Fi" if "Turn off Wi-Fi" in page.text else page.text[:60]
    got = matrix(f"network: ERROR {code}", expected, f"{outcome(session, marker)}; the phone: {advice}")
    assert got == expected


def test_wrong_sim(secure, matrix, emulator):
    session, marker = attempt(secure)
    PhoneHolder(BOB).approve(session.check_url())
    expected = (
        "denied: No match: the phone that answered is not using the registered SIM. Access denied."
    )
    assert matrix("phone: wrong SIM", expected, outcome(session, marker)) == expected


def test_deny_on_the_phone(secure, matrix, emulator):
    session, marker = attempt(secure)
    PhoneHolder(ALICE).deny(session.check_url())
    expected = "denied: the login was denied on the phone. Access denied."
    assert matrix("phone: Deny", expected, outcome(session, marker)) == expected


@pytest.fixture
def matching(deployments, emulator):
    """The shared deployment with {"number_match": "true"}."""
    return deployments.get({"number_match": "true"})


def test_wrong_pick_under_number_match(matching, matrix, emulator):
    session, marker = attempt(matching)
    number = session.wait_for(r"pick the number (\d\d)\.").group(1)
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    holder.phone.answer(page, "approve", next(n for n in holder.phone_picks(page) if n != number))
    expected = "denied: the wrong number was picked on the phone. Access denied."
    assert matrix("phone: wrong pick under number_match", expected, outcome(session, marker)) == expected


@pytest.fixture
def short(deployments, emulator):
    """The shared deployment with {"ttl": 10}."""
    return deployments.get({"ttl": 10})


def test_never_opened_expires(short, matrix, emulator):
    started = time.monotonic()
    session, marker = attempt(short)
    session.check_url()
    got = outcome(session, marker)
    waited = time.monotonic() - started
    expected = "denied: the phone check expired before it was completed. Access denied. (after 10-20 s)"
    got = f"{got} (after {'10-20' if 9 < waited < 20 else round(waited)} s)"
    assert matrix("phone: never opened (ttl = 10)", expected, got) == expected
