"""The phone's pages in a real browser at 390 px: they render, read well, and approve/deny work."""

import pytest

from harness.browser import PHONE_WIDTH, PhoneBrowser
from harness.deployment import USERS

ALICE = USERS["sa-alice"]


@pytest.fixture(scope="module")
def browser():
    phone = PhoneBrowser()
    yield phone
    phone.quit()


def check_page(browser, name: str, *texts: str) -> None:
    """Each page: its key text, no sideways scrolling at 390 px, big buttons, a screenshot."""
    page = browser.text()
    for text in texts:
        assert text in page, f"{text!r} not on the {name} page:\n{page}"
    assert browser.scroll_width() <= PHONE_WIDTH
    assert browser.screenshot(name).stat().st_size > 0


def test_confirmation_page_then_approve(gate, browser):
    session = gate.ssh("sa-alice", "echo ok")
    browser.open(f"{session.check_url()}?sim={ALICE}")
    check_page(
        browser,
        "confirm",
        "Approve this SSH login?",
        "sa-alice",
        "127.0.0.1",
        "echo ok",
        "Approve",
        "Deny — this is not me",
    )
    assert browser.smallest_button_height() >= 48
    browser.press("Approve")
    check_page(
        browser, "result-approved", "Approved", "sa-alice is signing in to", "You can close this page."
    )
    assert session.finish()[:2] == (0, b"ok\n")


def test_confirmation_page_then_deny(gate, browser):
    session = gate.ssh("sa-alice", "echo ran")
    browser.open(f"{session.check_url()}?sim={ALICE}")
    browser.press("Deny — this is not me")
    check_page(browser, "result-denied", "Login denied", "Nobody gets in with this sign-in.")
    assert session.finish()[:2] == (1, b"")


def test_wrong_sim_page_says_what_to_do(gate, browser):
    session = gate.ssh("sa-alice", "echo ran")
    browser.open(f"{session.check_url()}?sim={USERS['sa-bob']}")
    browser.press("Approve")
    check_page(
        browser, "result-no-match", "No match", "Use the phone with the registered SIM, on mobile data."
    )
    assert session.finish()[:2] == (1, b"")


def test_network_error_page_says_turn_off_wifi(gate, browser):
    session = gate.ssh("sa-alice", "echo ran")
    browser.open(f"{session.check_url()}?network_error=not_mobile_ip")
    check_page(
        browser,
        "result-network-error",
        "The network could not confirm your SIM",
        "Turn off Wi-Fi so the phone uses mobile data, then scan again.",
    )
    assert session.finish()[:2] == (1, b"")


def test_an_ended_login_page_says_scan_the_newest_code(gate, browser):
    session = gate.ssh("sa-alice", "echo ok")
    url = f"{session.check_url()}?sim={ALICE}"
    browser.open(url)
    browser.press("Approve")
    assert session.finish()[0] == 0
    browser.driver.back()
    browser.driver.refresh()  # the phone reloads the confirmation page of a finished login
    check_page(
        browser,
        "result-ended",
        "This login has ended",
        "If you are still logging in, scan the newest QR code.",
    )


def test_emulator_phone_page_then_confirmation(gate, browser, emulator):
    session = gate.ssh("sa-alice", "echo ok")
    check_id = session.check_url().split("/checks/")[1].split("/")[0]
    browser.open(f"{emulator.url}/_emulator/phone/{check_id}")
    check_page(
        browser,
        "emulator-phone",
        "Emulated mobile network",
        "…0123",
        "This SIM (the registered number)",
        "Another SIM",
        "On Wi-Fi (no mobile data)",
        f"http://127.0.0.1:{gate.webhook_port}/complete-check",
    )
    assert browser.smallest_button_height() >= 48
    browser.press("This SIM (the registered number)")
    assert "Approve this SSH login?" in browser.text()
    browser.press("Approve")
    assert session.finish()[:2] == (0, b"ok\n")


@pytest.fixture
def matching(deployments, emulator):
    """The shared deployment with {"number_match": "true"}."""
    return deployments.get({"number_match": "true"})


def test_number_pick_page_lets_the_right_number_in(matching, browser):
    session = matching.ssh("sa-alice", "echo ok")
    number = session.wait_for(r"pick the number (\d\d)\.").group(1)
    browser.open(f"{session.check_url()}?sim={ALICE}")
    check_page(
        browser,
        "confirm-number",
        "Pick the number shown in your terminal:",
        number,
        "Deny — this is not me",
    )
    assert browser.smallest_button_height() >= 48
    browser.press(number)
    assert "Approved" in browser.text()
    assert session.finish()[:2] == (0, b"ok\n")
