"""Slow connections against the webhook: waitress's own limits, and nginx in front (docs/nginx.conf)."""

import math
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from harness.deployment import REPO, USERS, Gate
from harness.pam_gate import PamGate, short_url
from harness.people import PhoneHolder
from harness.processes import ServerProcess, free_port
from webserver.__main__ import CHANNEL_TIMEOUT, CLEANUP_INTERVAL, CONNECTION_LIMIT

SIM = USERS["sa-alice"]
NGINX = "/usr/sbin/nginx"
NGINX_DOC = REPO / "docs" / "nginx.conf"
HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # the blank line never comes
# waitress counts its listening socket and its wake-up pipe against connection_limit.
SLOTS = CONNECTION_LIMIT - 2
SLOW_PER_KIND = 250
TRICKLE_EVERY = 1.0  # seconds between two bytes of a trickling client


@pytest.fixture
def descriptors():
    """Raise this process's soft RLIMIT_NOFILE for a test that holds many sockets; restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def at_least(count: int) -> None:
        if soft < count:
            if hard != resource.RLIM_INFINITY and hard < count:
                pytest.fail(f"this test needs {count} descriptors; the hard limit is {hard}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))

    yield at_least
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def approve_login(gate: Gate, phone_patience: float = 10.0) -> float:
    """One whole gated login approved on the phone: seconds from the scan to the command's output."""
    session = gate.ssh("sa-alice", "echo signed-in")
    url = session.check_url()
    holder = PhoneHolder(SIM)
    holder.phone.timeout = phone_patience
    start = time.monotonic()
    page = holder.approve(url)
    session.wait_for(r"(?m)^signed-in$", timeout=phone_patience)
    elapsed = time.monotonic() - start
    assert "Approved" in page.text
    status, out, err = session.finish()
    assert (status, out) == (0, b"signed-in\n")
    assert err.endswith("ssh-auth: approved on your phone.\n")
    return elapsed


def healthz(url: str, patience: float) -> tuple[str, float]:
    """GET /healthz: (its body, or 'no answer', and the seconds it took)."""
    start = time.monotonic()
    try:
        body = requests.get(url, timeout=(patience, patience)).text
    except requests.RequestException:
        body = "no answer"
    return body, time.monotonic() - start


def half_sent(stack: ExitStack, port: int, count: int) -> None:
    """`count` connections that send half a request and then nothing, closed with the stack."""
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        sock.sendall(HALF_SENT)


class Trickler:
    """One connection that sends its request a byte at a time, never finishing it."""

    def __init__(self, port: int, every: float):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(HALF_SENT)
        self.sock.settimeout(None)  # so that a MSG_DONTWAIT read answers at once
        self.every, self.opened = every, time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> "Trickler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sock.close()

    def _trickle(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sock.send(b"a")
            except OSError:
                return

    def still_open(self) -> bool:
        """True while the server has neither answered nor closed the connection."""
        try:
            self.sock.recv(1024, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            pass
        return False


def test_waitress_alone_answers_after_twice_connection_limit_slow_connections(
    emulator_server, descriptors
):
    """Directly on waitress, 2 x connection_limit half-sent requests only delay the webhook."""
    slow = 2 * CONNECTION_LIMIT
    descriptors(slow + 1024)
    # Each round of SLOTS silent connections ends CHANNEL_TIMEOUT after it was accepted, seen
    # within CLEANUP_INTERVAL (+1 s: waitress's loop wakes once a second). Behind the trickler
    # and the slow ones, ours waits its turn in the kernel's queue.
    rounds = math.ceil((1 + slow + 1) / SLOTS) - 1
    expected = rounds * (CHANNEL_TIMEOUT + CLEANUP_INTERVAL + 1)
    bound = expected + CHANNEL_TIMEOUT + 10
    with Gate(emulator_server, users={"sa-alice": SIM}) as gate, ExitStack() as stack:
        url = f"http://127.0.0.1:{gate.webhook_port}/healthz"
        quiet = healthz(url, bound)
        quiet_login = approve_login(gate)
        trickler = stack.enter_context(Trickler(gate.webhook_port, every=CHANNEL_TIMEOUT / 2))
        half_sent(stack, gate.webhook_port, slow)
        with ThreadPoolExecutor(2) as pool:
            loaded = pool.submit(healthz, url, bound)
            loaded_login = pool.submit(approve_login, gate, bound)
            (body, waited), login_waited = loaded.result(), loaded_login.result()
        trickled = time.monotonic() - trickler.opened
        trickler_open = trickler.still_open()
    print(
        f"\nwaitress alone, {slow} half-sent requests (connection_limit {CONNECTION_LIMIT}, "
        f"channel_timeout {CHANNEL_TIMEOUT} s, cleanup_interval {CLEANUP_INTERVAL} s): "
        f"/healthz {quiet[1] * 1000:.0f} ms -> {waited:.1f} s, approval {quiet_login * 1000:.0f} ms "
        f"-> {login_waited:.1f} s (expected about {expected} s, bound {bound} s); "
        f"a client trickling a byte every {CHANNEL_TIMEOUT / 2:.0f} s still held its slot "
        f"after {trickled:.1f} s: {trickler_open}"
    )
    assert body.strip() == '{"ok":true}'
    assert CHANNEL_TIMEOUT <= waited < bound  # they did hold the webhook, then were dropped
    assert CHANNEL_TIMEOUT <= login_waited < bound
    # channel_timeout is about silence: a trickling client is never dropped (hence nginx).
    assert (trickled > 2 * CHANNEL_TIMEOUT, trickler_open) == (True, True)


class SlowClients:
    """TLS connections that never finish their request: half-sent or trickling, head or body."""

    HEAD = b"GET /complete-check?check_id=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    BODY = (
        b"POST /complete-check HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\nx="
    )
    KINDS = {  # kind: (what it sends at once, whether it then trickles a byte every second)
        "half-sent head": (HEAD, False),
        "trickling head": (HEAD, True),
        "half-sent body": (BODY, False),
        "trickling body": (BODY, True),
    }

    def __init__(self, port: int, cafile: Path, per_kind: int):
        self.port, self.per_kind = port, per_kind
        self.context = ssl.create_default_context(cafile=str(cafile))
        self.clients: list[tuple[str, ssl.SSLSocket, float]] = []
        self.closed_after: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._trickler = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> "SlowClients":
        try:
            for kind, (first, _) in self.KINDS.items():
                for _ in range(self.per_kind):
                    raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    sock = self.context.wrap_socket(raw, server_hostname="127.0.0.1")
                    sock.sendall(first)
                    sock.setblocking(False)
                    self.clients.append((kind, sock, time.monotonic()))
        except BaseException:
            self.__exit__()
            raise
        self._trickler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._trickler.is_alive():
            self._trickler.join(timeout=10)
        for _, sock, _ in self.clients:
            sock.close()

    def _trickle(self) -> None:
        while not self._stop.wait(TRICKLE_EVERY):
            with self._lock:
                for number, (kind, sock, _) in enumerate(self.clients):
                    if self.KINDS[kind][1] and number not in self.closed_after:
                        try:
                            sock.send(b"a")
                        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                            pass
                        except OSError:
                            self._closed(number)

    def _closed(self, number: int) -> None:
        self.closed_after.setdefault(number, time.monotonic() - self.clients[number][2])

    def open_by_kind(self) -> dict[str, int]:
        """How many connections of each kind nginx still holds open."""
        with self._lock:
            for number, (_, sock, _) in enumerate(self.clients):
                if number in self.closed_after:
                    continue
                try:
                    sock.recv(1024)  # an answer (408) or the end: either way nginx let go
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue  # nothing for us (TLS 1.3 session tickets are read here)
                except OSError:
                    pass
                self._closed(number)
            counts = dict.fromkeys(self.KINDS, 0)
            for number, (kind, _, _) in enumerate(self.clients):
                counts[kind] += number not in self.closed_after
            return counts

    def closed_after_by_kind(self) -> dict[str, list[float]]:
        """Seconds from connecting until nginx let go, per kind, for those it has let go."""
        found: dict[str, list[float]] = {kind: [] for kind in self.KINDS}
        for number, after in self.closed_after.items():
            found[self.clients[number][0]].append(after)
        return found


def established_to(port: int) -> int:
    """Established TCP connections to a local port (nginx's to the service), as the kernel sees."""
    listing = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
        check=True,
        capture_output=True,
        text=True,
    )
    return len(listing.stdout.splitlines())


def nginx_setting(name: str) -> int:
    """A seconds setting of the documented nginx configuration (e.g. client_header_timeout)."""
    return int(re.search(rf"(?m)^\s*{name} (\d+)s;", NGINX_DOC.read_text()).group(1))


def documented_nginx(directory: Path, port: int, upstream: int, cert: Path, key: Path) -> Path:
    """docs/nginx.conf as it is, but for ports and paths: this test's own port and directory."""
    text = NGINX_DOC.read_text()
    for documented, ours in {
        "listen 443 ssl": f"listen 127.0.0.1:{port} ssl",
        "127.0.0.1:8080": f"127.0.0.1:{upstream}",
        "/etc/ssl/certs/ssh-auth.example.com.pem": str(cert),
        "/etc/ssl/private/ssh-auth.example.com.key": str(key),
        "/run/nginx.pid": str(directory / "nginx.pid"),
        "/var/log/nginx/": f"{directory}/log/",
        "/var/lib/nginx/": f"{directory}/lib/",
    }.items():
        assert documented in text, f"docs/nginx.conf no longer says {documented!r}"
        text = text.replace(documented, ours)
    config = directory / "nginx.conf"
    config.write_text(text)
    return config


def nginx_in_front(directory: Path, port: int, gate) -> ServerProcess:
    """nginx with the documented configuration on `port`, in front of the gate's webhook."""
    config = documented_nginx(
        directory, port, gate.webhook_port, directory / "cert.pem", directory / "key.pem"
    )
    return ServerProcess(
        [NGINX, "-p", f"{directory}/", "-c", str(config), "-g", "daemon off;"],
        directory / "nginx.out",
        ready=lambda _: requests.get(f"https://127.0.0.1:{port}/healthz", timeout=1).ok,
    )


@pytest.fixture
def nginx_home():
    """A world-traversable directory of nginx's own (its workers run as www-data), then gone."""
    directory = Path(tempfile.mkdtemp(prefix="sa-nginx-", dir="/tmp"))
    directory.chmod(0o755)
    for sub in ("log", "lib"):
        (directory / sub).mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_behind_the_documented_nginx_1000_slow_connections_do_not_delay_an_approval(
    emulator_server, nginx_home, descriptors, monkeypatch
):
    """Production: nginx buffers whole requests, so slow clients never reach the service."""
    assert Path(NGINX).exists(), "no nginx: `make test` installs it (TEST_PACKAGES)"
    slow = SLOW_PER_KIND * len(SlowClients.KINDS)
    descriptors(slow + 1024)
    cert = nginx_home / "cert.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # the phone trusts our test certificate
    port = free_port()
    public_url = f"https://127.0.0.1:{port}"
    with Gate(emulator_server, settings={"public_url": public_url}, users={"sa-alice": SIM}) as gate:
        with nginx_in_front(nginx_home, port, gate):
            quiet = [approve_login(gate) for _ in range(3)]
            started = time.monotonic()
            with SlowClients(port, cert, SLOW_PER_KIND) as clients:
                opened = time.monotonic()
                loaded = [approve_login(gate) for _ in range(3)]
                held = clients.open_by_kind()
                upstream = established_to(gate.webhook_port)
                loaded_at = time.monotonic() - opened
                cut = ("half-sent head", "trickling head", "half-sent body")
                timeouts = ("client_header_timeout", "client_body_timeout")
                deadline = opened + max(map(nginx_setting, timeouts)) + 15
                while any(clients.open_by_kind()[kind] for kind in cut):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                after = clients.open_by_kind()
                closed_after = clients.closed_after_by_kind()
        access_log = (nginx_home / "log" / "ssh-auth.access.log").read_text()
    print(
        f"\nbehind nginx, {slow} slow TLS connections (opened in {opened - started:.1f} s): "
        f"approval median "
        f"{statistics.median(quiet) * 1000:.0f} ms (max {max(quiet) * 1000:.0f}) without, "
        f"{statistics.median(loaded) * 1000:.0f} ms (max {max(loaded) * 1000:.0f}) with them; "
        f"still open {loaded_at:.1f} s after opening: {held}, of them at the service: "
        f"{upstream}; nginx let go of them after "
        + ", ".join(
            f"{kind} {min(times):.1f}-{max(times):.1f} s"
            for kind, times in closed_after.items()
            if times
        )
    )
    assert held == dict.fromkeys(SlowClients.KINDS, SLOW_PER_KIND)  # all held during the logins
    assert upstream == 0  # and not one of them reached the service
    assert max(loaded) < CHANNEL_TIMEOUT  # waitress alone makes it wait at least this long
    # client_header_timeout is a total deadline; client_body_timeout is between two reads, so a
    # trickling body stays with nginx (never the service) until its whole body is sent.
    assert after == {"half-sent head": 0, "trickling head": 0, "half-sent body": 0,
                     "trickling body": SLOW_PER_KIND}  # fmt: skip
    assert "code=" not in access_log and '"GET /complete-check" 200' in access_log


def test_behind_the_documented_nginx_a_short_url_works_and_is_never_logged(
    emulator_server, nginx_home, pam_module, monkeypatch
):
    """Auth-time mode's QR leads to public_url/q/TOKEN: nginx passes it on and logs none of it."""
    cert = nginx_home / "cert.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    port = free_port()
    public_url = f"https://127.0.0.1:{port}"
    settings = {"public_url": public_url}
    with PamGate(emulator_server, settings=settings, users={"sa-alice": SIM}) as gate:
        with nginx_in_front(nginx_home, port, gate):
            client = gate.login("sa-alice", "echo through-nginx")
            url = short_url(client)
            assert url.startswith(f"{public_url}/q/")
            PhoneHolder(SIM).approve(url)
            client.press_enter()
            assert client.finish()[:2] == (0, b"through-nginx\n")
            log = (nginx_home / "log" / "ssh-auth.access.log").read_text()
    token = url.rsplit("/", 1)[1]
    assert "/complete-check" in log  # the log is written, and the phone's redirect is in it
    assert token not in log and "/q/" not in log
