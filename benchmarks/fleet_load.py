"""The fleet benchmark's load: drivers that hold logins over the agents' sockets with the shim's
own code, whole ssh logins with their stampers, phones that approve, and the hub's monitor."""

import json
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.__main__ import cpu_seconds
from harness.deployment import CHECK_URL, Gate
from harness.fleet import Fleet
from harness.people import PhoneHolder
from webserver.broker import LIMITS

PER_CONNECTION = LIMITS["connection"]  # waiting logins an agent allows one SSH connection
DRIVER_NETWORK = "127.0.2"  # exempt on every host: the drivers get a shell, not the shim
SSHD_NETWORK = "127.0.3"
APPROVERS = 32  # phones answering at once
STARTING = 24  # SSH connections being set up at once
CHECK_ID = re.compile(r"/checks/([0-9a-f-]{36})/redirect")
ALLOWED = re.compile(r"login allowed user=\S+ .*?check=([0-9a-f-]{36})")
LOGGED = re.compile(r"(?m)^(\S+ \S+) ssh-auth\.audit INFO login allowed .*?check=([0-9a-f-]{36})")

# Runs inside an SSH connection as the login user (sshd exempts its address, so it gets a shell):
# `count` logins over the agent's socket with the shim's own code, one JSON line for each
# challenge and each verdict, stamped with CLOCK_MONOTONIC (the same clock in every process).
DRIVER = """
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
from sshshim.login import Denied, ask
from sshshim.protocol import OP_LOGIN
from sshshim.terminal import Terminal

lock = threading.Lock()

def say(**message):
    with lock:
        sys.stdout.write(json.dumps(message) + "\\n")
        sys.stdout.flush()

class Screen(Terminal):
    def __init__(self, slot):
        super().__init__(open(os.devnull, "w"), False, 80, 24, True)
        self.slot = slot

    def show_challenge(self, challenge):
        say(slot=self.slot, check_url=challenge["check_url"])

def login(slot):
    request = {"op": OP_LOGIN, "command": "true", "connection": os.environ.get("SSH_CONNECTION")}
    try:
        ask(sys.argv[2], Screen(slot), request)
    except Denied as denied:
        say(slot=slot, at=time.monotonic(), denied=str(denied))
    else:
        say(slot=slot, at=time.monotonic(), allowed=True)

threads = [threading.Thread(target=login, args=(n,)) for n in range(int(sys.argv[3]))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""

# Around a whole login's ssh client: its output as JSON lines, each chunk stamped on arrival.
STAMPER = """
import json, os, selectors, subprocess, sys, time
ssh = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
selector = selectors.DefaultSelector()
selector.register(ssh.stdout, selectors.EVENT_READ, "out")
selector.register(ssh.stderr, selectors.EVENT_READ, "err")
while selector.get_map():
    for key, _ in selector.select():
        chunk = os.read(key.fd, 65536)
        at = time.monotonic()
        if not chunk:
            selector.unregister(key.fd)
            continue
        sys.stdout.write(json.dumps({"at": at, key.data: chunk.decode("latin-1")}) + "\\n")
        sys.stdout.flush()
sys.exit(ssh.wait())
"""


class Clients:
    """Every client the run starts, and one thread reading all their output (the stamps that
    count are taken by the clients' own processes, not in this busy one)."""

    def __init__(self):
        self.started: list[Client] = []
        self.selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pending: list[tuple[int, list]] = []
        self._wake_r, self._wake_w = os.pipe()
        self.selector.register(self._wake_r, selectors.EVENT_READ)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="clients", daemon=True)
        self._thread.start()

    def start(self, argv: list[str]) -> "Client":
        """Start a client; its output is read from now on."""
        client = Client(argv)
        self.started.append(client)
        with self._lock:
            self._pending += [(client.process.stdout.fileno(), client.out)]
            self._pending += [(client.process.stderr.fileno(), client.err)]
        os.write(self._wake_w, b"!")
        return client

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self.selector.select(timeout=1.0):
                if key.fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    with self._lock:
                        pending, self._pending = self._pending, []
                    for fd, chunks in pending:
                        self.selector.register(fd, selectors.EVENT_READ, chunks)
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.append(chunk)
                else:
                    self.selector.unregister(key.fd)

    def close(self) -> None:
        """Kill every client, then stop reading."""
        for client in self.started:
            client.kill()
        self._stop = True
        os.write(self._wake_w, b"!")
        self._thread.join(timeout=5)
        for client in self.started:
            client.process.stdout.close()
            client.process.stderr.close()
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class Client:
    """A driver, or the stamper around a whole login's ssh client, in a session of its own;
    both write JSON lines stamped with CLOCK_MONOTONIC (the same clock in every process)."""

    def __init__(self, argv: list[str]):
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self._ended: float | None = None

    def ended(self) -> bool:
        """Whether it exited over a second ago (time enough for its last output to be read)."""
        if self._ended is None and self.process.poll() is not None:
            self._ended = time.monotonic()
        return self._ended is not None and time.monotonic() - self._ended > 1.0

    def messages(self) -> list[dict]:
        """The JSON lines it has written so far."""
        return [json.loads(line) for line in b"".join(list(self.out)).split(b"\n")[:-1]]

    def first(self, stream: str, needle: str) -> float | None:
        """When `needle` had fully arrived on the ssh client's stream "out" or "err", or None."""
        seen = ""
        for message in self.messages():
            seen += message.get(stream, "")
            if needle in seen:
                return message["at"]
        return None

    def text(self) -> str:
        return b"".join(list(self.out) + list(self.err)).decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


@dataclass
class Login:
    """One login of the benchmark: where it runs, whose phone approves it, what was stamped."""

    host: Gate
    kind: str  # "socket" (the shim's code in a driver) or "sshd" (a whole login)
    user: str
    sim: str
    client: Client
    slot: int = 0
    check_url: str | None = None
    pressed: float | None = None  # the phone sends its Approve POST
    answered: float | None = None  # ... and its answer arrives
    verdict: float | None = None  # the allow reaches the login (the shim's code, the ssh client)
    shell: float | None = None  # sshd logins: the command's output at the client
    denied: str | None = None

    def update(self) -> None:
        """Read what its client has shown so far."""
        if self.kind == "socket":
            for message in self.client.messages():
                if message["slot"] != self.slot:
                    continue
                if "check_url" in message:
                    self.check_url = message["check_url"]
                elif message.get("allowed"):
                    self.verdict = message["at"]
                elif "denied" in message:
                    self.denied = message["denied"]
            if self.verdict is None and self.denied is None and self.client.ended():
                self.denied = f"the driver ended without a verdict: {self.client.text()[-300:]}"
            return
        shown = "".join(message.get("err", "") for message in self.client.messages())
        found = CHECK_URL.search(shown)
        self.check_url = found.group(0) if found else None
        self.verdict = self.client.first("err", "ssh-auth: approved")
        self.shell = self.client.first("out", "ran\n")
        if self.shell is None and self.client.ended():
            self.denied = (shown + self.client.text())[-300:] or f"exit {self.client.process.returncode}"

    def failure(self) -> str:
        """What went wrong, with the end of its host's sshd and agent logs."""
        return (
            f"a {self.kind} login of {self.user} on {self.host.name} failed: {self.denied}\n"
            f"sshd: {self.host.sshd.log_text()[-1500:]}\nagent: {self.host.service.log_text()[-1500:]}"
        )

    @property
    def check_id(self) -> str | None:
        found = CHECK_ID.search(self.check_url or "")
        return found.group(1) if found else None


class Hops:
    """The phone's hops, stamped: when the Approve POST went out and when its answer came."""

    def __init__(self):
        self.pressed: float | None = None
        self.answered: float | None = None

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if line.startswith("phone: press action=approve"):
            self.pressed = now
        elif self.pressed and self.answered is None and line.startswith("phone: POST"):
            self.answered = now


def phone_approves(check_url: str, sim: str) -> tuple[float | None, float | None, str | None]:
    """In an approver process: the phone scans and approves; (pressed, answered, what went
    wrong or None)."""
    holder = PhoneHolder(sim)
    hops = holder.phone.say = Hops()
    page = holder.approve(check_url)
    if "Approved" in page.text:
        return hops.pressed, hops.answered, None
    title = re.search(r"<title>(.*?)</title>", page.text)
    return hops.pressed, hops.answered, f"the phone saw: {title.group(1) if title else page.text[:200]}"


class RoundRobin:
    """The balancer sending new connections to each replica in turn (a switch every 2 ms)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="round-robin", daemon=True)

    def _run(self) -> None:
        turn = 0
        while not self._stop.wait(0.002):
            turn += 1
            self.fleet.balancer.route(turn % len(self.fleet.replicas))

    def __enter__(self) -> "RoundRobin":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.fleet.balancer.route(0)


def proc_kb(pid: int, name: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


class Monitor:
    """Samples the hub while the benchmark runs: both replicas' RSS, the database's connections."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.pids = [replica.process.process.pid for replica in fleet.replicas]
        self.peak_rss_kb = self.peak_connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def rss_kb(self) -> int:
        return sum(proc_kb(pid, "VmRSS") for pid in self.pids)

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def requests(self) -> int:
        """Signed requests the agents have made (each leaves its nonce for the replay window)."""
        return int(self.fleet.postgres.psql("SELECT count(*) FROM request_nonces", "ssh_auth"))

    def connections(self) -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'ssh_auth'"
        return int(self.fleet.postgres.psql(sql))  # psql itself is in database postgres

    def sample(self) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, self.rss_kb())
        self.peak_connections = max(self.peak_connections, self.connections())

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
