"""Every way the gate can break ends the login with one clear line and runs nothing (fail closed)."""

import json
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from harness.deployment import USERS, Gate
from harness.people import PhoneHolder

ALICE = USERS["sa-alice"]


@pytest.fixture(scope="module")
def fragile_gate(emulator_server):
    """A deployment these tests may break; each test gets it back with the service running."""
    with Gate(emulator_server, users={"sa-alice": ALICE}) as gate:
        yield gate


@pytest.fixture
def gate(fragile_gate, emulator):
    yield fragile_gate
    fragile_gate.end_sessions()
    if fragile_gate.socket.exists() and fragile_gate.service.process.poll() is not None:
        fragile_gate.socket.unlink()
    if fragile_gate.service.process.poll() is not None:
        fragile_gate.service.start()


def marker(gate) -> str:
    """A file the user's command would create (in /tmp, which the user can write)."""
    return f"/tmp/sa-ran-{uuid.uuid4().hex}"


def assert_denied(matrix, row: str, session, message: str, path: str, timeout: float = 30):
    """Exit 1, nothing on stdout, `message` as the last line, the command never ran."""
    status, out, err = session.finish(timeout=timeout)
    last = err.splitlines()[-1] if err.strip() else "(nothing)"
    ran = "ran" if os.path.exists(path) else "not run"
    expected = f"exit 1, stdout empty, command not run: {message}"
    got = f"exit {status}, stdout {'empty' if not out else out[:20]}, command {ran}: {last}"
    assert matrix(row, expected, got) == expected


def test_service_killed_mid_wait_denies(gate, matrix):
    path = marker(gate)
    session = gate.ssh("sa-alice", f"touch {path}")
    session.check_url()
    gate.service.stop(signal.SIGKILL)
    assert_denied(
        matrix,
        "service: killed mid-wait",
        session,
        "ssh-auth: the ssh-auth service failed (connection closed). Access denied.",
        path,
    )


def test_service_not_running_denies(gate, matrix):
    gate.service.stop()
    path = marker(gate)
    assert_denied(
        matrix,
        "service: not running",
        gate.ssh("sa-alice", f"touch {path}"),
        "ssh-auth: the ssh-auth service is not running. Access denied.",
        path,
    )


class FakeService:
    """Something on the service's socket (run by root, so the shim trusts its uid)."""

    def __init__(self, path, answer):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        os.chmod(path, 0o666)
        self.listener.listen(8)
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            self.answer(conn)

    def close(self):
        self.listener.close()


def _send(*messages, hold: float = 0):
    """A fake's answer: send these lines, then keep the connection open for `hold` seconds."""

    def answer(conn):
        for message in messages:
            conn.sendall(message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n")
        time.sleep(hold)

    return answer


def _challenge(expires_in):
    return {
        "v": 1,
        "event": "challenge",
        "check_id": "x",
        "check_url": "http://h/x/redirect",
        "qr": "",
        "number": None,
        "expires_at": time.time() + expires_in,
    }


FAKES = [
    ("closes at once", _send(), "the ssh-auth service failed (connection closed)."),
    ("bad JSON", _send(b"{nope\n"), "the ssh-auth service failed (not JSON)."),
    ("over-long line", _send(b"x" * (70 * 1024)), "the ssh-auth service failed (line too long)."),
    (
        "unknown version",
        _send({"v": 2, "event": "verdict", "allow": True}),
        "the ssh-auth service failed (unknown protocol version 2).",
    ),
    ("allow that is not true", _send({"v": 1, "event": "verdict", "allow": "yes"}), "Access denied."),
    (
        "unknown event",
        _send({"v": 1, "event": "shell", "allow": True}),
        "the ssh-auth service sent a malformed answer.",
    ),
    (
        "challenge without URL",
        _send({**_challenge(60), "check_url": None}),
        "the ssh-auth service sent a malformed challenge.",
    ),
    (
        "no verdict by the deadline",
        _send(_challenge(-9), hold=15),
        "no verdict from the ssh-auth service in time.",
    ),
]


@pytest.mark.parametrize("case, answer, reason", FAKES, ids=[c for c, _, _ in FAKES])
def test_a_misbehaving_service_denies(gate, case, answer, reason, matrix):
    gate.service.stop()
    fake = FakeService(gate.socket, answer)
    try:
        path = marker(gate)
        expected = f"ssh-auth: {reason}" + ("" if reason == "Access denied." else " Access denied.")
        assert_denied(
            matrix,
            f"service: fake service that {case}",
            gate.ssh("sa-alice", f"touch {path}"),
            expected,
            path,
        )
    finally:
        fake.close()
        gate.socket.unlink()


def test_a_silent_service_denies_after_ten_seconds(gate, matrix):
    gate.service.stop()
    fake = FakeService(gate.socket, _send(hold=15))
    try:
        path, started = marker(gate), time.monotonic()
        assert_denied(
            matrix,
            "service: fake service that never answers",
            gate.ssh("sa-alice", f"touch {path}"),
            "ssh-auth: the ssh-auth service did not answer. Access denied.",
            path,
        )
        assert 9.5 < time.monotonic() - started < 15
    finally:
        fake.close()
        gate.socket.unlink()


FAKE_ALLOW = """
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(65536)
    c.sendall(json.dumps({"v": 1, "event": "verdict", "allow": True, "reason": "ok"}).encode() + b"\\n")
    c.close()
"""


def test_a_socket_served_by_an_untrusted_user_is_refused(gate, matrix):
    gate.service.stop()
    nobody = pwd.getpwnam("nobody")
    run_dir = gate.socket.parent
    os.chown(run_dir, nobody.pw_uid, -1)
    fake = subprocess.Popen(
        ["/usr/bin/python3", "-c", FAKE_ALLOW, str(gate.socket)],
        user="nobody",
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout.readline() == "ready\n"
        path = marker(gate)
        assert_denied(
            matrix,
            "service: socket served by an untrusted user",
            gate.ssh("sa-alice", f"touch {path}"),
            f"ssh-auth: the ssh-auth socket is served by an untrusted process "
            f"(uid {nobody.pw_uid}). Access denied.",
            path,
        )
    finally:
        fake.kill()
        fake.wait()
        fake.stdout.close()
        os.chown(run_dir, 0, -1)
        gate.socket.unlink()


def shim_pid(user: str) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = subprocess.run(
            ["pgrep", "-n", "-u", user, "-f", "shim.pyz create-check"], capture_output=True, text=True
        )
        if found.stdout.strip():
            return int(found.stdout.strip())
        time.sleep(0.05)
    raise AssertionError("no shim process")


@pytest.mark.parametrize("name", ["SIGHUP", "SIGTERM", "SIGQUIT"])
def test_a_signal_during_the_wait_denies(gate, name, matrix):
    path = marker(gate)
    session = gate.ssh("sa-alice", f"touch {path}")
    url = session.check_url()
    os.kill(shim_pid("sa-alice"), getattr(signal, name))
    assert_denied(
        matrix,
        f"signal: {name} during the wait",
        session,
        f"ssh-auth: interrupted ({name}). Access denied.",
        path,
    )
    assert PhoneHolder(ALICE).scan(url).status_code == 404  # too late: the login is gone
    assert not os.path.exists(path)


def test_ctrl_c_at_the_terminal_denies(gate, matrix):
    path = marker(gate)
    session = gate.ssh("sa-alice", f"touch {path}", tty=True, stdin=subprocess.PIPE)
    session.check_url()
    session.process.stdin.write(b"\x03")
    session.process.stdin.flush()
    status, out, _ = session.finish()
    shown = "ssh-auth: interrupted (SIGINT). Access denied." in out.decode()
    ran = "ran" if os.path.exists(path) else "not run"
    expected = "exit 1, command not run, told: interrupted (SIGINT)"
    got = f"exit {status}, command {ran}, told: {'interrupted (SIGINT)' if shown else out[-80:]}"
    assert matrix("signal: Ctrl-C at the terminal", expected, got) == expected


def test_client_disconnect_abandons_the_login(gate, matrix):
    path = marker(gate)
    session = gate.ssh("sa-alice", f"touch {path}", tty=True, stdin=subprocess.PIPE)
    url = session.check_url()
    logged = len(gate.service.log_text())  # the gate is shared: only this login's lines count
    session.kill()  # the client vanishes: sshd hangs up the session's terminal
    deadline = time.monotonic() + 10
    while "abandoned" not in gate.service.log_text()[logged:] and time.monotonic() < deadline:
        time.sleep(0.1)
    log = gate.service.log_text()[logged:]
    abandoned = "login denied user=sa-alice" in log and "the login was abandoned" in log
    late = PhoneHolder(ALICE).scan(url).status_code
    ran = "ran" if os.path.exists(path) else "not run"
    expected = "audit: denied, abandoned; a late scan gets 404; command not run"
    audit = "denied, abandoned" if abandoned else "no line"
    got = f"audit: {audit}; a late scan gets {late}; command {ran}"
    assert matrix("client: disconnects during the wait", expected, got) == expected


def test_a_client_that_leaves_without_a_pty_is_abandoned_and_nothing_runs(gate, matrix):
    # No -t: sshd sends no SIGHUP when the client goes; the shim must see its pipes close.
    path = marker(gate)
    session = gate.ssh("sa-alice", f"touch {path}")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    logged = len(gate.service.log_text())
    session.kill()
    time.sleep(2)
    late = holder.phone.answer(page, "approve")
    deadline = time.monotonic() + 10
    while "abandoned" not in gate.service.log_text()[logged:] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # a command, had it been started, would have left its mark by now
    log = gate.service.log_text()[logged:]
    abandoned = "login denied user=sa-alice" in log and "abandoned" in log
    audit = "denied, abandoned" if abandoned else "no line"
    ended = "This login has ended" in late.text
    expected = "audit: denied, abandoned; Approve 2 s later: 409 this login has ended; command not run"
    got = (
        f"audit: {audit}; Approve 2 s later: {late.status_code} "
        f"{'this login has ended' if ended else late.text[:60]}; "
        f"command {'ran' if os.path.exists(path) else 'not run'}"
    )
    assert matrix("client: leaves without a pty while waiting", expected, got) == expected
