"""Fleet mode on one machine: a real PostgreSQL, two hub replicas behind a balancer, SSH hosts
(real sshd, real ssh client) whose services are agents enrolled with `ssh-auth fleet`."""

import base64
import concurrent.futures
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from emulator.phone import page_forms
from harness.deployment import USERS
from harness.emulator import VENV_BIN
from harness.fleet import ssh_auth
from harness.pam_gate import PamGate, PromptAnswerer, short_url
from harness.people import Approver, PhoneHolder
from harness.processes import free_port, send_through
from webserver.fleet.hub_client import load_host_key
from webserver.fleet.signing import sign

ALICE = USERS["sa-alice"]
APPROVED = "ssh-auth: approved on your phone.\n"


@pytest.fixture(scope="module")
def hosts(fleet):
    """Two hosts in ForceCommand mode and one in auth-time mode."""
    return {
        "a": fleet.add_host("host-a"),
        "b": fleet.add_host("host-b"),
        "pam": fleet.add_host("host-pam", kind=PamGate),
    }


@pytest.fixture(autouse=True)
def replicas_running(fleet):
    """Every test starts with both replicas up, the database up, the balancer on replica 1."""
    if fleet.postgres.server is None:
        fleet.postgres.start()
    for replica in fleet.replicas:
        if replica.process.process is None or replica.process.process.poll() is not None:
            replica.start()
    fleet.balancer.route(0)
    yield
    for host in fleet.hosts.values():
        host.end_sessions()


def marker(host) -> str:
    path = host.root / "run" / f"ran-{secrets.token_hex(4)}"
    return str(path)


def wait_until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def signed_post(host, path: str, body: dict, key=None, name=None, url=None) -> requests.Response:
    """A request to the hub as `host` would send it (optionally with another key or name)."""
    data = json.dumps(body).encode()
    headers = sign(key or load_host_key(str(host.host_key)), name or host.name, "POST", path, data)
    return requests.post(
        (url or host.fleet.replicas[0].url) + path,
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )


# --- the login, served by any replica ------------------------------------------------------------


def test_an_approval_served_by_replica_2_reaches_host_a_and_only_it(fleet, hosts, emulator):
    on_a = hosts["a"].ssh("sa-alice", "echo on-a")
    on_b = hosts["b"].ssh("sa-alice", "echo on-b")
    url_a, url_b = on_a.check_url(), on_b.check_url()
    assert url_a != url_b  # the same user on host B has a check of its own
    fleet.balancer.route(1)
    page = PhoneHolder(ALICE).approve(url_a)
    assert "sa-alice is signing in to host-a." in page.text  # the hub's name for the host
    assert on_a.finish()[:2] == (0, b"on-a\n")
    check_a = url_a.split("/checks/")[1].split("/")[0]
    assert f"login allowed user=sa-alice uid={os.stat('/home/sa-alice').st_uid}" in (
        fleet.replicas[1].log_text()
    )
    assert check_a in fleet.replicas[1].log_text()
    time.sleep(0.5)
    assert on_b.process.poll() is None  # host B's login still waits for its own phone
    PhoneHolder(ALICE).deny(url_b)
    status, out, err = on_b.finish()
    assert (status, out) == (255, b"") or (status != 0 and out == b"")
    assert err.endswith("ssh-auth: the login was denied on the phone. Access denied.\n")
    rows = fleet.audit(f"check_id = '{check_a}'")
    assert rows == [("host-a", "sa-alice", "allowed", "approved on your phone.")]


def test_the_confirmation_page_names_the_host_from_the_hubs_list(fleet, hosts):
    session = hosts["b"].ssh("sa-alice", "echo ok")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    assert "<dd>host-b</dd>" in page.text
    holder.phone.answer(page, "deny")
    session.finish()


# --- host identity --------------------------------------------------------------------------------


def test_host_b_cannot_read_or_abandon_host_as_logins(fleet, hosts):
    on_a = hosts["a"].ssh("sa-alice", "echo still-mine")
    check_a = on_a.check_url().split("/checks/")[1].split("/")[0]
    read = signed_post(hosts["b"], "/fleet/v1/verdicts", {"ids": [check_a], "wait": 0})
    assert read.status_code == 200 and read.json() == {"verdicts": [], "unknown": [check_a]}
    abandon = signed_post(hosts["b"], f"/fleet/v1/logins/{check_a}/abandon", {})
    assert abandon.json() == {"abandoned": False}
    PhoneHolder(ALICE).approve(on_a.check_url())
    assert on_a.finish()[:2] == (0, b"still-mine\n")


@pytest.mark.parametrize(
    "case, logged",
    [
        ("another host's key", "refused a fleet request from host host-a: bad signature"),
        ("a replayed request", "refused a fleet request from host host-a: replayed request"),
        ("an unknown host", "refused a fleet request from host host-z: unknown host"),
        ("a stale date", "refused a fleet request from host host-a: date outside the replay window"),
        ("a changed body", "refused a fleet request from host host-a: bad signature"),
    ],
)
def test_forged_replayed_and_unknown_requests_are_refused_and_logged(fleet, hosts, case, logged):
    host_a, path = hosts["a"], "/fleet/v1/verdicts"
    body = {"ids": [], "wait": 0}
    replica = fleet.replicas[0]
    before = len(replica.log_text())
    if case == "another host's key":
        answer = signed_post(host_a, path, body, key=load_host_key(str(hosts["b"].host_key)))
    elif case == "an unknown host":
        answer = signed_post(host_a, path, body, name="host-z")
    else:
        data = json.dumps(body).encode()
        headers = sign(load_host_key(str(host_a.host_key)), "host-a", "POST", path, data)
        if case == "a stale date":
            headers["SSH-Auth-Date"] = str(int(time.time()) - 301)
        if case == "a changed body":
            data = json.dumps({"ids": ["x"], "wait": 0}).encode()
        headers["Content-Type"] = "application/json"
        send = lambda: requests.post(replica.url + path, data=data, headers=headers, timeout=5)  # noqa: E731
        if case == "a replayed request":
            assert send().status_code == 200  # the first time it is genuine
        answer = send()
    error = "clock" if case == "a stale date" else "refused"  # the host's clock is its to fix
    assert (answer.status_code, answer.json()) == (401, {"error": error})
    wait_until(lambda: logged in replica.log_text()[before:], what=logged)


def test_a_revoked_host_is_refused_at_its_next_login(fleet, hosts):
    host = fleet.add_host("host-r")
    waiting = host.ssh("sa-alice", "echo waited")
    waiting.check_url()
    revoked = ssh_auth("fleet", "revoke-host", "--config", fleet.hub_config, "host-r").stdout
    assert revoked == "revoked host-r; denied its 1 waiting logins\n"
    assert waiting.finish()[2].endswith(
        "ssh-auth: this server was revoked from the fleet. Access denied.\n"
    )
    status, out, err = host.ssh("sa-alice", "echo ran").finish()
    assert (status != 0, out) == (True, b"")
    assert err == (
        "ssh-auth: the ssh-auth hub does not accept this server (not enrolled, or revoked). "
        "Access denied.\n"
    )
    assert "refused a fleet request from host host-r: revoked host" in fleet.logs()
    listed = ssh_auth("fleet", "list-hosts", "--config", fleet.hub_config).stdout
    assert "host-r\trevoked\t" in listed and "host-a\tjoined\t" in listed


def test_an_enrolment_token_works_once(fleet, hosts, tmp_path):
    invited = ssh_auth("fleet", "add-host", "--config", fleet.hub_config, "host-once").stdout
    assert "(not as an argument: every local user can read a command line)" in invited
    token = invited.splitlines()[1].strip()
    config = tmp_path / "ssh-auth.conf"
    for attempt in ("first", "second"):
        config.write_text(f"public_url = http://127.0.0.1:{free_port()}\nsocket = {tmp_path}/s.sock\n")
        key = tmp_path / f"{attempt}.key"
        argv = ["fleet", "join", "--config", str(config), "--host-key", str(key)]
        result = subprocess.run(
            [str(VENV_BIN / "ssh-auth"), *argv, fleet.replicas[0].url],
            capture_output=True,
            text=True,
            input=token + "\n",  # as pasted: never on the command line
        )
        if attempt == "first":
            assert result.returncode == 0, result.stderr
            assert "joined the fleet as host-once" in result.stdout
            assert "role = agent" in config.read_text()
            assert oct(os.stat(tmp_path / "first.key").st_mode & 0o777) == "0o600"
        else:
            assert result.returncode != 0
            assert "the hub refused the enrolment (HTTP 401)" in result.stderr
            assert "Traceback" not in result.stderr


# --- failures ---------------------------------------------------------------------------------


def test_a_replica_killed_while_logins_wait_every_login_still_gets_its_verdict(fleet, hosts):
    sessions = [hosts[h].ssh("sa-alice", f"echo {h}") for h in ("a", "b", "a", "b")]
    urls = [session.check_url() for session in sessions]
    fleet.replicas[0].stop(signal.SIGKILL)  # the agents' first hub URL, holding their long-polls
    fleet.balancer.route(1)
    for url in urls:
        PhoneHolder(ALICE).approve(url)
    results = [session.finish()[:2] for session in sessions]
    assert results == [(0, b"a\n"), (0, b"b\n"), (0, b"a\n"), (0, b"b\n")]


def test_the_same_approval_posted_to_both_replicas_at_once_wins_once(fleet, hosts):
    session = hosts["a"].ssh("sa-alice", "echo once")
    holder = PhoneHolder(ALICE)
    page = holder.scan(session.check_url())
    form = page_forms(page.text)[0]
    data = {**dict(form.fields), "action": "approve"}
    cookies = holder.phone.session.cookies
    answers, start = [], threading.Barrier(2)

    def post(replica):
        start.wait()
        answers.append(
            requests.post(f"{replica.url}/complete-check", data=data, cookies=cookies, timeout=10)
        )

    threads = [threading.Thread(target=post, args=(r,)) for r in fleet.replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text[:300] for a in answers]
    assert session.finish()[:2] == (0, b"once\n")
    check = session.check_url().split("/checks/")[1].split("/")[0]
    assert fleet.audit(f"check_id = '{check}'") == [
        ("host-a", "sa-alice", "allowed", "approved on your phone.")
    ]


def test_postgresql_stopped_denies_with_one_line_and_logins_work_again_when_it_returns(fleet, hosts):
    fleet.postgres.stop()
    try:
        status, out, err = hosts["a"].ssh("sa-alice", "echo ran").finish()
        assert (status != 0, out) == (True, b"")
        assert err == "ssh-auth: the ssh-auth hub cannot reach its database. Access denied.\n"
        health = requests.get(f"{fleet.replicas[0].url}/healthz", timeout=10)
        assert (health.status_code, health.json()) == (
            503,
            {"ok": False, "problem": "database unavailable"},
        )  # a load balancer's health check takes the replica out
    finally:
        fleet.postgres.start()
    deadline = time.monotonic() + 20
    while True:  # the replicas' pools replace their dead connections
        session = hosts["a"].ssh("sa-alice", "echo back")
        try:
            url = session.check_url(timeout=10)
            break
        except AssertionError:
            session.kill()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    PhoneHolder(ALICE).approve(url)
    assert session.finish()[:2] == (0, b"back\n")
    # What the hub could not record then, the host forwarded once the database was back.
    wait_until(
        lambda: fleet.audit("reason LIKE '%cannot reach its database%'"),
        what="the host's forwarded denial in the central audit",
    )


def test_no_hub_answering_denies_even_with_failmode_safe(fleet, hosts):
    assert "failmode = safe" in fleet.replicas[0].config.read_text()
    for replica in fleet.replicas:
        replica.stop()
    status, out, err = hosts["b"].ssh("sa-alice", "echo ran").finish()
    assert (status != 0, out) == (True, b"")
    assert err == "ssh-auth: the ssh-auth hub cannot be reached. Access denied.\n"


def test_a_dropped_listen_connection_loses_no_verdict(fleet, hosts):
    session = hosts["a"].ssh("sa-alice", "echo heard")
    url = session.check_url()
    wait_until(lambda: "listening for verdicts" in fleet.replicas[0].log_text())
    killed = fleet.postgres.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = "
        "'LISTEN ssh_auth_verdicts'"
    )
    assert killed.strip() == "2"  # one per replica
    PhoneHolder(ALICE).approve(url)  # announced while no replica listens
    assert session.finish()[:2] == (0, b"heard\n")
    assert "the verdict LISTEN connection was lost" in fleet.logs()


def test_expiry_denies_and_is_audited(fleet, hosts):
    session = hosts["b"].ssh("sa-alice", "echo late")
    check = session.check_url().split("/checks/")[1].split("/")[0]
    fleet.postgres.psql(
        f"UPDATE logins SET expires_at = now() WHERE check_id = '{check}'", database="ssh_auth"
    )
    status, out, err = session.finish()
    assert (status != 0, out) == (True, b"")
    assert err.endswith("ssh-auth: the phone check expired before it was completed. Access denied.\n")
    rows = fleet.audit(f"check_id = '{check}'")
    assert rows == [
        (
            "host-b",
            "sa-alice",
            "denied",
            "the phone check expired before it was completed. Access denied.",
        )
    ]


def test_a_refusal_by_the_hubs_policy_is_in_the_central_audit_table(fleet, hosts):
    status, out, err = hosts["a"].ssh("sa-carol", "echo x").finish()
    assert err == (
        "ssh-auth: no phone is registered for this account; ask your administrator. Access denied.\n"
    )
    wait_until(lambda: ("host-a", "sa-carol", "denied") in {row[:3] for row in fleet.audit()})


def test_a_reuse_decided_by_the_host_is_forwarded_to_the_central_audit_table(fleet, hosts):
    control = f"/tmp/sa-cm-{secrets.token_hex(6)}"
    options = ("-o", "ControlMaster=yes", "-o", f"ControlPath={control}")
    master = hosts["b"].ssh("sa-alice", "sleep 60", options=options)
    PhoneHolder(ALICE).approve(master.check_url())
    master.wait_for("approved on your phone")
    again = hosts["b"].ssh("sa-alice", "echo reused", options=("-o", f"ControlPath={control}"))
    assert again.finish()[:2] == (0, b"reused\n")
    master.kill()
    wait_until(lambda: ("host-b", "sa-alice", "reused") in {row[:3] for row in fleet.audit()})


# --- the representative subset through a fleet ---------------------------------------------------


def test_ctrl_c_abandons_the_login_at_the_hub(fleet, hosts):
    path = marker(hosts["a"])
    session = hosts["a"].ssh("sa-alice", f"touch {path}", tty=True, stdin=subprocess.PIPE)
    url = session.check_url()
    holder = PhoneHolder(ALICE)
    page = holder.scan(url)
    session.process.stdin.write(b"\x03")
    session.process.stdin.flush()
    status, out, _ = session.finish()
    assert status != 0 and "ssh-auth: interrupted (SIGINT). Access denied." in out.decode()
    check = url.split("/checks/")[1].split("/")[0]
    wait_until(lambda: fleet.audit(f"check_id = '{check}'"), what="the abandoned login's audit row")
    assert fleet.audit(f"check_id = '{check}'")[0][2:] == (
        "denied",
        "the login was abandoned (the SSH session went away).",
    )
    late = holder.phone.answer(page, "approve")
    assert late.status_code == 409 and "This login has ended" in late.text
    time.sleep(0.5)
    assert not os.path.exists(path)


def test_scp_through_a_fleet_host(fleet, hosts, tmp_path):
    payload = os.urandom(100_000)
    (tmp_path / "up.bin").write_bytes(payload)
    host = hosts["a"]
    scp = ["scp", "-q", "-O", "-P", str(host.port), *host.client_options()]
    session = host.client([*scp, str(tmp_path / "up.bin"), "sa-alice@127.0.0.1:fleet-up.bin"])
    with Approver(session, ALICE):
        status, _, err = session.finish(timeout=60)
    assert status == 0, err
    assert Path("/home/sa-alice/fleet-up.bin").read_bytes() == payload
    os.unlink("/home/sa-alice/fleet-up.bin")


def test_auth_time_mode_on_a_fleet_host_gates_a_forward(fleet, hosts):
    host, local = hosts["pam"], free_port()
    with socket.create_server(("127.0.0.1", 0)) as echo:
        threading.Thread(target=serve_echo, args=(echo,), daemon=True).start()
        forward = f"{local}:127.0.0.1:{echo.getsockname()[1]}"
        client = host.login("sa-alice", options=("-N", "-L", forward))
        url = short_url(client)
        before = send_through(local, b"early")
        PhoneHolder(ALICE).approve(url)
        client.press_enter()
        wait_until(lambda: send_through(local, b"probe").startswith("OPEN"), what="the forward")
        after = send_through(local, b"after")
        client.kill()
    assert before.split(" ")[0] == "refused" and after.startswith("OPEN")


def serve_echo(server: socket.socket) -> None:
    """Echo every connection's bytes back until the server socket is closed."""
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


def test_auth_time_mode_on_a_fleet_host_runs_the_command(fleet, hosts):
    host = hosts["pam"]
    client = host.login("sa-alice", "echo pam-fleet")
    with PromptAnswerer(client, ALICE):
        status, out, _ = client.finish(timeout=60)
    assert status == 0 and b"pam-fleet" in out


# --- administration ----------------------------------------------------------------------------


def test_init_db_again_changes_nothing(fleet):
    again = ssh_auth("fleet", "init-db", "--config", fleet.hub_config).stdout
    assert again == "database schema already at version 1\n"


def test_users_are_registered_once_on_the_hub_and_refused_on_a_host(fleet, hosts):
    added = ssh_auth("register-user", "--config", fleet.hub_config, "sa-dave", "+44 7700 900999")
    assert added.stdout == "registered sa-dave as +447700900999 for the fleet\n"
    listed = ssh_auth("list-users", "--config", fleet.hub_config).stdout
    assert "sa-dave\t+447700900999\n" in listed and "sa-alice\t+447700900123\n" in listed
    assert ssh_auth("unregister-user", "--config", fleet.hub_config, "sa-dave").stdout == (
        "unregistered sa-dave from the fleet\n"
    )
    on_host = subprocess.run(
        [
            str(VENV_BIN / "ssh-auth"),
            "register-user",
            "--config",
            str(hosts["a"].config),
            "sa-x",
            "+447700900111",
        ],
        capture_output=True,
        text=True,
    )
    assert (on_host.returncode, on_host.stdout) == (2, "")
    assert on_host.stderr == "ssh-auth: this host is a fleet agent: register users on the hub\n"


def test_a_host_has_no_api_secret_and_no_phone_numbers(hosts):
    config = hosts["a"].config.read_text()
    assert "role = agent" in config and "credentials" not in config and "user=" not in config
    assert "host_name = host-a" in config


def test_allow_once_on_the_hub_lets_in_until_it_ends(fleet, hosts):
    ssh_auth("allow-once", "--config", fleet.hub_config, "sa-bob", "--for", "5m")
    status, out, err = hosts["a"].ssh("sa-bob", "echo roaming").finish()
    assert (status, out) == (0, b"roaming\n")
    assert "an administrator exempted this account from the phone check until" in err
    fleet.postgres.psql(
        "UPDATE users SET allow_once_until = now() - interval '1 second' WHERE name = 'sa-bob'",
        database="ssh_auth",
    )
    session = hosts["a"].ssh("sa-bob", "echo checked")
    PhoneHolder(USERS["sa-bob"]).approve(session.check_url())  # the phone again, once it ended
    assert session.finish()[:2] == (0, b"checked\n")


def doctor(config) -> str:
    return subprocess.run(
        [str(VENV_BIN / "ssh-auth"), "doctor", "--config", str(config)], capture_output=True, text=True
    ).stdout


def test_doctor_on_a_hub_checks_its_database(fleet):
    lines = doctor(fleet.hub_config)
    assert "✔ database answers, schema at version 1\n" in lines
    assert "✔ the webhook answers at" in lines
    fleet.postgres.stop()
    try:
        assert "✗ database: the database is unavailable" in doctor(fleet.hub_config)
    finally:
        fleet.postgres.start()


def test_doctor_on_a_host_checks_its_key_and_its_hub(fleet, hosts):
    lines = doctor(hosts["a"].config)
    assert "✔ host key" in lines and ": mode 0600\n" in lines
    assert "✔ the hub accepts host-a's signed requests" in lines
    assert "credentials" not in lines  # a host has no API secret to check
    for replica in fleet.replicas:
        replica.stop()
    assert "✗ the hub does not accept this host's requests" in doctor(hosts["a"].config)


# --- a host gone bad (a stolen host key) -----------------------------------------------------


def test_a_host_holds_at_most_two_long_polls_at_once_on_a_replica(fleet, hosts):
    waiting = hosts["a"].ssh("sa-alice", "echo polled")
    check = waiting.check_url().split("/checks/")[1].split("/")[0]
    body = {"ids": [check], "wait": 3}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: signed_post(hosts["a"], "/fleet/v1/verdicts", body), range(6)))
    assert sorted(a.status_code for a in answers).count(429) >= 3  # the agent holds one of two
    assert {a.json()["error"] for a in answers if a.status_code == 429} == {"busy"}
    other = hosts["b"].ssh("sa-bob", "echo unaffected")  # another host is not slowed
    PhoneHolder(USERS["sa-bob"]).approve(other.check_url())
    assert other.finish()[:2] == (0, b"unaffected\n")
    PhoneHolder(ALICE).approve(waiting.check_url())
    assert waiting.finish()[:2] == (0, b"polled\n")


def test_a_trusted_place_does_not_lift_a_hosts_share_of_the_fleets_checks(fleet):
    from webserver.fleet.database import Database
    from webserver.fleet.shared_policy import SharedBudget

    fleet.postgres.psql("DELETE FROM check_events", database="ssh_auth")  # this test's minute only
    database = Database(fleet.postgres.url, max_size=1)
    try:
        budget = SharedBudget(database, per_address=1000, per_minute=4)
        host = f"host-{secrets.token_hex(3)}"
        taken = [budget.take(host, "sa-alice", "198.51.100.7", trusted=True) for _ in range(3)]
        assert taken[:2] == [None, None] and taken[2][0] == "service"  # half of 4 a minute
        assert budget.take(f"{host}-2", "sa-alice", "198.51.100.7", trusted=True) is None
    finally:
        database.close()


def test_forwarded_audit_lines_are_limited_per_host(fleet, hosts):
    item = {"user": "sa-x", "uid": 3_000_000_000, "client": "local", "outcome": "denied",
            "reason": "flood", "duration": 0.0}  # fmt: skip
    statuses = [
        signed_post(hosts["b"], "/fleet/v1/audit", {"decisions": [item] * 100}).status_code
        for _ in range(12)
    ]
    assert statuses[0] == 200 and statuses[-1] == 429  # a uid past 2**31 is stored as it is


def test_a_small_order_public_key_cannot_join(fleet):
    invited = ssh_auth("fleet", "add-host", "--config", fleet.hub_config, "host-weak").stdout
    token = invited.splitlines()[1].strip()
    identity = base64.b64encode(bytes([1]) + bytes(31)).decode()  # verifies any (R=1, S=0)
    weak = requests.post(
        f"{fleet.replicas[0].url}/fleet/v1/join",
        json={"token": token, "public_key": identity},
        timeout=10,
    )
    assert weak.status_code == 401
    genuine = base64.b64encode(os.urandom(32)).decode()
    assert requests.post(
        f"{fleet.replicas[0].url}/fleet/v1/join",
        json={"token": token, "public_key": genuine},
        timeout=10,
    ).json() == {"host": "host-weak"}  # the token was not spent by the refused key


def test_a_malformed_verdict_answer_denies_and_the_poller_goes_on():
    from webserver.fleet.agent import VerdictPoller

    poller = VerdictPoller(client=None)
    waiter = poller.add("a-login", deadline=time.monotonic() + 60)
    try:
        poller._deliver(
            {"verdicts": [{"id": ["x"]}, {"id": "a-login", "allow": True, "outcome": ["allowed"]}]}
        )
        assert waiter.verdict is not None and not waiter.verdict.allow
    finally:
        poller.remove(waiter)
