"""The attack/fault matrix, the webhook's side: replays, forged and tampered redirects, signing keys."""

import base64
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
import requests

from harness.deployment import USERS, Gate
from harness.emulator import Emulator, open_on_phone
from harness.outcomes import attempt, outcome, refusal
from harness.people import PhoneHolder
from webserver.phonecheck import PhoneCheckClient

ALICE, BOB = USERS["sa-alice"], USERS["sa-bob"]


@pytest.fixture
def secure(deployments, emulator):
    """The default deployment."""
    return deployments.get({})


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
