"""The service on its own: socket limits, the fallback GET, and start-up refusals in one line."""

import json
import os
import socket
import subprocess
import time

import pytest
import requests

from harness.deployment import USERS, Gate, refusal_config, start_service
from harness.emulator import write_tru_json
from harness.people import PhoneHolder
from webserver import connection

ALICE = USERS["sa-alice"]


@pytest.fixture
def credentials_file(tmp_path):
    return write_tru_json(tmp_path / "tru.json")


LOGIN = {
    "v": 1,
    "op": "login",
    "command": None,
    "connection": "127.0.0.1 5 127.0.0.1 22",
    "tty": False,
    "columns": 80,
    "rows": 24,
    "unicode": False,
}


def connect(gate) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(gate.socket))
    return sock


def read_line(sock) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return json.loads(data) if data else {}


def test_more_than_eight_connections_without_a_line_from_one_uid_are_refused(gate):
    held = [connect(gate) for _ in range(8)]
    try:
        time.sleep(0.2)
        with connect(gate) as extra:
            verdict = read_line(extra)
        assert verdict == {
            "v": 1,
            "event": "verdict",
            "allow": False,
            "reason": "too many logins are waiting at once. Access denied.",
        }
    finally:
        for sock in held:
            sock.close()


def test_a_connection_that_sends_no_line_is_closed_after_five_seconds(gate):
    with connect(gate) as sock:
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert 4.5 < time.monotonic() - started < 8


def test_a_malformed_login_line_is_denied(gate):
    with connect(gate) as sock:
        sock.sendall(json.dumps({**LOGIN, "columns": "wide"}).encode() + b"\n")
        assert read_line(sock)["reason"] == "the login request was malformed. Access denied."


def test_the_fallback_get_ends_a_login_whose_redirect_never_arrives(gate, emulator):
    session = gate.ssh("sa-alice", "echo ran")
    url = session.check_url()
    # The network fails the SIM check, but the phone never reaches the webhook.
    requests.get(url, params={"network_error": "ip_msisdn_mismatch"}, allow_redirects=False, timeout=10)
    status, out, err = session.finish(timeout=30)
    assert (status, out) == (1, b"")
    assert err.splitlines()[-1] == (
        "ssh-auth: the phone's mobile data is not the registered number's SIM. Use the phone "
        "with the registered SIM, with Wi-Fi off. Access denied."
    )
    assert emulator.calls()["get"] == 1  # first GET after 10 s, and that one decided


def test_service_refuses_a_bad_config_in_one_line(tmp_path):
    config = tmp_path / "ssh-auth.conf"
    config.write_text("public_url = https://x.example\ncolour = blue\n")
    result = start_service(config)
    assert result.returncode == 2
    assert result.stderr == f"ssh-auth-server: {config} line 2: unknown setting 'colour'\n"


def test_service_refuses_credentials_others_can_read(tmp_path):
    tru = tmp_path / "tru.json"
    tru.write_text(json.dumps({"credentials": [{"client_id": "a", "client_secret": "b"}]}))
    tru.chmod(0o644)
    config = tmp_path / "ssh-auth.conf"
    config.write_text(f"public_url = https://x.example\ncredentials = {tru}\n")
    result = start_service(config)
    assert result.returncode == 2
    assert result.stderr == (
        f"ssh-auth-server: {tru} is readable by other users (mode 0644): chmod 600 {tru}\n"
    )


def test_service_refuses_an_audit_log_it_cannot_write(tmp_path, credentials_file):
    config = refusal_config(
        tmp_path,
        public_url="https://x.example",
        credentials=credentials_file,
        audit_log=f"{tmp_path}/no-such-dir/audit.jsonl",
    )
    result = start_service(config)
    assert result.returncode == 2
    assert result.stderr == (
        f"ssh-auth-server: cannot write audit_log {tmp_path}/no-such-dir/audit.jsonl: "
        "No such file or directory\n"
    )


def test_the_files_the_service_writes_are_its_own(emulator_server, tmp_path):
    audit = tmp_path / "audit.jsonl"
    with Gate(emulator_server, settings={"audit_log": str(audit)}, users={"sa-alice": ALICE}) as gate:
        session = gate.ssh("sa-alice", "true")
        PhoneHolder(ALICE).approve(session.check_url())
        assert session.finish()[0] == 0
        balance = gate.socket.parent / "balance"
        modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (audit, balance)}
    assert modes == {"audit.jsonl": "0o600", "balance": "0o600"}


def test_a_process_that_started_after_the_accept_is_never_taken_for_the_peer():
    # The broker reads /proc for the pid SO_PEERCRED gave; a pid reused since is someone else.
    accepted = connection.boot_ticks()
    time.sleep(0.05)  # a few clock ticks
    with subprocess.Popen(["sleep", "5"]) as later:
        try:
            assert connection.started_by(os.getpid(), accepted)
            assert not connection.started_by(later.pid, accepted)
        finally:
            later.kill()
