"""A throwaway server on which the README's install commands run as written.

Run as root by tests/test_readme.py: `unshare --mount --fork python -m harness.isolated_server DIR`.
In its private mount namespace /etc, /home, /opt, /root, /usr/local and /var are overlays whose
changes land in DIR (the machine's own files are never touched) and /run is a fresh tmpfs. The
README's venv line runs with the machine's network (it installs from the package index); then the
process moves to a private network namespace where the README's names resolve to loopback:
ssh-auth.example.com is nginx with docs/nginx.conf in front of the webhook, eu.api.idlayr.com is
the emulator over TLS (a test CA, trusted through REQUESTS_CA_BUNDLE). sshd listens on port 22.
It prints one JSON report (what each step printed) as its last line.
"""

import ctypes
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .accounts import client_key, ssh_client_options
from .deployment import CHECK_URL, REPO, Session
from .emulator import CLIENT_ID, CLIENT_SECRET, VENV_BIN
from .people import PhoneHolder

OVERLAID = ("/etc", "/home", "/opt", "/root", "/usr/local", "/var")
ADMIN, ADMIN_PHONE = "alice", "447700900123"  # the README's --admin
WEBHOOK_HOST, API_HOST, API_ADDRESS = "ssh-auth.example.com", "eu.api.idlayr.com", "127.0.0.2"
SYSTEMCTL_LINE = "systemctl daemon-reload && systemctl enable --now ssh-auth && systemctl reload ssh"
CLONE_NEWNET = 0x40000000
SERVER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def readme_steps() -> list[str]:
    """The command lines of the README's install block, as written."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Installing on a server", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def isolate_files(directory: Path) -> None:
    """Overlays over the directories the README's commands write, and an empty /run."""
    run("mount", "--make-rprivate", "/")
    for target in OVERLAID:
        name = target.strip("/").replace("/", "-")
        upper, work = directory / "upper" / name, directory / "work" / name
        upper.mkdir(parents=True)
        work.mkdir(parents=True)
        options = f"lowerdir={target},upperdir={upper},workdir={work}"
        run("mount", "-t", "overlay", "overlay", "-o", options, target)
    run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")
    Path("/run/sshd").mkdir(mode=0o755)


def isolate_network() -> None:
    """A network namespace of this process's own: loopback only, the README's names on it."""
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    run("ip", "link", "set", "lo", "up")
    with open("/etc/hosts", "a") as hosts:
        hosts.write(f"127.0.0.1 {WEBHOOK_HOST}\n{API_ADDRESS} {API_HOST}\n")


def prepare_the_administrator() -> None:
    """The README's alice: an administrator (group sudo) with our key; ~/tru.json for root."""
    run("useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", ADMIN)
    run("usermod", "-p", "*", ADMIN)
    ssh = Path(f"/home/{ADMIN}/.ssh")
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(client_key().with_suffix(".pub").read_text())
    run("chown", "-R", f"{ADMIN}:{ADMIN}", str(ssh))
    tru = {"credentials": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}]}
    Path("/root/tru.json").write_text(json.dumps({**tru, "data_residency": "eu"}))
    os.chmod("/root/tru.json", 0o600)
    if not list(Path("/etc/ssh").glob("ssh_host_*_key")):
        run("ssh-keygen", "-A")


def certificates(directory: Path) -> Path:
    """A test CA, and certificates from it for the webhook's and the API's names."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ssh-auth test CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    bundle = Path("/etc/ssl/certs/ssh-auth-test-ca.pem")  # where the service user can read it
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    os.chmod(bundle, 0o644)
    for host, cert_path, key_path in (
        (WEBHOOK_HOST, f"/etc/ssl/certs/{WEBHOOK_HOST}.pem", f"/etc/ssl/private/{WEBHOOK_HOST}.key"),
        (API_HOST, str(directory / "api.pem"), str(directory / "api.key")),
    ):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        cert = (
            _builder(name, ca_name, key.public_key(), now)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        Path(key_path).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(key_path, 0o600)
    return bundle


def _builder(subject, issuer, public_key, now) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


class Server:
    """The processes of the throwaway server, stopped (as process groups) at the end."""

    def __init__(self, directory: Path, environment: dict):
        self.directory, self.environment = directory, environment
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], ready, **popen) -> None:
        """Start a process logging to DIR/NAME.log; wait until ready() or fail with its log."""
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment,
            start_new_session=True,
            **popen,
        )
        deadline = time.monotonic() + 30
        while not ready():
            if self.processes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{self.log(name)}")
            time.sleep(0.1)

    def log(self, name: str) -> str:
        """What a process has printed so far."""
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Every process, group and all."""
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def step(line: str, environment: dict, timeout: float = 300) -> dict:
    """One README line, run by bash from the repository as a root shell would run it."""
    result = subprocess.run(
        ["bash", "-c", line], cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout
    )
    return {"line": line, "status": result.returncode, "stdout": result.stdout, "stderr": result.stderr}


def start_the_unit(server: Server) -> dict:
    """For the systemctl line: verify the installed unit, start its ExecStart as its User=."""
    unit = Path("/etc/systemd/system/ssh-auth.service")
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    settings = dict(
        line.split("=", 1) for line in unit.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    user = settings["User"]
    for directory in (f"/run/{settings['RuntimeDirectory']}", f"/var/log/{settings['LogsDirectory']}"):
        Path(directory).mkdir(mode=0o755, exist_ok=True)
        shutil.chown(directory, user, user)
    socket_path = Path(f"/run/{settings['RuntimeDirectory']}/ssh-auth.sock")
    server.start(
        "ssh-auth-server",
        ["runuser", "-u", user, "--", *settings["ExecStart"].split()],
        socket_path.exists,
    )
    os.kill(server.processes["sshd"].pid, signal.SIGHUP)  # systemctl reload ssh
    time.sleep(1)
    return {"verify": verify.returncode, "verify_output": verify.stdout + verify.stderr, "user": user}


def start_nginx(server: Server) -> None:
    """nginx with docs/nginx.conf, listening on the webhook's loopback address only."""
    text = (REPO / "docs" / "nginx.conf").read_text()
    # The one change: the emulator (the API's name) listens on 127.0.0.2:443 in this namespace.
    text = text.replace("listen 443 ssl;", "listen 127.0.0.1:443 ssl;")
    Path("/etc/nginx").mkdir(exist_ok=True)
    Path("/etc/nginx/nginx.conf").write_text(text)
    Path("/var/log/nginx").mkdir(parents=True, exist_ok=True)
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        Path(f"/var/lib/nginx/{temp}").mkdir(parents=True, exist_ok=True)
    server.start(
        "nginx",
        ["nginx", "-c", "/etc/nginx/nginx.conf", "-g", "daemon off;"],
        lambda: _answers(f"https://{WEBHOOK_HOST}/healthz"),
    )


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def log_in_and_approve(server: Server) -> dict:
    """`ssh alice@127.0.0.1 'echo ...'` through the installed drop-in; the phone approves."""
    argv = ["ssh", "-p", "22", *ssh_client_options(client_key()), f"{ADMIN}@127.0.0.1"]
    session = Session([*argv, "echo the installed gate let me in"])
    try:
        url = session.wait_for(CHECK_URL, timeout=30).group(0)
        page = PhoneHolder(ADMIN_PHONE).approve(url)
        status, out, err = session.finish(timeout=30)
    finally:
        session.kill()
    return {
        "check_url": url,
        "page": page.status_code,
        "status": status,
        "stdout": out.decode(),
        "stderr": err,
    }


def main(directory: Path) -> int:
    """Follow the README on a throwaway server; print what happened as JSON."""
    steps = readme_steps()
    report: dict = {"steps": steps}
    environment = {"PATH": SERVER_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    server = Server(directory, environment)
    try:
        isolate_files(directory)
        prepare_the_administrator()
        report["venv"] = step(steps[0], environment)
        isolate_network()
        bundle = certificates(directory)
        environment["REQUESTS_CA_BUNDLE"] = os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
        server.start(
            "emulator",
            [
                str(VENV_BIN / "phonecheck-emulator"),
                "serve",
                "--host",
                API_ADDRESS,
                "--port",
                "443",
                "--certfile",
                str(directory / "api.pem"),
                "--keyfile",
                str(directory / "api.key"),
            ],
            lambda: _answers(f"https://{API_HOST}/_emulator/stats"),
        )
        server.start("sshd", ["/usr/sbin/sshd", "-D", "-e"], lambda: _listening(22))
        report["install"] = step(steps[1], environment)
        report["systemctl"] = start_the_unit(server)
        start_nginx(server)
        report["doctor"] = step(steps[3], environment, timeout=120)
        report["login"] = log_in_and_approve(server)
        report["service_log"] = server.log("ssh-auth-server")[-3000:]
    except Exception as error:  # noqa: BLE001 - reported, for the test to show
        report["error"] = f"{type(error).__name__}: {error}"
    finally:
        server.stop()
    print(json.dumps(report))
    return 0


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def run(*argv: str) -> None:
    """A set-up command that must work."""
    subprocess.run(argv, check=True, capture_output=True)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
