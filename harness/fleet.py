"""A fleet on one machine: a real PostgreSQL, two hub replicas behind a balancer, and SSH hosts
(real sshd) whose services are agents enrolled with `ssh-auth fleet add-host` / `fleet join`."""

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

import requests

from .balancer import Balancer
from .deployment import REPO, USERS, Gate
from .emulator import VENV_BIN, Emulator, write_tru_json
from .pam_gate import PamGate
from .postgres import Postgres
from .processes import ServerProcess, free_port


def ssh_auth(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The `ssh-auth` admin command; its result (checked: a failure raises with its output)."""
    result = subprocess.run(
        [str(VENV_BIN / "ssh-auth"), *argv], capture_output=True, text=True, input=stdin
    )
    if result.returncode != 0:
        raise AssertionError(f"ssh-auth {' '.join(argv)} failed: {result.stdout}{result.stderr}")
    return result


class Replica:
    """One hub replica: ssh-auth-server with role = hub on a port of its own."""

    def __init__(self, directory: Path, index: int, port: int, settings: dict):
        self.directory, self.index, self.port = directory, index, port
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / f"hub{index}.conf"
        lines = {
            **settings,
            "listen": f"127.0.0.1:{self.port}",
            "socket": str(directory / f"hub{index}.sock"),
        }
        self.config.write_text("".join(f"{k} = {v}\n" for k, v in lines.items() if v is not None))
        os.chmod(self.config, 0o600)
        self.process = ServerProcess(
            [str(VENV_BIN / "python"), "-m", "webserver", "--config", str(self.config)],
            directory / f"hub{index}.log",
            ready=lambda _: requests.get(f"{self.url}/healthz", timeout=1).ok,
            cwd=REPO,
        )

    def start(self) -> None:
        self.process.start()

    def stop(self, sig=None) -> None:
        """Stop it (SIGTERM), or kill it outright with sig=SIGKILL, as a crash would."""
        if sig is None:
            self.process.stop()
        else:
            self.process.stop(sig)

    def log_text(self) -> str:
        return self.process.log_text()


class Fleet:
    """PostgreSQL + two hub replicas + a balancer (the public URL) + the hosts added to it."""

    def __init__(self, emulator: Emulator, settings: dict | None = None, users: dict | None = None):
        self.emulator, self.settings = emulator, settings or {}
        self.users = USERS if users is None else users
        self.stack = ExitStack()
        self.hosts: dict[str, Gate] = {}

    def __enter__(self) -> "Fleet":
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def _start(self) -> None:
        self.postgres = self.stack.enter_context(Postgres())
        self.directory = self.postgres.directory.parent / (self.postgres.directory.name + "-hub")
        self.directory.mkdir(mode=0o700)
        self.stack.callback(lambda: subprocess.run(["rm", "-rf", str(self.directory)]))
        ports = [free_port(), free_port()]
        self.balancer = Balancer(ports)
        self.stack.callback(self.balancer.close)
        settings = {
            "role": "hub",
            "database_url": self.postgres.url,
            "public_url": self.balancer.url,
            "credentials": str(write_tru_json(self.directory / "tru.json")),
            "api_base_url": self.emulator.url,
            "max_checks_per_user": "1000",
            "max_checks_per_minute": "100000",
            "audit_log": str(self.directory / "audit.jsonl"),
            **self.settings,
        }
        self.replicas = [Replica(self.directory, i + 1, port, settings) for i, port in enumerate(ports)]
        self.hub_config = str(self.replicas[0].config)
        ssh_auth("fleet", "init-db", "--config", self.hub_config)
        for user, phone in self.users.items():
            if phone:
                ssh_auth("register-user", "--config", self.hub_config, user, phone)
        for replica in self.replicas:
            replica.start()
            self.stack.callback(replica.stop)

    def add_host(self, name: str, kind: type = Gate, **options) -> Gate:
        """A new SSH host enrolled in the fleet (kind: Gate for ForceCommand mode, PamGate)."""
        invited = ssh_auth("fleet", "add-host", "--config", self.hub_config, name).stdout
        token = invited.splitlines()[1].strip()
        host_class = FleetPamHost if issubclass(kind, PamGate) else FleetHost
        host = host_class(self, name, token, self.emulator, users=self.users, **options)
        host.__enter__()
        self.stack.callback(host.__exit__, None, None, None)
        self.hosts[name] = host
        return host

    def audit(self, where: str = "true") -> list[tuple]:
        """Rows of the central audit table: (host, user, outcome, reason)."""
        rows = self.postgres.psql(
            f"SELECT host, user_name, outcome, reason FROM audit WHERE {where} ORDER BY id",
            database="ssh_auth",
        )
        return [tuple(line.split("|")) for line in rows.splitlines() if line]

    def logs(self) -> str:
        """Both replicas' logs."""
        return "".join(replica.log_text() for replica in self.replicas)


class FleetHost(Gate):
    """An SSH host of the fleet: its service is an agent (no API secret, no phone numbers)."""

    def __init__(self, fleet: Fleet, name: str, token: str, *args, **options):
        super().__init__(*args, **options)
        self.fleet, self.name, self.token = fleet, name, token

    def write_config(self) -> Path:
        """A server's config, joined to the fleet with `ssh-auth fleet join` as an admin would."""
        self.config = self.root / "etc" / "ssh-auth.conf"
        self.config.write_text(
            f"public_url = http://127.0.0.1:{free_port()}\nsocket = {self.socket}\n"
            + "".join(f"{k} = {v}\n" for k, v in self.settings.items())
        )
        os.chmod(self.config, 0o640)
        self.host_key = self.root / "etc" / "host.key"
        replica_1, replica_2 = (replica.url for replica in self.fleet.replicas)
        ssh_auth("fleet", "join", "--config", str(self.config), "--host-key", str(self.host_key),
                 replica_1, stdin=self.token + "\n")  # fmt: skip
        # In production hub_urls is the balancer; here each replica, so agents fail over.
        ssh_auth("config", "set", "--config", str(self.config), "hub_urls", f"{replica_1},{replica_2}")
        return self.config

    def _service_ready(self, _server) -> bool:
        return self.socket.exists()


class FleetPamHost(FleetHost, PamGate):
    """A fleet host in auth-time mode."""
