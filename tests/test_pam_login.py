"""Auth-time mode through a real sshd (UsePAM, our module as its whole auth stack) and the real ssh
client at a terminal: the phone check is a step of authentication, so nothing runs before it."""

import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness.camera import decode, same_url
from harness.deployment import USERS, Session
from harness.pam_gate import PamGate, short_url
from harness.people import PhoneHolder
from webserver import reasons

ALICE, BOB = USERS["sa-alice"], USERS["sa-bob"]
DENIED = "Permission denied (keyboard-interactive)."
OUR_LINE = re.compile(r"(?m)^ssh-auth: .*$")


def marker() -> Path:
    """A file the command would create if it ever ran."""
    return Path(f"/tmp/sa-pam-ran-{secrets.token_hex(6)}")


def our_lines(client) -> list[str]:
    """The lines from ssh-auth the client printed after the prompt (on stderr)."""
    return OUR_LINE.findall(bytes(client.err).decode(errors="replace").replace("\r", ""))


def outcome(status: int, out: bytes, client, ran: Path) -> str:
    """A matrix cell for a login that should have been refused."""
    if ran.exists() or out:
        return "COMMAND RAN"
    lines = our_lines(client)
    if status != 255 or DENIED not in client.text() or len(lines) != 1:
        return f"status {status}, lines {lines}"
    return f"denied: {lines[0].removeprefix('ssh-auth: ')}"


@pytest.fixture(scope="module")
def short_ttl_gate(deployments, pam_module):
    """A PAM deployment whose checks expire after 10 s (the shortest ttl)."""
    return deployments.get({"ttl": "10"}, kind=PamGate)


def test_approved_login_runs_the_command_byte_exact(pam_gate):
    client = pam_gate.login("sa-alice", r"printf 'gated\0\377\n'; echo $USER")
    PhoneHolder(ALICE).approve(short_url(client))
    client.press_enter()
    status, out, _ = client.finish()
    assert (status, out) == (0, b"gated\0\xff\nsa-alice\n")
    assert "login allowed user=sa-alice" in pam_gate.service.log_text()


def test_approved_interactive_session_is_a_login_shell(pam_gate):
    client = pam_gate.login("sa-alice", options=("-tt",), stdin=subprocess.PIPE)
    PhoneHolder(ALICE).approve(short_url(client))
    client.press_enter()
    client.process.stdin.write(b"echo shell=$0 sum=$((20+22)); exit 7\n")
    client.process.stdin.flush()
    status, out, _ = client.finish()
    assert status == 7
    assert "shell=-bash sum=42" in out.decode()


def test_the_prompt_fits_80x24_and_its_qr_reads_as_the_short_url(pam_gate):
    client = pam_gate.login("sa-alice", "true")
    url = short_url(client)
    screen = client.screen_text().replace("\r", "")
    rows = screen.split("\n")
    assert len(rows) <= 24 and max(len(row) for row in rows) <= 80, screen
    qr = "\n".join(row for row in rows if row and set(row) <= set("█▀▄ "))
    assert decode(qr, unicode=True) == [same_url(url)]
    assert rows[-1] == "Press Enter once your phone has approved: "
    PhoneHolder(ALICE).deny(url)
    client.press_enter()
    client.finish()


def test_an_ascii_qr_for_clients_without_utf8_reads_as_the_short_url(deployments, pam_module):
    gate = deployments.get({"pam_qr": "ascii"}, kind=PamGate)
    client = gate.login("sa-alice", "echo ascii")
    url = short_url(client)
    rows = client.screen_text().replace("\r", "").split("\n")
    qr = "\n".join(row for row in rows if row and set(row) <= {"#", " "})
    assert all(ord(c) < 128 for c in client.screen_text())
    assert decode(qr, unicode=False) == [same_url(url)]
    PhoneHolder(ALICE).approve(url)
    client.press_enter()
    assert client.finish()[:2] == (0, b"ascii\n")


@pytest.mark.parametrize(
    "case, act, expected",
    [
        ("wrong SIM", lambda url: PhoneHolder("447700900999").approve(url), reasons.NO_MATCH),
        ("Deny on the phone", lambda url: PhoneHolder(ALICE).deny(url), reasons.DENIED_ON_PHONE),
    ],
)
def test_a_refused_phone_check_shows_one_line_and_opens_nothing(pam_gate, matrix, case, act, expected):
    ran = marker()
    client = pam_gate.login("sa-alice", f"touch {ran}")
    act(short_url(client))
    client.press_enter()
    status, out, _ = client.finish()
    got = outcome(status, out, client, ran)
    assert matrix(f"pam: {case}", f"denied: {expected}", got) == f"denied: {expected}"


def test_an_expired_check_shows_one_line_and_opens_nothing(short_ttl_gate, matrix):
    ran = marker()
    client = short_ttl_gate.login("sa-alice", f"touch {ran}")
    short_url(client)
    client.press_enter()  # an Enter before the phone answered: the login keeps waiting, then expires
    status, out, _ = client.finish(timeout=40)
    got = outcome(status, out, client, ran)
    expected = f"denied: {reasons.EXPIRED}"
    assert matrix("pam: check expired", expected, got) == expected


def test_an_unregistered_user_is_denied_with_no_check(pam_gate, emulator, matrix):
    ran = marker()
    client = pam_gate.login("sa-carol", f"touch {ran}")
    status, out, _ = client.finish()
    got = outcome(status, out, client, ran) + (", a check" if "create" in emulator.calls() else "")
    expected = f"denied: {reasons.UNREGISTERED}"
    assert matrix("pam: unregistered user", expected, got) == expected


def test_batch_mode_fails_at_once_with_no_check(pam_gate, emulator, matrix):
    started = time.monotonic()
    argv = ["ssh", "-p", str(pam_gate.port), *pam_gate.batch_options(), "sa-alice@127.0.0.1", "true"]
    status, _, err = Session(argv).finish()
    seconds = time.monotonic() - started
    got = f"exit {status}, {'no check' if 'create' not in emulator.calls() else 'a check'}"
    assert DENIED in err and seconds < 10, (err, seconds)
    assert matrix("pam: BatchMode=yes client", "exit 255, no check", got) == "exit 255, no check"


def test_a_client_without_a_terminal_costs_one_check_then_a_clean_deny(short_ttl_gate, matrix):
    ran = marker()
    logged = len(short_ttl_gate.service.log_text())
    client = Session(short_ttl_gate.ssh_argv("sa-alice", f"touch {ran}"))  # no controlling tty
    status, out, _ = client.finish(timeout=40)
    checks = short_ttl_gate.service.log_text()[logged:].count(" started for sa-alice")
    got = f"{outcome(status, out, client, ran)}; checks: {checks}"
    expected = f"denied: {reasons.EXPIRED}; checks: 1"
    assert matrix("pam: client without a terminal (answers empty, retries)", expected, got) == expected


def test_an_early_enter_keeps_waiting_for_the_phone(pam_gate):
    client = pam_gate.login("sa-alice", "echo in")
    url = short_url(client)
    client.press_enter()
    time.sleep(1.5)
    assert client.process.poll() is None and not client.out
    PhoneHolder(ALICE).approve(url)
    status, out, _ = client.finish()  # no second Enter: the verdict was what it waited for
    assert (status, out) == (0, b"in\n")


def test_a_password_cannot_replace_the_phone(deployments, pam_module, emulator, matrix):
    gate = deployments.get({"ttl": "10"}, kind=PamGate, sshd_options={"PasswordAuthentication": "yes"})
    secret = secrets.token_urlsafe(12)
    hashed = subprocess.run(  # on stdin: a secret starting with "-" is not an option
        ["openssl", "passwd", "-6", "-stdin"], input=secret, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["usermod", "-p", hashed, "sa-bob"], check=True)
    try:
        # The password alone: sshd asks for the key first and never for a password.
        no_key = gate.login(
            "sa-bob",
            "true",
            options=("-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"),
        )
        no_key_status, _, _ = no_key.finish()
        methods = re.search(r"Permission denied \(([^)]*)\)", no_key.text())
        # The key, then the password typed at the phone's prompt: still waiting for the phone.
        ran = marker()
        typed = gate.login("sa-bob", f"touch {ran}")
        short_url(typed)
        typed.type(secret + "\r")
        time.sleep(1.5)
        waiting = typed.process.poll() is None and not ran.exists()
        status, out, _ = typed.finish(timeout=40)
    finally:
        subprocess.run(["usermod", "-p", "*", "sa-bob"], check=True)
    got = (
        f"password alone: exit {no_key_status}, methods {methods.group(1) if methods else None}; "
        f"password at the prompt: {'still waiting' if waiting else 'NOT waiting'}, then "
        f"{outcome(status, out, typed, ran)}"
    )
    expected = (
        "password alone: exit 255, methods publickey; password at the prompt: still waiting, "
        f"then denied: {reasons.EXPIRED}"
    )
    assert matrix("pam: a password instead of the phone", expected, got) == expected


def test_the_bashrc_exec_trick_no_longer_skips_the_check(pam_gate, matrix):
    bashrc = Path("/home/sa-bob/.bashrc")
    before = bashrc.read_bytes() if bashrc.exists() else None
    ran = marker()
    bashrc.write_text(f"exec /usr/bin/touch {ran}\n")
    try:
        client = pam_gate.login("sa-bob", "true")
        PhoneHolder(BOB).deny(short_url(client))
        client.press_enter()
        status, out, _ = client.finish()
    finally:
        if before is None:
            bashrc.unlink()
        else:
            bashrc.write_bytes(before)
    got = outcome(status, out, client, ran)
    expected = f"denied: {reasons.DENIED_ON_PHONE}"
    assert matrix("pam: ~/.bashrc exec trick", expected, got) == expected


def test_the_service_down_denies_in_under_a_second(emulator, pam_module, matrix):
    with PamGate(emulator, users={"sa-alice": ALICE}) as gate:
        gate.service.stop()
        ran = marker()
        started = time.monotonic()
        client = gate.login("sa-alice", f"touch {ran}")
        status, out, _ = client.finish()
        seconds = time.monotonic() - started
    print(f"service down: the client was refused after {seconds * 1000:.0f} ms (handshake included)")
    # With no service to remember the first answer, each of the client's retries says it again.
    lines = set(our_lines(client))
    got = "COMMAND RAN" if ran.exists() or out else f"exit {status}, {sorted(lines)}"
    expected = "exit 255, ['ssh-auth: the ssh-auth service is not running. Access denied.']"
    assert seconds < 3, seconds  # the module answers at once; the rest is the SSH handshake
    assert matrix("pam: service down", expected, got) == expected


def test_root_under_prohibit_password_is_denied_at_once_with_no_check(
    deployments, pam_module, emulator, matrix
):
    gate = deployments.get(
        kind=PamGate, root_key=True, sshd_options={"PermitRootLogin": "prohibit-password"}
    )
    ran = marker()
    client = gate.login("root", f"touch {ran}")
    status, out, _ = client.finish()
    got = outcome(status, out, client, ran) + (", a check" if "create" in emulator.calls() else "")
    expected = f"denied: {reasons.ROOT_KEY_ONLY}"
    assert matrix("pam: root under PermitRootLogin prohibit-password", expected, got) == expected


def test_root_with_permit_root_login_yes_and_pam_root_check_gets_the_phone(deployments, pam_module):
    gate = deployments.get(
        {"pam_root": "check"},
        kind=PamGate,
        root_key=True,
        extra_config=f"user=root:{ALICE}\n",
        sshd_options={"PermitRootLogin": "yes"},
    )
    client = gate.login("root", "id -u")
    PhoneHolder(ALICE).approve(short_url(client))
    client.press_enter()
    assert client.finish()[:2] == (0, b"0\n")


def test_the_audit_names_the_key_and_the_phone_page_says_what_is_approved(pam_gate):
    client = pam_gate.login("sa-alice", "true")
    holder = PhoneHolder(ALICE)
    page = holder.scan(short_url(client))
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{pam_gate.key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    for shown in ("sa-alice", "127.0.0.1", fingerprint, "the whole SSH connection"):
        assert shown in page.text, page.text
    holder.phone.answer(page, "deny")
    client.press_enter()
    client.finish()


def test_a_short_url_ends_with_its_login(pam_gate):
    client = pam_gate.login("sa-alice", "true")
    url = short_url(client)
    PhoneHolder(ALICE).deny(url)
    client.press_enter()
    client.finish()
    assert requests.get(url, allow_redirects=False, timeout=5).status_code == 404
    assert requests.get(url[:-1] + "x", allow_redirects=False, timeout=5).status_code == 404
    assert os.path.basename(url)  # 22 URL-safe characters: 128 bits


def test_login_grace_time_drops_the_pending_check_and_a_late_approve_runs_nothing(
    deployments, pam_module, emulator, matrix
):
    gate = deployments.get(kind=PamGate, sshd_options={"LoginGraceTime": "3"})
    ran = marker()
    client = gate.login("sa-alice", f"touch {ran}")
    check_url = requests.get(short_url(client), allow_redirects=False, timeout=5).headers["Location"]
    # sshd ends the connection after 3 s; the client, blocked reading the terminal, notices it
    # only at the next Enter.
    abandoned = "abandoned (the SSH session went away)"
    deadline = time.monotonic() + 15
    while abandoned not in gate.service.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    page = PhoneHolder(ALICE).scan(check_url)  # too late: the page has no Approve left to press
    client.press_enter()
    status, out, _ = client.finish(timeout=20)
    log = gate.service.log_text()
    got = (
        f"client exit {status}; late approve: {page.status_code} "
        f"{'ended' if 'This login has ended' in page.text else page.text[:80]}; "
        f"{'ran' if ran.exists() else 'nothing ran'}; "
        f"{'patched' if 'patch' in emulator.calls() else 'no PATCH'}; "
        f"audit: {'abandoned' if abandoned in log else 'no abandon'}"
    )
    expected = "client exit 255; late approve: 404 ended; nothing ran; no PATCH; audit: abandoned"
    assert matrix("pam: LoginGraceTime reached, then a late Approve", expected, got) == expected


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A user certificate for sa-alice, over 8 KB (250 long principals), and its CA."""
    directory = tmp_path_factory.mktemp("cert")
    for name in ("ca", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)], check=True
        )
    principals = ",".join(["sa-alice", *(f"a-rather-long-principal-name-{n:04d}" for n in range(250))])
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(directory / "ca"), "-I", "big", "-n", principals,
         str(directory / "user.pub")],
        check=True,
    )  # fmt: skip
    os.chmod(directory, 0o755)
    return directory


def test_a_large_certificate_logs_in_and_the_phone_shows_its_keys_fingerprint(
    deployments, pam_module, certificate
):
    assert (certificate / "user-cert.pub").stat().st_size > 8192
    gate = deployments.get(kind=PamGate, sshd_options={"TrustedUserCAKeys": str(certificate / "ca.pub")})
    options = ("-o", f"IdentityFile={certificate / 'user'}", "-o", "IdentitiesOnly=yes")
    client = gate.login("sa-alice", "echo certified", options=options)
    holder = PhoneHolder(ALICE)
    page = holder.scan(short_url(client))
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(certificate / "user.pub")], capture_output=True, text=True
    ).stdout.split()[1]
    assert fingerprint in page.text, page.text
    holder.phone.answer(page, "approve")
    client.press_enter()
    assert client.finish()[:2] == (0, b"certified\n")
