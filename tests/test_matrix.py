"""The attack/fault matrix through real sshd + real ssh: each row asserts the outcome and message."""

import base64
import datetime
import html
import http.server
import ipaddress
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from emulator.models import NETWORK_ERRORS
from harness.deployment import USERS, Gate
from harness.emulator import Emulator, open_on_phone
from harness.people import PhoneHolder
from harness.processes import free_port, run, send_through
from webserver.phonecheck import PhoneCheckClient

ALICE, BOB = USERS["sa-alice"], USERS["sa-bob"]


def denied(reason: str) -> str:
    return f"denied: {reason}"


def allowed(reason: str) -> str:
    return f"allowed: {reason}"


def attempt(gate, user="sa-alice", options=()):
    """Start a login whose command leaves a mark only if it runs."""
    marker = f"/tmp/sa-ran-{uuid.uuid4().hex}"
    return gate.ssh(user, f"touch {marker}", options=options), marker


def outcome(session, marker, timeout=60) -> str:
    """'allowed: <line>' or 'denied: <line>' from what the user saw; anything odd is BROKEN."""
    status, out, err = session.finish(timeout=timeout)
    ran = os.path.exists(marker)
    lines = [line for line in err.strip().splitlines() if line.startswith("ssh-auth: ")]
    last = lines[-1].removeprefix("ssh-auth: ") if lines else "(no ssh-auth line)"
    if status == 0 and ran:
        return allowed(last)
    if status == 1 and not ran:
        return denied(last)
    return f"BROKEN: exit {status}, command ran: {ran}, saw: {err!r}"


def refusal(page, marker: str, words: str, label: str) -> str:
    """How the phone's page refused, and whether the command ran anyway."""
    reason = label if words in page.text else page.text[:80]
    ran = "ran" if os.path.exists(marker) else "not run"
    return f"refused {page.status_code}: {reason}; command {ran}"


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


def test_replayed_approve(secure, matrix, emulator):
    session, marker = attempt(secure)
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    holder.phone.answer(page, "approve")
    replay = holder.phone.answer(page, "approve")
    expected = "allowed: approved on your phone.; replay 409; PATCHed once"
    got = (
        f"{outcome(session, marker)}; replay {replay.status_code}; "
        f"PATCHed {'once' if emulator.calls().get('patch') == 1 else emulator.calls().get('patch')}"
    )
    assert matrix("phone: replayed approve", expected, got) == expected


def test_a_page_token_for_another_users_check(secure, matrix, emulator):
    alice, alice_marker = attempt(secure, "sa-alice")
    bob, bob_marker = attempt(secure, "sa-bob")
    alice_phone = PhoneHolder(ALICE)
    alice_page = alice_phone.scan(alice.check_url())
    bob_check = bob.check_url().split("/checks/")[1].split("/")[0]
    token = alice_page.text.split('name="token" value="')[1].split('"')[0]
    forged = requests.post(
        f"http://127.0.0.1:{secure.webhook_port}/complete-check",
        data={"check_id": bob_check, "token": token, "action": "approve"},
        timeout=10,
    )
    PhoneHolder(BOB).deny(bob.check_url())
    alice_phone.phone.answer(alice_page, "deny")
    expected = f"forged {403}; bob denied: the login was denied on the phone. Access denied."
    got = f"forged {forged.status_code}; bob {outcome(bob, bob_marker)}"
    outcome(alice, alice_marker)
    assert matrix("webhook: alice's page token used on bob's check", expected, got) == expected


def _redirect_with(location: str, **changes) -> str:
    query = dict(parse_qsl(urlsplit(location).query))
    query.update(changes)
    return f"{location.split('?')[0]}?{urlencode({k: v for k, v in query.items() if v is not None})}"


def _swap_kid(location: str) -> str:
    query = dict(parse_qsl(urlsplit(location).query))
    inner = query["redirect_url"]
    head, _, tail = inner.partition("&authorization=")
    value, _, rest = tail.partition("&")
    text = base64.b64decode(value.replace("%2B", "+").replace("%2F", "/").replace("%3D", "="))
    forged = text.decode().replace('keyId="emulator-', 'keyId="attacker-')
    query["redirect_url"] = (
        f"{head}&authorization={quote(base64.b64encode(forged.encode()).decode(), safe='')}&{rest}"
    )
    return f"{location.split('?')[0]}?{urlencode(query)}"


TAMPERING = [
    (
        "signature changed",
        lambda loc: _redirect_with(
            loc,
            redirect_url=dict(parse_qsl(urlsplit(loc).query))["redirect_url"].replace(
                "check_id=", "check_id=0"
            ),
        ),
        "signature is not valid",
    ),
    (
        "code changed",
        lambda loc: _redirect_with(loc, code="0" * 32),
        "check_id or code differ from what the API signed",
    ),
    ("kid changed", _swap_kid, "the API publishes no key"),
    (
        "no redirect_url (require_signature)",
        lambda loc: _redirect_with(loc, redirect_url=None),
        "the redirect carries no signature",
    ),
]


@pytest.mark.parametrize("name, tamper, words", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampered_redirect(secure, matrix, emulator, name, tamper, words):
    session, marker = attempt(secure)
    redirect = open_on_phone(session.check_url(), sim=ALICE)
    answer = requests.get(tamper(redirect["location"]), timeout=10)
    refused = f"{answer.status_code} {'with reason' if words in answer.text else answer.text[:80]}"
    holder = PhoneHolder(ALICE)
    page = holder.phone.session.get(redirect["location"], timeout=10)  # the genuine one still works
    holder.phone.answer(page, "approve")
    expected = "refused 403 with reason; then allowed: approved on your phone."
    got = f"refused {refused}; then {outcome(session, marker)}"
    assert matrix(f"webhook: tampered redirect, {name}", expected, got) == expected


def test_redirect_signed_for_another_host(secure, matrix, emulator, credentials):
    session, marker = attempt(secure)
    check = PhoneCheckClient(credentials, emulator.url).create_check(
        ALICE, "https://attacker.example.test/complete-check"
    )
    redirect = open_on_phone(check.check_url, sim=ALICE)
    query = urlsplit(redirect["location"]).query
    answer = requests.get(f"http://127.0.0.1:{secure.webhook_port}/complete-check?{query}", timeout=10)
    PhoneHolder(ALICE).deny(session.check_url())
    expected = "refused 403; then denied: the login was denied on the phone. Access denied."
    got = f"refused {answer.status_code}; then {outcome(session, marker)}"
    assert matrix("webhook: redirect signed for another host", expected, got) == expected


# --- the signing keys: stale date, JWKS down, rotation (an emulator and gate of their own) ----


@pytest.fixture
def keys_gate(tmp_path):
    with (
        Emulator(tmp_path / "emulator.log", "--ttl", "3600") as emulator,
        Gate(emulator, users={"sa-alice": ALICE}) as gate,
    ):
        yield gate


KEY_FAULTS = [
    # (row, how the API's side breaks, words on the refusal page, label)
    (
        "keys: signed date 400 s off",
        lambda emulator: emulator.advance(400),
        "more than 300 s",
        "stale date",
    ),
    (
        "keys: JWKS down when the phone arrives",
        lambda emulator: emulator.fault("jwks", "status", status=503, count=5),
        "could not be fetched",
        "keys unavailable",
    ),
]


@pytest.mark.parametrize("row, breaks, words, label", KEY_FAULTS, ids=[k[3] for k in KEY_FAULTS])
def test_key_faults_refuse_the_redirect(keys_gate, matrix, row, breaks, words, label):
    session, marker = attempt(keys_gate)
    url = session.check_url()
    breaks(keys_gate.emulator)
    page = PhoneHolder(ALICE).scan(url)
    session.kill()
    expected = f"refused 403: {label}; command not run"
    assert matrix(row, expected, refusal(page, marker, words, label)) == expected


def test_key_rotation_before_and_right_after_a_fetch(keys_gate, matrix):
    keys_gate.emulator.control("rotate-key")  # before the service's first fetch: no harm
    session, marker = attempt(keys_gate)
    PhoneHolder(ALICE).approve(session.check_url())
    first = outcome(session, marker)
    keys_gate.emulator.control("rotate-key")  # within a minute of the fetch: refused, not let in
    session, marker = attempt(keys_gate)
    page = PhoneHolder(ALICE).scan(session.check_url())
    session.kill()
    expected = "allowed: approved on your phone.; then refused 403: unknown key; command not run"
    got = f"{first}; then {refusal(page, marker, 'publishes no key', 'unknown key')}"
    assert (
        matrix("keys: rotated before the first fetch, then right after one", expected, got) == expected
    )


# --- who is asking: exemptions, registry, names, rate limits, floods --------------------------

POLICY_USERS = {
    "sa-alice": ALICE,
    "sa-dave": None,
    "sa-erin": None,
    "sa-frank": None,
    "sa-odd$": "447700900128",
}


@pytest.fixture(scope="module")
def policy_gate(emulator_server):
    for group in ("sa-ops", "sa-contractors"):
        subprocess.run(["groupadd", "-f", group], check=True)
    settings = {
        "exempt_users": "sa-dave",
        "exempt_groups": "sa-ops, !sa-contractors",
        "max_checks_per_user": "2",
    }
    extra = "user=sa-frank:+44 77009\n# a comment\nuser=sa-ghost:447700900130\n"
    with Gate(
        emulator_server,
        settings=settings,
        users=POLICY_USERS,
        extra_config=extra,
        exempt_networks=("127.0.0.2/32",),
    ) as gate:
        run("usermod", "-a", "-G", "sa-ops", "sa-erin")
        run("usermod", "-a", "-G", "sa-ops,sa-contractors", "sa-frank")
        run("usermod", "-c", "Odd $(id); `reboot` <b>&amp;", "sa-odd$")
        yield gate
        gate.end_sessions()


def test_exempt_user(policy_gate, matrix, emulator):
    session, marker = attempt(policy_gate, "sa-dave")
    expected = "allowed: this account is exempt from the phone check."
    assert matrix("policy: exempt user", expected, outcome(session, marker)) == expected


def test_exempt_group(policy_gate, matrix, emulator):
    session, marker = attempt(policy_gate, "sa-erin")
    expected = "allowed: this account is exempt from the phone check."
    assert matrix("policy: exempt group", expected, outcome(session, marker)) == expected


def test_negated_group_is_not_exempt(policy_gate, matrix, emulator):
    session, marker = attempt(policy_gate, "sa-frank")  # in sa-ops but also !sa-contractors
    # ...and his registry line is malformed: that is not "unregistered" (which policy may allow).
    expected = denied(
        "the phone number registered for this account is not valid; ask your administrator. "
        "Access denied."
    )
    got = outcome(session, marker)
    assert matrix("policy: negated group, malformed registry line", expected, got) == expected


def test_exempt_network_skips_the_check(policy_gate, matrix, emulator):
    session, marker = attempt(policy_gate, "sa-alice", options=("-o", "BindAddress=127.0.0.2"))
    status, _, err = session.finish(timeout=30)
    expected = "exit 0, command ran, no phone check"
    got = (
        f"exit {status}, command {'ran' if os.path.exists(marker) else 'not run'}, "
        f"{'no phone check' if 'ssh-auth' not in err else 'phone check asked'}"
    )
    assert matrix("policy: exempt network (sshd Match Address)", expected, got) == expected
    assert "create" not in emulator.calls()


def test_shell_metacharacters_in_name_and_gecos(policy_gate, matrix, emulator):
    session, marker = attempt(policy_gate, "sa-odd$")
    holder = PhoneHolder("447700900128")
    page = holder.scan(session.check_url())
    shown_raw = "<b>" in page.text or "sa-odd$" not in page.text
    holder.phone.answer(page, "approve")
    expected = "allowed: approved on your phone."
    got = outcome(session, marker)
    assert matrix("names: user 'sa-odd$' with GECOS '$(id); `reboot` <b>'", expected, got) == expected
    assert not shown_raw


def test_rate_limit(policy_gate, matrix, emulator):
    for _ in range(2):
        session, marker = attempt(policy_gate, "sa-alice")
        PhoneHolder(ALICE).deny(session.check_url())
        outcome(session, marker)
    session, marker = attempt(policy_gate, "sa-alice")
    got = outcome(session, marker)
    seconds = re.search(r"again in (\d+) s", got)
    assert seconds and 590 <= int(seconds.group(1)) <= 601, got
    expected = "denied: too many attempts; try again in N s. Access denied."
    got = matrix(
        "policy: third check in 10 minutes (max_checks_per_user = 2)",
        expected,
        got.replace(seconds.group(0), "again in N s"),
    )
    assert got == expected


HOLD_CONNECTIONS = """
import socket, sys, time
held = []
for _ in range(8):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); held.append(s)
print("held", flush=True)
time.sleep(30)
"""


def test_a_flood_of_socket_connections_from_one_uid(secure, matrix, emulator):
    flood = subprocess.Popen(
        [
            "runuser",
            "-u",
            "sa-alice",
            "--",
            "/usr/bin/python3",
            "-c",
            HOLD_CONNECTIONS,
            str(secure.socket),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout.readline() == "held\n"
        session, marker = attempt(secure)
        expected = denied("too many logins are waiting at once. Access denied.")
        got = matrix(
            "socket: 8 connections without a line held by the same uid, then a login",
            expected,
            outcome(session, marker),
        )
    finally:
        flood.kill()
        flood.wait()
        flood.stdout.close()
    assert got == expected


# --- reuse of an approval on the same SSH connection ------------------------------------------


@pytest.fixture
def reuse(deployments, emulator):
    """The shared deployment with {"connection_reuse_seconds": "3"}."""
    return deployments.get({"connection_reuse_seconds": "3"})


def _master(gate):
    control = f"/tmp/sa-cm-{uuid.uuid4().hex[:12]}"
    options = ("-o", "ControlMaster=yes", "-o", f"ControlPath={control}")
    master = gate.ssh("sa-alice", "sleep 60", options=options)
    PhoneHolder(ALICE).approve(master.check_url())
    master.wait_for("approved on your phone")
    return master, ("-o", f"ControlPath={control}", "-o", "ControlMaster=no")


def test_reuse_within_and_past_the_window(reuse, matrix, emulator):
    master, mux = _master(reuse)
    session, marker = attempt(reuse, options=mux)
    within = outcome(session, marker)
    time.sleep(3.5)
    session, marker = attempt(reuse, options=mux)
    session.check_url()  # past the window: a new phone check is asked for
    PhoneHolder(ALICE).deny(session.check_url())
    past = outcome(session, marker)
    master.kill()
    expected = (
        "allowed: approved earlier on this SSH connection.; "
        "past: denied: the login was denied on the phone. Access denied."
    )
    assert (
        matrix(
            "reuse: same connection within, then past, the window", expected, f"{within}; past: {past}"
        )
        == expected
    )


def test_no_reuse_from_a_different_connection(reuse, matrix, emulator):
    master, _ = _master(reuse)
    session, marker = attempt(reuse)  # a new TCP connection: its own check
    PhoneHolder(ALICE).deny(session.check_url())
    expected = "denied: the login was denied on the phone. Access denied."
    got = outcome(session, marker)
    master.kill()
    assert matrix("reuse: another connection gets its own check", expected, got) == expected


BOUND_PROXY = Path(__file__).parent / "fixtures" / "bound-proxy"


def test_an_approval_dies_with_its_connection_even_from_the_same_address_and_port(
    gate, matrix, emulator
):
    source_port = free_port()
    proxy = ("-o", f"ProxyCommand={sys.executable} {BOUND_PROXY} {source_port} %h %p")
    first, first_marker = attempt(gate, options=proxy)
    PhoneHolder(ALICE).approve(first.check_url())
    approved = outcome(first, first_marker)
    second, second_marker = attempt(gate, options=proxy)  # same address, same source port
    asked = second.wait_for(r"(https?://\S+/redirect)|approved earlier on this SSH connection")
    if asked.group(1):
        PhoneHolder(ALICE).deny(asked.group(1))
    again = outcome(second, second_marker)
    same_port = gate.sshd.log_text().count(f"Connection from 127.0.0.1 port {source_port} ")
    expected = (
        "first: allowed: approved on your phone.; then a new TCP connection from the same address "
        "and port 2 times: denied: the login was denied on the phone. Access denied."
    )
    got = (
        f"first: {approved}; then a new TCP connection from the same address and port "
        f"{same_port} times: {again}"
    )
    assert (
        matrix(
            "reuse: the approved connection closed, a new one from its address and port", expected, got
        )
        == expected
    )


# --- forwarding: no way around the ForceCommand ------------------------------------------------


def _forward(gate, flags: list[str], probe) -> str:
    argv = gate.ssh_argv("sa-alice", None, options=("-N", "-o", "ExitOnForwardFailure=yes", *flags))
    session = gate.client(argv)
    time.sleep(1.0)
    result = probe()
    session.kill()
    return result


@pytest.mark.parametrize("kind", ["-L", "-D", "-R", "-W"])
def test_forwarding_is_refused(secure, matrix, emulator, kind):
    local = free_port()
    target = secure.webhook_port  # something that would answer if the forward worked
    if kind == "-L":
        got = _forward(
            secure,
            ["-L", f"{local}:127.0.0.1:{target}"],
            lambda: send_through(local, b"GET /healthz HTTP/1.0\r\n\r\n"),
        )
    elif kind == "-D":
        socks = bytes([4, 1]) + target.to_bytes(2, "big") + bytes([127, 0, 0, 1]) + b"\0"
        got = _forward(secure, ["-D", str(local)], lambda: send_through(local, socks))
    elif kind == "-R":
        session = secure.client(
            secure.ssh_argv(
                "sa-alice",
                None,
                options=("-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{local}:127.0.0.1:{target}"),
            )
        )
        status, _, err = session.finish(timeout=30)
        got = "refused (ssh exited)" if status != 0 and "forwarding failed" in err else err
    else:
        session = secure.client(
            secure.ssh_argv("sa-alice", None, options=("-W", f"127.0.0.1:{target}")),
            stdin=subprocess.PIPE,
        )
        session.process.stdin.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        session.process.stdin.flush()
        status, out, _ = session.finish(timeout=30)
        got = "refused (ssh exited)" if status != 0 and not out else f"OPEN: {out[:40]!r}"
    refused = "refused" if got.startswith("refused") else got  # how it was refused may vary
    assert matrix(f"forwarding: ssh {kind}", "refused", refused) == "refused"


@pytest.fixture
def open_door(deployments, emulator):
    """The shared deployment with {"unregistered": "allow"}."""
    return deployments.get({"unregistered": "allow"})


def test_unregistered_allowed_by_policy(open_door, matrix, emulator):
    session, marker = attempt(open_door, "sa-carol")
    expected = "allowed: no phone is registered for this account; let in by policy."
    got = matrix("policy: unregistered user, unregistered = allow", expected, outcome(session, marker))
    assert got == expected and "create" not in emulator.calls()


def test_an_unreadable_registry_denies_even_under_unregistered_allow(open_door, matrix, emulator):
    moved = open_door.config.with_suffix(".away")
    open_door.config.rename(moved)
    try:
        session, marker = attempt(open_door, "sa-carol")
        got = outcome(session, marker)
    finally:
        moved.rename(open_door.config)
    expected = "denied: the ssh-auth service cannot read its user registry. Access denied."
    assert matrix("policy: registry missing, unregistered = allow", expected, got) == expected
    assert "create" not in emulator.calls()


def test_control_and_bidi_characters_are_shown_as_escapes_never_sent(secure, matrix, emulator):
    marker = f"/tmp/sa-ran-{uuid.uuid4().hex}"
    hostile = "\x1b]0;owned\x07\x1b[2J\u202e\u2066"  # title, clear screen, bidi overrides
    session = secure.ssh("sa-alice", f"true '{hostile}'; touch {marker}")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    on_page = [f"U+{ord(c):04X}" for c in "\x1b\x07\u202e\u2066" if c in page.text]
    shown = html.unescape(re.search(r'<dd class="command">(.*?)</dd>', page.text, re.S).group(1))
    holder.phone.answer(page, "deny")
    outcome(session, marker)
    in_log = [f"U+{ord(c):04X}" for c in "\x1b\x07\u202e\u2066" if c in secure.service.log_text()]
    expected = (
        "page clean, log clean; the command is shown as: "
        "true '\\x1b]0;owned\\x07\\x1b[2J\\u202e\\u2066'; touch /tmp/sa-ran-…"
    )
    shown = shown.replace(marker, "/tmp/sa-ran-…")
    got = f"page {on_page or 'clean'}, log {in_log or 'clean'}; the command is shown as: {shown}"
    assert matrix("output: control and bidi characters in the command", expected, got) == expected


def test_a_command_too_long_to_show_on_the_phone_is_refused(secure, matrix, emulator):
    marker = f"/tmp/sa-ran-{uuid.uuid4().hex}"
    session = secure.ssh("sa-alice", "uptime" + " " * 4100 + f"; touch {marker}")
    expected = denied(
        f"the command is too long to show on the phone ({4100 + 6 + 8 + len(marker)} characters; "
        "at most 4096). Access denied."
    )
    got = matrix("output: a command too long to show on the phone", expected, outcome(session, marker))
    assert got == expected and "create" not in emulator.calls()


def test_allow_once_lets_in_until_it_expires(secure, matrix, emulator):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ssh-auth"),
            "allow-once",
            "--config",
            str(secure.config),
            "sa-alice",
            "--for",
            "1h",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    session, marker = attempt(secure, "sa-alice")
    during = outcome(session, marker)
    text = secure.config.read_text()
    secure.config.write_text(re.sub(r"allow_once=sa-alice:\d+", "allow_once=sa-alice:1", text))
    session, marker = attempt(secure, "sa-alice")
    session.check_url()  # expired: the phone check is back
    PhoneHolder(ALICE).deny(session.check_url())
    after = outcome(session, marker)
    until = re.search(r"until (\d\d:\d\d)\.", during)
    expected = (
        "allowed: an administrator exempted this account from the phone check until HH:MM.; after: "
        + "denied: the login was denied on the phone. Access denied."
    )
    got = f"{during.replace(until.group(1), 'HH:MM') if until else during}; after: {after}"
    assert matrix("policy: allow-once for 1h, then expired", expected, got) == expected
