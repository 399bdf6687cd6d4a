"""Replays, foreign and tampered redirects, forged approvals: refused, and no one else's login moves."""

import threading
from urllib.parse import urlencode

import requests

from webserver.phonecheck import PhoneCheckClient

from .emulator_fixture import open_on_phone
from .gate import USERS, PhoneHolder

ALICE, BOB = USERS["sa-alice"], USERS["sa-bob"]


def webhook(gate) -> str:
    return f"http://127.0.0.1:{gate.webhook_port}/complete-check"


def approve_normally(gate, session, sim=ALICE):
    page = PhoneHolder(sim).approve(session.check_url())
    assert "Approved" in page.text
    return session.finish()


def test_approving_twice_is_already_used(gate, emulator):
    session = gate.ssh("sa-alice", "echo ok")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    assert holder.phone.answer(page, "approve").status_code == 200
    again = holder.phone.answer(page, "approve")
    assert again.status_code == 409 and "already approved" in again.text
    assert session.finish()[:2] == (0, b"ok\n")
    assert emulator.calls()["patch"] == 1


def test_two_approvals_at_once_only_one_wins(gate, emulator):
    session = gate.ssh("sa-alice", "echo ok")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    statuses, start = [], threading.Barrier(2)

    def press():
        start.wait()
        statuses.append(PhoneHolder(ALICE).phone.answer(page, "approve").status_code)

    threads = [threading.Thread(target=press) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409]
    assert emulator.calls()["patch"] == 1
    assert session.finish()[:2] == (0, b"ok\n")


def test_a_page_token_cannot_approve_another_users_login(gate):
    alice = gate.ssh("sa-alice", "echo alice-ran")
    bob = gate.ssh("sa-bob", "echo bob")
    alice_page = PhoneHolder(ALICE).scan(alice.check_url())
    bob_url = bob.check_url()
    bob_page = PhoneHolder(BOB).scan(bob_url)
    bob_check = bob_url.split("/checks/")[1].split("/")[0]
    token = alice_page.text.split('name="token" value="')[1].split('"')[0]
    forged = requests.post(
        webhook(gate), data={"check_id": bob_check, "token": token, "action": "approve"}, timeout=10
    )
    assert forged.status_code == 403 and "not valid for this login" in forged.text
    assert PhoneHolder(BOB).phone.answer(bob_page, "approve").status_code == 200
    assert bob.finish()[:2] == (0, b"bob\n")
    PhoneHolder(ALICE).phone.answer(alice_page, "deny")
    assert alice.finish()[:2] == (1, b"")


def test_a_post_without_the_page_token_is_refused_and_the_login_goes_on(gate):
    session = gate.ssh("sa-alice", "echo ok")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    check_id = session.check_url().split("/checks/")[1].split("/")[0]
    for data in (
        {"check_id": check_id, "action": "approve"},
        {"check_id": check_id, "action": "approve", "token": "guess"},
    ):
        refused = requests.post(webhook(gate), data=data, timeout=10)
        assert refused.status_code == 403
    assert holder.phone.answer(page, "approve").status_code == 200
    assert session.finish()[:2] == (0, b"ok\n")


def test_tampered_redirects_are_refused_and_the_login_goes_on(gate, emulator):
    session = gate.ssh("sa-alice", "echo ok")
    redirect = open_on_phone(session.check_url(), sim=ALICE)
    base = {k: redirect[k] for k in ("check_id", "code", "redirect_url")}
    cases = [
        ({**base, "code": "0" * 32}, 403, "check_id or code differ"),
        ({"check_id": base["check_id"], "code": base["code"]}, 403, "carries no signature"),
        (
            {**base, "redirect_url": base["redirect_url"].replace("check_id=", "check_id=x")},
            403,
            "signature is not valid",
        ),
        ({"check_id": base["check_id"]}, 400, "missing check_id or code"),
    ]
    for params, status, words in cases:
        answer = requests.get(webhook(gate), params=params, timeout=10)
        assert (answer.status_code, words in answer.text) == (status, True), params
    assert emulator.calls().get("patch") is None
    page = requests.get(redirect["location"], timeout=10)
    assert "Approve this SSH login?" in page.text
    assert PhoneHolder(ALICE).phone.answer(page, "approve").status_code == 200
    assert session.finish()[:2] == (0, b"ok\n")


def test_a_redirect_signed_for_another_webhook_is_refused(gate, emulator, credentials):
    session = gate.ssh("sa-alice", "echo ran")
    session.check_url()
    attacker = PhoneCheckClient(credentials, emulator.url)
    check = attacker.create_check(ALICE, "https://attacker.example.test/complete-check")
    redirect = open_on_phone(check.check_url, sim=ALICE)
    query = urlencode({k: redirect[k] for k in ("check_id", "code", "redirect_url")})
    answer = requests.get(f"{webhook(gate)}?{query}", timeout=10)
    assert answer.status_code == 403 and "signed for another webhook" in answer.text
    PhoneHolder(ALICE).deny(session.check_url())
    assert session.finish()[:2] == (1, b"")


def test_a_genuine_redirect_for_a_check_this_service_did_not_create_is_404(gate, emulator, credentials):
    attacker = PhoneCheckClient(credentials, emulator.url)
    check = attacker.create_check(ALICE, webhook(gate))
    before = emulator.calls()
    redirect = open_on_phone(check.check_url, sim=ALICE)
    answer = requests.get(redirect["location"], timeout=10)
    assert answer.status_code == 404 and "unknown here or already finished" in answer.text
    after = emulator.calls()
    assert after.get("patch") == before.get("patch") and after.get("get") == before.get("get")
