"""The attack/fault matrix, who asks: exemptions, registry, limits, reuse, forwarding, output."""

import html
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.deployment import USERS, Gate
from harness.outcomes import attempt, denied, outcome
from harness.people import PhoneHolder
from harness.processes import free_port, run, send_through

ALICE, BOB = USERS["sa-alice"], USERS["sa-bob"]


@pytest.fixture
def secure(deployments, emulator):
    """The default deployment."""
    return deployments.get({})


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
