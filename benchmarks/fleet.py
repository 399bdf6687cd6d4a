"""Fleet-mode benchmark: 1,000 logins waiting at once across two hub replicas and four hosts,
then approved by phones; how fast each verdict reaches its login, and what the hub spends.

    .venv/bin/python -m benchmarks.fleet            # 1,000 logins (as root): about 2½ minutes
    .venv/bin/python -m benchmarks.fleet --quick    # 20 logins: the smoke run CI does

Real processes on loopback (harness/fleet.py): PostgreSQL, two hub replicas behind the balancer,
four hosts (a real sshd and its agent each) and the emulator. An agent answers only a caller inside
a live SSH connection (webserver/connection.py) and lets each connection hold three waiting logins
(webserver/broker.py LIMITS), so the 800 socket logins run the shim's own `sshshim.login.ask`,
three at a time, in a small driver started through sshd from an exempt address; the other 200 are
whole logins (the ssh client, sshd's ForceCommand, the shim). 1,000 whole logins do not fit.
"""

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from benchmarks.fleet_load import (
    ALLOWED,
    APPROVERS,
    DRIVER,
    DRIVER_NETWORK,
    LOGGED,
    PER_CONNECTION,
    SSHD_NETWORK,
    STAMPER,
    STARTING,
    Client,
    Clients,
    Login,
    Monitor,
    RoundRobin,
    phone_approves,
)
from benchmarks.fleet_report import report
from harness.accounts import Ledger
from harness.deployment import Gate
from harness.emulator import Emulator
from harness.fleet import Fleet, ssh_auth
from harness.people import PhoneHolder


def point_agent_at(host: Gate, fleet: Fleet, first: int) -> None:
    """Make the agent ask replica `first` first (it fails over to the other), and restart it."""
    urls = [replica.url for replica in fleet.replicas]
    order = urls[first:] + urls[:first]
    ssh_auth("config", "set", "--config", str(host.config), "hub_urls", ",".join(order))
    host.service.stop()
    host.service.start()


def whole_login(clients: Clients, host: Gate, user: str, address: str) -> Client:
    """`ssh user@host echo ran` from `address`, under the stamper."""
    argv = host.ssh_argv(user, "echo ran", options=("-o", f"BindAddress={address}"))
    return clients.start(["/usr/bin/python3", "-I", "-c", STAMPER, *argv])


def plan(hosts: list[Gate], users: dict, socket_logins: int, sshd_logins: int, clients: Clients):
    """Yield, lazily, each client to start with its logins; every (user, address) pair is used
    by one client per host, so no per-address limit of the agents is reached."""
    names = list(users)
    for index, host in enumerate(hosts):
        driver = host.root / "lib" / "fleet_driver.py"
        driver.write_text(DRIVER)
        driver.chmod(0o644)
        share = socket_logins // len(hosts) + (index < socket_logins % len(hosts))
        for n, start in enumerate(range(0, share, PER_CONNECTION)):
            count = min(PER_CONNECTION, share - start)
            user = names[n % len(names)]
            address = f"{DRIVER_NETWORK}.{1 + n // len(names)}"
            command = f"/usr/bin/python3 -I {driver} {host.shim} {host.socket} {count}"
            argv = host.ssh_argv(user, command, options=("-o", f"BindAddress={address}"))
            client = clients.start(argv)
            yield [Login(host, "socket", user, users[user], client, s) for s in range(count)]
        share = sshd_logins // len(hosts) + (index < sshd_logins % len(hosts))
        for n in range(share):
            user = names[n % len(names)]
            address = f"{SSHD_NETWORK}.{1 + n // len(names)}"
            yield [Login(host, "sshd", user, users[user], whole_login(clients, host, user, address))]


def all_waiting(batches, timeout: float) -> list[Login]:
    """Start the clients, STARTING at a time, until every login shows its check URL."""
    logins: list[Login] = []
    starting: list[list[Login]] = []
    deadline = time.monotonic() + timeout
    batches = iter(batches)
    more = True
    while more or starting:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sum(x.check_url is not None for x in logins)} logins waiting")
        while more and len(starting) < STARTING:
            batch = next(batches, None)
            if batch is None:
                more = False
                break
            logins += batch
            starting.append(batch)
        time.sleep(0.02)
        for batch in list(starting):
            for login in batch:
                login.update()
                if login.denied:
                    raise RuntimeError(login.failure())
            if all(login.check_url for login in batch):
                starting.remove(batch)
    return logins


def approve(fleet: Fleet, logins: list[Login]) -> list[int]:
    """Every login approved by its phone, in a random order, APPROVERS at once in processes of
    their own (their stamps wait for no thread of this one); how many each replica finished."""
    before = [len(ALLOWED.findall(replica.log_text())) for replica in fleet.replicas]
    order = random.sample(logins, len(logins))
    context = multiprocessing.get_context("fork")
    with RoundRobin(fleet), ProcessPoolExecutor(APPROVERS, mp_context=context) as pool:
        answers = pool.map(phone_approves, [x.check_url for x in order], [x.sim for x in order])
        for login, (pressed, answered, wrong) in zip(order, answers, strict=True):
            login.pressed, login.answered = pressed, answered
            login.denied = login.denied or wrong
    after = [len(ALLOWED.findall(replica.log_text())) for replica in fleet.replicas]
    return [b - a for a, b in zip(before, after, strict=True)]


def all_decided(logins: list[Login], timeout: float) -> None:
    """Until every login has its verdict (or failed), or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for login in logins:
            login.update()
        if all(x.denied or (x.verdict and (x.kind == "socket" or x.shell)) for x in logins):
            return
        time.sleep(0.1)


def warm_up(fleet: Fleet, hosts: list[Gate], users: dict, clients: Clients) -> list[Login]:
    """One whole login per host, approved through each replica in turn: tokens and JWKS fetched."""
    user = next(iter(users))
    logins = []
    for index, host in enumerate(hosts):
        client = whole_login(clients, host, user, f"{SSHD_NETWORK}.250")
        login = Login(host, "sshd", user, users[user], client)
        logins += all_waiting([[login]], timeout=30)
        fleet.balancer.route(index % 2)
        PhoneHolder(login.sim).approve(login.check_url)
        all_decided([login], timeout=30)
        if not login.shell:
            raise RuntimeError(f"the warm-up login on {host.name} failed: {login.client.text()}")
    return logins


def deliveries(fleet: Fleet, hosts: list[Gate], logins: list[Login], warm: list[Login]) -> dict:
    """Whether each verdict reached the right host: the hub's table, and each agent's own log."""
    rows = fleet.postgres.psql("SELECT check_id, host, user_name FROM logins", database="ssh_auth")
    created = {line.split("|")[0]: tuple(line.split("|")[1:]) for line in rows.splitlines() if line}
    expected = {host.name: set() for host in hosts}
    for login in warm + logins:
        expected[login.host.name].add(login.check_id)
    allowed = {host.name: set(ALLOWED.findall(host.service.log_text())) for host in hosts}
    return {
        "own_host": sum(created.get(x.check_id) == (x.host.name, x.user) for x in logins),
        "only_own": sum(allowed[name] == expected[name] for name in expected),
        "after_own": sum(
            x.verdict is not None and x.pressed is not None and x.verdict > x.pressed for x in logins
        ),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 logins: a smoke run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks need root: they create users and run private sshds", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that everything is cleaned up
    users = {f"sa-f{n:02d}": f"4477009{30000 + n}" for n in range(4 if args.quick else 50)}
    logs = Path(tempfile.mkdtemp(prefix="ssh-auth-bench-fleet-"))
    ledger = Ledger()
    try:
        return run(args, users, logs)
    finally:
        ledger.restore(only=users)  # ours only: a test run beside this one keeps its accounts
        if args.keep_logs:
            print(f"logs in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)


def run(args, users: dict, logs: Path) -> int:
    """The fleet, the logins waiting, the approvals; then the table."""
    socket_logins, sshd_logins = (16, 4) if args.quick else (800, 200)
    # The hub's limits let this many checks start; checks live long enough for the whole run.
    settings = {"max_checks_per_minute": "100000", "max_checks_per_user": "1000", "ttl": "600"}
    clients = Clients()
    try:
        with (
            Emulator(logs / "emulator.log", "--ttl", "600", "--rate-limit", "100000") as emulator,
            Fleet(emulator, settings=settings, users=users) as fleet,
        ):
            exempt = (f"{DRIVER_NETWORK}.0/24",)
            hosts = [fleet.add_host(f"host-{n + 1}", exempt_networks=exempt) for n in range(4)]
            for index, host in enumerate(hosts):
                point_agent_at(host, fleet, index * 2 // len(hosts))  # two agents a replica
            warm = warm_up(fleet, hosts, users, clients)
            try:
                batches = plan(hosts, users, socket_logins, sshd_logins, clients)
                figures = measure(args, fleet, batches)
                figures["deliveries"] = deliveries(fleet, hosts, figures["logins"], warm)
                figures["failures"] = failures(fleet, figures["logins"])
                figures["relayed"] = relayed(fleet, hosts, figures["logins"])
            finally:
                if args.keep_logs:
                    keep_logs(fleet, hosts, logs)
    finally:
        clients.close()
    return report(figures, socket_logins + sshd_logins)


def relayed(fleet: Fleet, hosts: list[Gate], logins: list[Login]) -> list[float]:
    """Seconds from a replica's log line for each allow (after its commit) to the agent's (after
    it sent the verdict to the socket): the fleet's own part, to the millisecond of the logs."""

    def stamps(text: str) -> dict[str, float]:
        return {
            check_id: datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for when, check_id in LOGGED.findall(text)
        }

    stored = stamps(fleet.logs())
    sent = stamps("".join(host.service.log_text() for host in hosts))
    return [sent[x.check_id] - stored[x.check_id] for x in logins if x.check_id in sent.keys() & stored]


def failures(fleet: Fleet, logins: list[Login]) -> list[str]:
    """The first few failed logins, each with the lines the hub and its agent logged about it."""
    found = []
    for login in [x for x in logins if x.denied or not x.verdict][:5]:
        logged = (fleet.logs() + login.host.service.log_text()).splitlines()
        lines = [line for line in logged if login.check_id and login.check_id in line]
        found.append(
            f"{login.kind} login of {login.user} on {login.host.name}, check {login.check_id}: "
            f"{login.denied or 'no verdict'}\n  " + "\n  ".join(lines[-8:])
        )
    return found


def keep_logs(fleet: Fleet, hosts: list[Gate], logs: Path) -> None:
    """The replicas', agents' and sshds' logs, copied before the fleet is taken down."""
    for replica in fleet.replicas:
        (logs / f"hub{replica.index}.log").write_text(replica.log_text())
    for host in hosts:
        (logs / f"{host.name}-agent.log").write_text(host.service.log_text())
        (logs / f"{host.name}-sshd.log").write_text(host.sshd.log_text())


def measure(args, fleet: Fleet, batches) -> dict:
    """The logins, all waiting, then all approved; the hub's CPU, memory and connections."""
    monitor = Monitor(fleet)
    figures = {"rss_before": monitor.rss_kb(), "connections_before": monitor.connections()}
    with monitor:
        cpu, requests = [monitor.cpu()], [monitor.requests()]
        started = time.monotonic()
        logins = all_waiting(batches, timeout=400)
        figures["to_wait"] = time.monotonic() - started
        sql = "SELECT count(*) FROM logins WHERE state = 'pending'"
        figures["waiting"] = int(fleet.postgres.psql(sql, database="ssh_auth"))
        cpu.append(monitor.cpu())
        requests.append(monitor.requests())
        figures["idle"] = 1.0 if args.quick else 5.0
        time.sleep(figures["idle"])  # all of them waiting: what that alone costs the hub
        monitor.sample()
        cpu.append(monitor.cpu())
        requests.append(monitor.requests())
        started = time.monotonic()
        figures["served"] = approve(fleet, logins)
        figures["to_approve"] = time.monotonic() - started
        all_decided(logins, timeout=120)
        cpu.append(monitor.cpu())
        requests.append(monitor.requests())
    figures.update(
        logins=logins,
        cpu=[b - a for a, b in pairwise(cpu)],
        requests=[b - a for a, b in pairwise(requests)],
        rss_peak=monitor.peak_rss_kb,
        connections_peak=monitor.peak_connections,
    )
    return figures


if __name__ == "__main__":
    sys.exit(main())
