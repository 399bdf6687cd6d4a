"""A whole gated deployment on loopback (emulator, service, real sshd) and verbs to log in with."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from webserver.admin.dropin import render_dropin

from .accounts import client_key, ensure_user, ssh_client_options
from .emulator import VENV_BIN, Emulator, write_tru_json
from .processes import ServerProcess, free_port, run

REPO = Path(__file__).resolve().parent.parent
SHIM_BUILD = REPO / "build" / "shim.pyz"
CHECK_URL = re.compile(r"https?://\S+/phone_check/v0\.2/checks/[0-9a-f-]{36}/redirect")
USERS = {"sa-alice": "447700900123", "sa-bob": "447700900456", "sa-carol": None}


class Session:
    """One `ssh` client process, its output collected as it arrives."""

    def __init__(self, argv: list[str], stdin=subprocess.DEVNULL, **popen):
        self.process = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **popen,
        )
        self.out, self.err = bytearray(), bytearray()
        self._threads = [
            threading.Thread(target=self._pump, args=(s, b), daemon=True)
            for s, b in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream, buffer):
        while chunk := stream.read1(65536):
            buffer.extend(chunk)

    def text(self) -> str:
        """Everything the user has seen so far (terminal and stderr)."""
        return (bytes(self.out) + bytes(self.err)).decode(errors="replace")

    def wait_for(self, pattern: re.Pattern | str, timeout: float = 20.0) -> re.Match:
        """The first match of pattern in what the user sees, or an AssertionError with it all."""
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.text())
            if found:
                return found
            if self.process.poll() is not None:
                time.sleep(0.1)
                found = pattern.search(self.text())
                if found:
                    return found
                break
            time.sleep(0.02)
        raise AssertionError(f"{pattern.pattern!r} never appeared; the user saw:\n{self.text()}")

    def check_url(self, timeout: float = 20.0) -> str:
        """The check URL printed under the QR."""
        return self.wait_for(CHECK_URL, timeout).group(0)

    def finish(self, timeout: float = 30.0) -> tuple[int, bytes, str]:
        """(exit status, stdout bytes, stderr text) once the client has exited."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.kill()
        return self.process.returncode, bytes(self.out), bytes(self.err).decode(errors="replace")

    def signal(self, number: int) -> None:
        """Send a signal to the ssh client."""
        self.process.send_signal(number)

    def kill(self) -> None:
        """Make sure the client is gone and its pipes are closed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


class Gate:
    """Emulator + ssh-auth-server + a real sshd with the installer's drop-in, on loopback."""

    def __init__(
        self,
        emulator: Emulator,
        settings: dict | None = None,
        users: dict | None = None,
        sshd_options: dict | None = None,
        sftp_subsystem: str = "/usr/lib/openssh/sftp-server",
        exempt_networks: tuple[str, ...] = (),
        extra_config: str = "",
        service_module: str = "webserver",
        shim_python: str = "/usr/bin/python3",
    ):
        self.shim_python = shim_python
        self.service_module = service_module
        self.extra_config = extra_config
        self.sftp_subsystem = sftp_subsystem
        self.exempt_networks = exempt_networks
        self.emulator = emulator
        self.settings = settings or {}
        self.users = USERS if users is None else users
        self.sshd_options = sshd_options or {}
        self.stack = ExitStack()
        self.sessions: list[Session] = []

    # --- set-up ---------------------------------------------------------------------------

    def __enter__(self) -> "Gate":
        try:
            self.prepare()
            self.start_service()
            self._start_sshd()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.end_sessions()
        self.stack.close()

    def prepare(self) -> None:
        """Every file of the deployment (shim, keys, users, configs), no process started."""
        # Short, root-owned, world-traversable: the shim runs as the login user, and the
        # socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="sa-", dir="/tmp"))
        self.stack.callback(shutil.rmtree, self.root, ignore_errors=True)
        os.chmod(self.root, 0o755)
        for sub in ("lib", "run", "etc", "log"):
            (self.root / sub).mkdir(mode=0o755)
        os.chmod(self.root / "etc", 0o700)
        self.shim = self.root / "lib" / "shim.pyz"
        shutil.copyfile(SHIM_BUILD, self.shim)
        os.chmod(self.shim, 0o644)
        self.socket = self.root / "run" / "ssh-auth.sock"
        self.key = client_key()
        for user in self.users:
            ensure_user(user, self.key.with_suffix(".pub").read_text())
        self.write_config()
        self.sshd_argv = self._sshd_files()

    def write_config(self) -> Path:
        """ssh-auth.conf for this deployment: settings first, then the registry lines."""
        self.webhook_port = getattr(self, "webhook_port", None) or free_port()
        tru_json = write_tru_json(self.root / "etc" / "tru.json")
        lines = {
            "public_url": f"http://127.0.0.1:{self.webhook_port}",
            "listen": f"127.0.0.1:{self.webhook_port}",
            "socket": str(self.socket),
            "credentials": str(tru_json),
            "api_base_url": self.emulator.url,
            "max_checks_per_user": "1000",  # limits have tests of their own (test_limits)
            "max_checks_per_minute": "100000",
            **self.settings,
        }
        text = "".join(f"{k} = {v}\n" for k, v in lines.items() if v is not None)
        text += "".join(f"user={u}:{p}\n" for u, p in self.users.items() if p)
        text += self.extra_config
        self.config = self.root / "etc" / "ssh-auth.conf"
        self.config.write_text(text)
        os.chmod(self.config, 0o640)
        return self.config

    def start_service(self) -> None:
        """Start ssh-auth-server; ready when its webhook answers and its socket exists."""
        config = self.config
        self.service = ServerProcess(
            [str(VENV_BIN / "python"), "-m", self.service_module, "--config", str(config)],
            self.root / "log" / "service.log",
            ready=self._service_ready,
            cwd=REPO,
        )
        self.service.start()
        self.stack.callback(self.service.stop)

    def _service_ready(self, _server) -> bool:
        healthy = requests.get(f"http://127.0.0.1:{self.webhook_port}/healthz", timeout=1).ok
        return healthy and self.socket.exists()

    def _sshd_files(self) -> list[str]:
        """The sshd config, host key and drop-in; returns the sshd command line for them."""
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        host_key = self.root / "etc" / "host_ed25519"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        dropin = self.root / "etc" / "ssh-auth-dropin.conf"
        dropin.write_text(self.dropin())
        base = (REPO / "sshd_config").read_text()
        config = self.root / "etc" / "sshd_config"
        base = re.sub(r"(?m)^(Include|Port) .*\n", "", base)  # only the test's port, never 22
        base = re.sub(r"(?m)^Subsystem sftp .*$", f"Subsystem sftp {self.sftp_subsystem}", base)
        config.write_text(f"Include {dropin}\n" + base)
        self.port = free_port()
        options = {
            "Port": self.port,
            "ListenAddress": "127.0.0.1",
            "HostKey": host_key,
            "PidFile": self.root / "run" / "sshd.pid",
            "PasswordAuthentication": "no",
            "MaxStartups": "400:30:500",
            "LogLevel": "VERBOSE",
            **self.sshd_options,
        }
        argv = [self.sshd_program(), "-D", "-e", "-f", str(config)]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        return argv

    def dropin(self) -> str:
        """The installer's drop-in for this deployment (ForceCommand mode)."""
        return render_dropin(
            shim=str(self.shim),
            socket=str(self.socket),
            exempt_networks=self.exempt_networks,
            python=self.shim_python,
        )

    def sshd_program(self) -> str:
        """The sshd binary to start (its name is its PAM service's)."""
        return "/usr/sbin/sshd"

    def _start_sshd(self) -> None:
        self.sshd = ServerProcess(self.sshd_argv, self.root / "log" / "sshd.log", ready=self._sshd_ready)
        self.sshd.start()
        self.stack.callback(self.sshd.stop)

    def _sshd_ready(self, _server) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
            return conn.recv(4).startswith(b"SSH-")

    # --- user actions ---------------------------------------------------------------------

    def client_options(self) -> list[str]:
        """Options every OpenSSH client (ssh, scp, sftp) needs for this gate, port aside."""
        return ssh_client_options(self.key)

    def ssh_command(self) -> str:
        """`ssh ...` as one string, for rsync -e and GIT_SSH_COMMAND."""
        return " ".join(["ssh", "-p", str(self.port), *self.client_options()])

    def ssh_argv(
        self, user: str, command: str | None = None, tty: bool = False, options: tuple = ()
    ) -> list[str]:
        """The real OpenSSH client's command line for a login to this gate."""
        argv = ["ssh", "-p", str(self.port), *self.client_options(), *options]
        if tty:
            argv.append("-tt")
        argv.append(f"{user}@127.0.0.1")
        if command is not None:
            argv.append(command)
        return argv

    def ssh(
        self,
        user: str,
        command: str | None = None,
        tty: bool = False,
        options: tuple = (),
        stdin=subprocess.DEVNULL,
    ) -> Session:
        """Start an SSH login as user (running command, if given)."""
        session = Session(self.ssh_argv(user, command, tty, options), stdin=stdin)
        self.sessions.append(session)
        return session

    def client(self, argv: list[str], **popen) -> Session:
        """Start any client program (scp, sftp, rsync, git) against this gate."""
        session = Session(argv, **popen)
        self.sessions.append(session)
        return session

    def end_sessions(self) -> None:
        """Kill every client a test left running."""
        while self.sessions:
            self.sessions.pop().kill()


def refusal_config(directory, **settings) -> str:
    """An ssh-auth.conf for a service started only to be refused: its own socket, any port."""
    lines = {"socket": f"{directory}/s.sock", "listen": "127.0.0.1:0", **settings}
    path = directory / "ssh-auth.conf"
    path.write_text("".join(f"{key} = {value}\n" for key, value in lines.items()))
    return path


def start_service(config) -> subprocess.CompletedProcess:
    """Run ssh-auth-server on a config it should refuse; its exit status and stderr."""
    return subprocess.run(
        [str(VENV_BIN / "ssh-auth-server"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


class Deployments:
    """Gates by their settings, each started once and shared (tests end their own clients)."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self._gates: dict[str, Gate] = {}

    def get(self, settings: dict | None = None, kind: type = Gate, **options) -> Gate:
        """The running deployment of this kind (Gate, PamGate) with these settings and options,
        started if need be."""
        key = repr((kind.__name__, sorted((settings or {}).items()), sorted(options.items())))
        if key not in self._gates:
            gate = kind(self.emulator, settings=settings, **options)
            gate.__enter__()
            self._gates[key] = gate
        return self._gates[key]

    def end_sessions(self) -> None:
        """Kill every client any test left running."""
        for gate in self._gates.values():
            gate.end_sessions()

    def close(self) -> None:
        """Stop every deployment."""
        while self._gates:
            self._gates.popitem()[1].__exit__(None, None, None)
