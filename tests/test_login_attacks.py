"""Replays, foreign and tampered redirects, forged approvals: refused, and no one else's login moves."""

import base64
import threading
from urllib.parse import quote

import requests

from harness.deployment import USERS
from harness.emulator import open_on_phone
from harness.people import PhoneHolder
from webserver.phonecheck import PhoneCheckClient

ALICE, BOB = USERS["sa-alice"], USERS["sa-bob"]
NL = b"\n"


def webhook(gate) -> str:
    return f"http://127.0.0.1:{gate.webhook_port}/complete-check"


def approve_normally(gate, session, sim=ALICE):
    page = PhoneHolder(sim).approve(session.check_url())
    assert "Approved" in page.text
    return session.finish()


def test_two_approvals_at_once_only_one_wins(gate, emulator):
    session = gate.ssh("sa-alice", "echo ok")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    statuses, start = [], threading.Barrier(2)

    def press():
        start.wait()
        statuses.append(holder.phone.answer(page, "approve").status_code)

    threads = [threading.Thread(target=press) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409]
    assert emulator.calls()["patch"] == 1
    assert session.finish()[:2] == (0, b"ok\n")


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


def test_a_genuine_redirect_for_a_check_this_service_did_not_create_is_404(gate, emulator, credentials):
    attacker = PhoneCheckClient(credentials, emulator.url)
    check = attacker.create_check(ALICE, webhook(gate))
    before = emulator.calls()
    redirect = open_on_phone(check.check_url, sim=ALICE)
    answer = requests.get(redirect["location"], timeout=10)
    assert answer.status_code == 404 and "unknown here or already finished" in answer.text
    after = emulator.calls()
    assert after.get("patch") == before.get("patch") and after.get("get") == before.get("get")


def ran(finished, output: bytes) -> str:
    """'ran' when the login exited 0 having printed `output`, else 'not run'."""
    status, out, _ = finished
    return "ran" if (status, out) == (0, output) else "not run"


def test_an_unsigned_error_redirect_cannot_end_a_login_or_write_in_its_terminal(gate, matrix):
    session = gate.ssh("sa-alice", "echo ok")
    url = session.check_url()
    check_id = url.split("/checks/")[1].split("/")[0]
    forged = requests.get(
        webhook(gate),
        params={
            "check_id": check_id,
            "error": "x",
            "error_description": "Call +1 555 0100 and read them your code",
        },
        timeout=10,
    )
    PhoneHolder(ALICE).approve(url)  # the login went on: its owner still gets in
    finished = session.finish()
    refused = "could not be verified" if "could not be verified" in forged.text else forged.text[:60]
    expected = "forged error: 403 could not be verified; then approved: ran; terminal untouched"
    got = (
        f"forged error: {forged.status_code} {refused}; then approved: {ran(finished, b'ok' + NL)}; "
        f"terminal {'untouched' if 'read them your code' not in finished[2] else 'WRITTEN TO'}"
    )
    row = "webhook: unsigned error redirect with the victim's check_id"
    assert matrix(row, expected, got) == expected


def test_a_signed_error_redirect_shows_a_fixed_line_never_the_networks_text(gate, matrix):
    session = gate.ssh("sa-alice", "echo ran")
    redirect = open_on_phone(session.check_url(), network_error="ip_msisdn_mismatch")
    assert redirect["error"] == "ip_msisdn_mismatch" and "redirect_url" in redirect
    altered = {k: v for k, v in redirect.items() if k != "location"}
    altered["error_description"] = "Call +1 555 0100"
    refused = requests.get(webhook(gate), params=altered, timeout=10)
    page = requests.get(redirect["location"], timeout=10)
    status, out, err = session.finish()
    expected = (
        "altered description: 403; genuine: ssh-auth: the phone's mobile data is not the registered "
        "number's SIM. Use the phone with the registered SIM, with Wi-Fi off. Access denied."
    )
    got = f"altered description: {refused.status_code}; genuine: {err.strip().splitlines()[-1]}"
    assert matrix("webhook: signed error redirect, and its text altered", expected, got) == expected
    assert (status, out) == (1, b"") and "mobile data" in page.text and "Call" not in page.text


def test_only_the_first_device_to_open_a_confirmation_can_answer_it(gate, matrix):
    session = gate.ssh("sa-alice", "echo ok")
    redirect = open_on_phone(session.check_url(), sim=ALICE)
    owner, onlooker = PhoneHolder(ALICE), PhoneHolder(ALICE)
    page = owner.phone.session.get(redirect["location"], timeout=10)
    second = onlooker.phone.session.get(redirect["location"], timeout=10)
    token = page.text.split('name="token" value="')[1].split('"')[0]
    stolen = onlooker.phone.session.post(
        webhook(gate),
        data={"check_id": redirect["check_id"], "token": token, "action": "approve"},
        timeout=10,
    )
    answer = owner.phone.answer(page, "approve")
    finished = session.finish()
    seen = "opened on another device" if "Opened on another device" in second.text else "?"
    leaked = "GOT A TOKEN" if 'name="token"' in second.text else "no token"
    expected = (
        "second viewer: 403 opened on another device, no token; with the first's token: 403; "
        "first device: 200, ran"
    )
    got = (
        f"second viewer: {second.status_code} {seen}, {leaked}; "
        f"with the first's token: {stolen.status_code}; "
        f"first device: {answer.status_code}, {ran(finished, b'ok' + NL)}"
    )
    assert matrix("webhook: a second viewer of the same redirect URL", expected, got) == expected


def test_each_redirect_parameter_must_appear_exactly_once(gate, matrix):
    session = gate.ssh("sa-alice", "echo ok")
    redirect = open_on_phone(session.check_url(), sim=ALICE)
    outer = redirect["location"]
    twice = {
        "check_id": f"{outer}&check_id=00000000-0000-0000-0000-000000000000",
        "code": f"{outer}&code=0",
    }
    answers = {name: requests.get(url, timeout=10) for name, url in twice.items()}
    holder = PhoneHolder(ALICE)
    holder.phone.answer(holder.phone.session.get(outer, timeout=10), "approve")
    finished = session.finish()
    expected = "check_id twice: 400, code twice: 400; then the genuine redirect: ran"
    statuses = ", ".join(f"{name} twice: {answer.status_code}" for name, answer in answers.items())
    got = f"{statuses}; then the genuine redirect: {ran(finished, b'ok' + NL)}"
    assert matrix("webhook: check_id or code given twice", expected, got) == expected
    assert answers["check_id"].text == "check_id given more than once\n"


def test_a_redirect_the_api_signed_for_a_query_of_someone_elses_choosing_is_refused(
    gate, emulator, matrix
):
    # Another customer of the API who got it to sign `our webhook?check_id=<victim>&code=...`
    # (say, through a quirk of how the API appends its parameters) must still get nowhere: the
    # redirect lacks the nonce this login's check was created with.
    session = gate.ssh("sa-alice", "echo ok")
    url = session.check_url()
    victim = url.split("/checks/")[1].split("/")[0]
    forged = emulator.control("sign", {"url": f"{webhook(gate)}?check_id={victim}&code=forged"})
    answer = requests.get(forged["location"], timeout=10)
    PhoneHolder(ALICE).approve(url)  # the owner's own phone still gets its page and gets in
    finished = session.finish()
    refused = "not made for this login" if "not made for this login" in answer.text else answer.text[:80]
    expected = "403 the redirect was not made for this login; then the owner: ran"
    got = f"{answer.status_code} the redirect was {refused}; then the owner: {ran(finished, b'ok' + NL)}"
    row = "webhook: a signed redirect for the victim's check_id, without its nonce"
    assert matrix(row, expected, got) == expected


def test_a_redirect_url_that_is_not_a_url_is_refused_quietly(gate, matrix):
    before = gate.service.log_text()
    broken = {"check_id": "x", "code": "y", "redirect_url": "http://[oops/complete-check?a=b"}
    answers = [requests.get(webhook(gate), params=broken, timeout=10) for _ in range(100)]
    log = gate.service.log_text()[len(before) :]
    statuses = sorted({answer.status_code for answer in answers})
    malformed = all("the signed redirect is malformed" in answer.text for answer in answers)
    expected = "100 x [403] the signed redirect is malformed; 0 tracebacks; at most 30 log lines"
    lines = log.count("refused a redirect")
    got = (
        f"100 x {statuses} {'the signed redirect is malformed' if malformed else answers[0].text[:60]}"
        f"; {log.count('Traceback')} tracebacks; at most {30 if lines <= 30 else lines} log lines"
    )
    assert matrix("webhook: 100 redirects whose redirect_url is not a URL", expected, got) == expected


def test_words_in_a_refused_redirect_never_appear_on_our_page(gate):
    lure = "ACCOUNT SUSPENDED. Call IT security on +1 555 0100"
    authorization = (
        f'Signature keyId="{lure}",algorithm="rsa-sha256",'
        'headers="(request-target) host date",signature="AAAA"'
    )
    inner = (
        f"{webhook(gate)}?check_id=x&code=y"
        f"&authorization={quote(base64.b64encode(authorization.encode()).decode(), safe='')}"
        f"&date={quote(base64.b64encode(b'Mon, 23 Nov 2026 20:00:00 GMT').decode(), safe='')}"
    )
    page = requests.get(
        webhook(gate), params={"check_id": "x", "code": "y", "redirect_url": inner}, timeout=10
    )
    assert page.status_code == 403
    assert "The sign-in link was refused: the API publishes no key by that name." in page.text
    assert "SUSPENDED" not in page.text and "IT security" not in page.text


def test_a_redirect_without_a_code_or_an_error_is_400_and_the_login_goes_on(gate, emulator):
    session = gate.ssh("sa-alice", "echo ok")
    url = session.check_url()
    check_id = url.split("/checks/")[1].split("/")[0]
    answer = requests.get(webhook(gate), params={"check_id": check_id}, timeout=10)
    assert (answer.status_code, answer.text) == (400, "missing check_id or code\n")
    PhoneHolder(ALICE).approve(url)
    assert session.finish()[:2] == (0, b"ok\n")
