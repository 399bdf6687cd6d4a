"""The gated login through a real sshd and the real ssh client: what users see, end to end."""

import os
import subprocess

import pytest

from harness.deployment import USERS
from harness.people import PhoneHolder

ALICE, BOB = USERS["sa-alice"], USERS["sa-bob"]


def test_approved_login_runs_the_command(gate):
    session = gate.ssh("sa-alice", "echo ok")
    page = PhoneHolder(ALICE).approve(session.check_url())
    assert "Approved" in page.text
    status, out, err = session.finish()
    assert (status, out) == (0, b"ok\n")
    assert err.endswith("ssh-auth: approved on your phone.\n")
    assert "login allowed user=sa-alice" in gate.service.log_text()


def test_approved_interactive_session_gets_a_login_shell(gate):
    session = gate.ssh("sa-alice", tty=True, stdin=subprocess.PIPE)
    PhoneHolder(ALICE).approve(session.check_url())
    session.wait_for("approved on your phone")
    session.process.stdin.write(b"echo shell=$0 sum=$((20+22)); exit 7\n")
    session.process.stdin.flush()
    status, out, _ = session.finish()
    assert status == 7
    assert "shell=-bash sum=42" in out.decode()


def test_the_confirmation_page_shows_what_is_approved(gate):
    session = gate.ssh("sa-alice", "echo ok")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    for shown in ("Approve this SSH login?", "sa-alice", "127.0.0.1", "echo ok", "Deny"):
        assert shown in page.text
    holder.phone.answer(page, "deny")
    session.finish()


def test_unregistered_user_is_denied_without_a_check(gate, emulator):
    status, out, err = gate.ssh("sa-carol", "echo ran").finish()
    assert status != 0 and out == b""
    assert err == (
        "ssh-auth: no phone is registered for this account; ask your administrator. Access denied.\n"
    )
    assert "create" not in emulator.calls()


def test_a_phone_that_completes_quickly_costs_create_and_patch_only(gate, emulator):
    counts = []
    for _ in range(2):  # the first login after the emulator's reset fetches a new token
        session = gate.ssh("sa-alice", "true")
        PhoneHolder(ALICE).approve(session.check_url())
        assert session.finish()[0] == 0
        counts.append(emulator.calls())
    service_calls = ("token", "create", "get", "patch", "jwks")  # not the phone's redirect
    spent = {name: counts[1].get(name, 0) - counts[0].get(name, 0) for name in service_calls}
    assert spent == {"token": 0, "create": 1, "get": 0, "patch": 1, "jwks": 0}


@pytest.fixture
def matching_gate(deployments, emulator):
    """The shared deployment with {"number_match": "true"}."""
    return deployments.get({"number_match": "true"})


def test_number_match_the_right_pick_lets_in(matching_gate, emulator):
    session = matching_gate.ssh("sa-alice", "echo ok")
    number = session.wait_for(r"pick the number (\d\d)\.").group(1)
    page = PhoneHolder(ALICE).approve(session.check_url(), pick=number)
    assert "Approved" in page.text
    assert session.finish()[:2] == (0, b"ok\n")


@pytest.fixture
def tutorial_gate(deployments, emulator):
    """The shared deployment with {"confirm_on_phone": "false"}."""
    return deployments.get({"confirm_on_phone": "false"})


def test_without_confirmation_the_redirect_itself_completes_the_check(tutorial_gate, emulator):
    session = tutorial_gate.ssh("sa-alice", "echo ok")
    page = PhoneHolder(ALICE).scan(session.check_url())
    assert "Approved" in page.text
    assert session.finish()[:2] == (0, b"ok\n")


def test_credentials_and_registry_are_not_readable_by_login_users(gate):
    for path in (gate.root / "etc" / "tru.json", gate.config):
        result = subprocess.run(
            ["runuser", "-u", "sa-alice", "--", "cat", str(path)], capture_output=True, text=True
        )
        assert result.returncode != 0 and "Permission denied" in result.stderr
    assert os.stat(gate.root / "etc" / "tru.json").st_mode & 0o077 == 0


def test_a_blank_command_is_gated_like_any_other(gate, matrix):
    session = gate.ssh("sa-alice", " ")
    PhoneHolder(ALICE).approve(session.check_url())
    status, out, err = session.finish()
    expected = "exit 0, ssh-auth: approved on your phone."
    got = f"exit {status}, {err.strip().splitlines()[-1]}"
    assert matrix("sessions: ssh host ' ' (a blank command)", expected, got) == expected
