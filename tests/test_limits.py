"""Limits keyed on what the kernel says: no caller can drain the balance, flood the log or lock out
the account's owner, and every per-login store is pruned."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness.deployment import USERS, Gate
from harness.people import PhoneHolder
from webserver.connection import SshConnection, of_process
from webserver.policy import (
    DENIAL_BURST,
    DENIALS_PER_SECOND,
    Approvals,
    CheckBudget,
    ConnectionAddresses,
    Denials,
)

ALICE = USERS["sa-alice"]

# Run as a local user, outside any SSH login: many login lines, each with another `connection`.
VARYING_CONNECTIONS = """
import collections, json, socket, sys
reasons = collections.Counter()
for n in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
    s.sendall(json.dumps({"v": 1, "op": "login", "command": None, "tty": False,
        "connection": f"10.0.{n // 250}.{n % 250} {1024 + n} 127.0.0.1 22",
        "columns": 80, "rows": 24, "unicode": False}).encode() + b"\\n")
    data = b""
    while not data.endswith(b"\\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    message = json.loads(data) if data else {}
    reasons[message.get("reason") or message.get("event") or "(closed)"] += 1
    s.close()
print(json.dumps(reasons))
"""


@pytest.fixture
def scripts():
    """A root-owned directory login users can read, for scripts they run."""
    directory = Path(tempfile.mkdtemp(prefix="sa-scripts-", dir="/tmp"))
    directory.chmod(0o755)

    def write(name: str, text: str) -> Path:
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    yield write
    shutil.rmtree(directory, ignore_errors=True)


def run_as(user: str, script: Path, *args: str, timeout: float = 120) -> str:
    """Run a Python script as a local user (no SSH login); its stdout."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", "/usr/bin/python3", str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def capped(deployments, emulator):
    """The shared deployment with {"max_checks_per_user": "3"}."""
    return deployments.get({"max_checks_per_user": "3"})


def test_a_local_user_varying_the_connection_text_creates_no_check(capped, emulator, matrix, scripts):
    out = run_as("sa-alice", scripts("vary.py", VARYING_CONNECTIONS), str(capped.socket), "40")
    expected = {"this request does not come from an SSH login. Access denied.": 40}
    got = json.loads(out)
    matrix(
        "limits: local user, 40 login lines with varying `connection`, max_checks_per_user = 3",
        f"{expected}; checks created: 0",
        f"{got}; checks created: {emulator.calls().get('create', 0)}",
    )
    assert got == expected
    assert emulator.calls().get("create", 0) == 0


def test_inside_an_approved_login_another_address_is_refused(capped, emulator, matrix, scripts):
    # The approved session's own connection is bound to 127.0.0.1 at its first login: claiming
    # other addresses from inside it creates no check either.
    script = scripts("vary.py", VARYING_CONNECTIONS)
    session = capped.ssh("sa-alice", f"/usr/bin/python3 {script} {capped.socket} 20")
    PhoneHolder(ALICE).approve(session.check_url())
    status, out, err = session.finish(timeout=60)
    assert status == 0, err
    expected = {"the client address does not match this SSH connection. Access denied.": 20}
    got = json.loads(out)
    matrix(
        "limits: 20 login lines claiming other addresses from inside an approved login",
        f"{expected}; checks created: 1",
        f"{got}; checks created: {emulator.calls().get('create', 0)}",
    )
    assert got == expected and emulator.calls()["create"] == 1


def test_three_waiting_logins_from_one_address_do_not_lock_out_another(gate, matrix):
    attacker = [gate.ssh("sa-alice", "true", options=("-o", "BindAddress=127.0.0.5")) for _ in range(3)]
    for session in attacker:
        session.check_url()
    fourth = gate.ssh("sa-alice", "true", options=("-o", "BindAddress=127.0.0.5"))
    status, _, err = fourth.finish(timeout=30)
    owner = gate.ssh("sa-alice", "echo owner-in")
    PhoneHolder(ALICE).approve(owner.check_url())
    owner_status, out, _ = owner.finish(timeout=30)
    expected = (
        "4th from 127.0.0.5: ssh-auth: too many logins are waiting at once. Access denied.; "
        "owner from 127.0.0.1: approved, ran"
    )
    fourth_line = err.strip().splitlines()[-1] if err.strip() else "(nothing)"
    owner_got = "approved, ran" if (owner_status, out) == (0, b"owner-in\n") else repr(out)
    got = f"4th from 127.0.0.5: {fourth_line}; owner from 127.0.0.1: {owner_got}"
    matrix("limits: 3 logins waiting from an attacker's address, then the owner", expected, got)
    assert got == expected and status == 1


def test_a_slow_writer_is_cut_five_seconds_after_it_connected(gate, matrix):
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(gate.socket))
        sock.settimeout(1.5)
        closed_after = None
        for _ in range(30):
            try:
                sock.sendall(b" ")  # one byte a second, never a whole line
                if sock.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    got = "closed within 5-7 s" if closed_after and 4.5 < closed_after < 7 else f"{closed_after}"
    matrix("socket: one byte every second, never a line", "closed within 5-7 s", got)
    assert got == "closed within 5-7 s"


FLOOD = """
import json, socket, sys, time
sent, answered, end = 0, 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
    s.sendall(json.dumps({"v": 1, "op": "login", "command": None, "tty": False,
        "connection": "10.9.9.9 4242 127.0.0.1 22", "columns": 80, "rows": 24,
        "unicode": False}).encode() + b"\\n")
    sent += 1
    answered += bool(s.recv(65536))
    s.close()
print(sent, answered)
"""


def test_a_flood_of_denials_costs_one_summary_line(emulator_server, matrix, tmp_path, scripts):
    audit = tmp_path / "audit.jsonl"
    flood = scripts("flood.py", FLOOD)
    with Gate(emulator_server, settings={"audit_log": str(audit)}) as gate:
        sent, answered = map(int, run_as("sa-carol", flood, str(gate.socket), "5").split())
        owner = gate.ssh("sa-alice", "echo owner-in")  # a genuine login during the flood
        PhoneHolder(ALICE).approve(owner.check_url())
        assert owner.finish(timeout=30)[:2] == (0, b"owner-in\n")
        gate.service.stop(signal.SIGTERM)  # a clean stop writes the pending summaries
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
    carol = [line for line in lines if line["user"] == "sa-carol"]
    logged = [line for line in carol if line["outcome"] == "denied"]
    summaries = [line for line in carol if line["outcome"] == "suppressed"]
    refused = sum(int(line["reason"].split()[1]) for line in summaries)  # "denied N more times"
    bound = DENIAL_BURST + 10  # the burst, one a second for 5 s, the summary
    expected = f"every attempt counted; at most {bound} lines; the owner's login logged"
    got = (
        f"{'every attempt' if len(logged) + refused == sent else len(logged) + refused} counted; "
        f"at most {bound if len(carol) <= bound else len(carol)} lines; the owner's login "
        f"{'logged' if any(line['user'] == 'sa-alice' for line in lines) else 'missing'}"
    )
    matrix("audit: a local user floods the socket for 5 s", expected, got)
    assert got == expected and sent == answered and sent > 2 * DENIAL_BURST
    assert audit.stat().st_size < 50_000 and (audit.stat().st_mode & 0o777) == 0o600
    assert summaries[0]["reason"].endswith(
        f"more times, not logged one by one (over {DENIAL_BURST} at once)"
    )


# --- every per-login store is pruned -------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def ended_connection():
    """An SSH connection key of a process that has ended (a real one, from /proc)."""
    child = subprocess.Popen(["sleep", "30"])
    stat = Path(f"/proc/{child.pid}/stat").read_bytes()
    start_time = int(stat[stat.rfind(b")") + 2 :].split()[19])
    connection = SshConnection(child.pid, start_time)
    assert connection.alive()
    child.kill()
    child.wait()
    return connection


def test_stores_forget_what_has_ended(ended_connection):
    clock = Clock()
    budget, denials = CheckBudget(3, 60, clock), Denials(clock)
    approvals, addresses = Approvals(clock), ConnectionAddresses()
    for n in range(1000):
        budget.take(n, f"10.0.0.{n % 250}")
        denials.loggable((n, "10.0.0.1"))
    approvals.remember(1000, ended_connection, 3600)
    assert addresses.bind(ended_connection, "10.0.0.1")
    clock.now += 601
    for store in (budget, denials, approvals, addresses):
        store.prune()
    sizes = (
        sum(
            len(w._events)
            for w in (budget._per_place, budget._per_uid, budget._per_uid_minute, budget._service)
        ),
        len(denials._lines._tokens),
        len(approvals._until),
        len(addresses._address),
    )
    assert sizes == (0, 0, 0, 0)


def test_an_ended_connection_is_never_reused_within_its_window(ended_connection):
    approvals = Approvals()
    approvals.remember(1000, ended_connection, 3600)
    assert not approvals.reused(1000, ended_connection)


def test_a_process_outside_any_ssh_login_has_no_connection():
    assert of_process(os.getpid(), os.getuid()) is None


def test_the_check_budget_counts_per_place_per_uid_and_for_the_service():
    clock = Clock()
    budget = CheckBudget(per_address=2, per_minute=100, clock=clock)
    assert [budget.take(1, "10.0.0.1") for _ in range(3)] == [None, None, ("user", 601)]
    assert budget.take(1, "10.0.0.2") is None  # the owner at another address still gets a check
    for n in range(7):
        assert budget.take(1, f"10.1.0.{n}") is None
    assert budget.take(1, "10.2.0.1") == ("user", 61)  # 10 a minute: a tenth of the service's
    clock.now += 61
    for n in range(10):
        assert budget.take(1, f"10.3.0.{n}") is None
    assert budget.take(1, "10.4.0.1") == ("user", 540)  # 20 per 10 minutes: 10 x max_checks
    service = CheckBudget(per_address=5, per_minute=30, clock=clock)
    assert [service.take(n, "10.0.0.1") for n in range(31)][-1] == ("service", 61)


def test_a_refusal_after_a_window_emptied_never_breaks_pruning():
    # A stale window emptied while another limit refuses must not be left behind empty: pruning
    # used to fail on it, and took the broker's socket loop down with it.
    clock = Clock()
    budget = CheckBudget(per_address=5, per_minute=2, clock=clock)
    assert budget.take(1, "10.0.0.1") is None
    clock.now += 601  # uid 1's windows have all passed...
    assert budget.take(2, "10.0.0.2") is None and budget.take(3, "10.0.0.3") is None
    clock.now += 1  # ...but the service's minute is full
    assert budget.take(1, "10.0.0.1") == ("service", 60)
    budget.prune()
    assert budget.take(1, "10.0.0.1") == ("service", 60)


def test_an_accounts_own_place_keeps_its_checks_when_others_use_up_the_account():
    clock = Clock()
    budget = CheckBudget(per_address=2, per_minute=60, clock=clock)
    for n in range(6):  # one account, six places: its share of a minute (60 / 10)
        assert budget.take(1, f"198.51.100.{n}") is None
    assert budget.take(1, "198.51.100.9") == ("user", 61)
    assert budget.take(1, "192.0.2.7", trusted=True) is None  # where its phone approved before
    assert budget.take(1, "192.0.2.7", trusted=True) is None
    assert budget.take(1, "192.0.2.7", trusted=True) == ("user", 601)  # its own place's limit


def test_ipv6_addresses_of_one_subscriber_share_a_limit():
    budget = CheckBudget(per_address=2, per_minute=60, clock=Clock())
    assert budget.take(1, "2001:db8:1:2::1") is None
    assert budget.take(1, "2001:db8:1:2:ffff::9") is None
    assert budget.take(1, "2001:db8:1:2:abcd::1") == ("user", 601)  # same /64
    assert budget.take(1, "2001:db8:1:3::1") is None


@pytest.fixture
def trusting(deployments, emulator):
    """The shared deployment with {"max_checks_per_user": "2", "max_checks_per_minute": "60"}."""
    return deployments.get({"max_checks_per_user": "2", "max_checks_per_minute": "60"})


def test_a_stolen_password_used_elsewhere_cannot_use_up_the_owners_checks(trusting, matrix):
    owner = trusting.ssh("sa-alice", "echo first")
    PhoneHolder(ALICE).approve(owner.check_url())
    assert owner.finish(timeout=30)[:2] == (0, b"first\n")
    refusals = []
    for n in range(2, 8):  # the attacker, from six other addresses
        attacker = trusting.ssh("sa-alice", "true", options=("-o", f"BindAddress=127.0.1.{n}"))
        found = attacker.wait_for(r"(https?://\S+/redirect)|ssh-auth: (too many.*)", timeout=30)
        refusals.append(found.group(2))
        attacker.kill()
    owner = trusting.ssh("sa-alice", "echo owner-in")  # from the address the phone approved
    PhoneHolder(ALICE).approve(owner.check_url())
    finished = owner.finish(timeout=30)
    expected = "attacker: 5 checks, then too many attempts; the owner's own address: approved, ran"
    got = (
        f"attacker: {refusals.count(None)} checks, then "
        f"{'too many attempts' if (refusals[-1] or '').startswith('too many attempts') else refusals}; "
        f"the owner's own address: "
        f"{'approved, ran' if finished[:2] == (0, b'owner-in' + bytes([10])) else finished}"
    )
    row = "limits: a stolen password used from 6 addresses, then the owner"
    assert matrix(row, expected, got) == expected


SOCKET_FLOOD = """
import socket, sys, time
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
    except OSError:
        pass
    s.close()
"""


@pytest.fixture
def flooded(deployments, emulator):
    """The shared deployment with {"exempt_users": "sa-bob"}."""
    return deployments.get({"exempt_users": "sa-bob"})


def test_a_flood_of_connections_on_the_socket_does_not_turn_logins_away(flooded, scripts, matrix):
    flood = scripts("connect-flood.py", SOCKET_FLOOD)
    flooders = [
        subprocess.Popen(
            [
                "runuser",
                "-u",
                "sa-carol",
                "--",
                "/usr/bin/python3",
                str(flood),
                str(flooded.socket),
                "25",
            ]
        )
        for _ in range(8)
    ]
    try:
        time.sleep(1)
        results = [flooded.ssh("sa-bob", "echo in").finish(timeout=60)[:2] for _ in range(10)]
    finally:
        for flooder in flooders:
            flooder.kill()
            flooder.wait()
    got = f"{sum(result == (0, b'in' + bytes([10])) for result in results)}/10 exempt logins ran"
    assert matrix(
        "socket: 8 local processes flood it with connections", "10/10 exempt logins ran", got
    ) == ("10/10 exempt logins ran")


@pytest.fixture
def flooded_audit(deployments, emulator):
    """A deployment that exempts sa-bob and writes an audit log."""
    return deployments.get({"exempt_users": "sa-bob", "audit_log": "/tmp/sa-audit-flooded.jsonl"})


def test_claiming_new_addresses_from_inside_a_login_is_still_one_flood(flooded_audit, scripts, matrix):
    audit = Path("/tmp/sa-audit-flooded.jsonl")
    audit.unlink(missing_ok=True)
    try:
        script = scripts("vary.py", VARYING_CONNECTIONS)
        session = flooded_audit.ssh("sa-bob", f"/usr/bin/python3 {script} {flooded_audit.socket} 300")
        status, out, err = session.finish(timeout=120)
        assert status == 0, err
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
    finally:
        audit.unlink(missing_ok=True)
    refused = [line for line in lines if line["reason"].startswith("the client address does not")]
    expected = f"300 refused; at most {DENIAL_BURST + 10} logged, all as 127.0.0.1"
    got = (
        f"{json.loads(out).get('the client address does not match this SSH connection. Access denied.')}"
        f" refused; at most {DENIAL_BURST + 10 if len(refused) <= DENIAL_BURST + 10 else len(refused)}"
        f" logged, all as {','.join(sorted({line['client'] for line in refused}))}"
    )
    row = "audit: 300 login lines claiming other addresses from inside a login"
    assert matrix(row, expected, got) == expected


NESTED = """
import socket, sys
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
    s.sendall(b'{"v":1,"x":' + b"[" * 60000 + b"\\n")
    s.recv(100)
    s.close()
"""


def test_deeply_nested_json_is_bad_input_not_a_traceback(gate, scripts, matrix):
    before = gate.service.log_text()
    started = time.monotonic()
    run_as("sa-carol", scripts("nested.py", NESTED), str(gate.socket), "200")
    # The burst, and the bucket's refill while the 200 lines were sent (a slow machine's seconds).
    allowed = DENIAL_BURST + int((time.monotonic() - started) * DENIALS_PER_SECOND) + 1
    log = gate.service.log_text()[len(before) :]
    tracebacks = log.count("Traceback")
    warnings = log.count("sent no valid login line: JSON nested too deeply")
    expected = f"0 tracebacks; at most {DENIAL_BURST} warnings"
    shown = DENIAL_BURST if warnings <= allowed else warnings
    got = f"{tracebacks} tracebacks; at most {shown} warnings"
    assert matrix("socket: 200 lines of 60,000 nested brackets", expected, got) == expected
