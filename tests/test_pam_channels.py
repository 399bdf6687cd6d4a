"""Auth-time mode gates every channel, not only sessions: forwards (-L, -R, -D, -W), ProxyJump,
and the file tools (scp, sftp, rsync, git), each through a real sshd and the real clients."""

import os
import shutil
import socket
import socketserver
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.deployment import USERS
from harness.pam_gate import PromptAnswerer, short_url
from harness.people import PhoneHolder
from harness.processes import free_port, send_through

ALICE = USERS["sa-alice"]
HOME = Path("/home/sa-alice")
PAYLOAD = os.urandom(200_000) + bytes(range(256)) * 16


class EchoServer:
    """A TCP echo service on loopback that remembers every byte it was ever sent."""

    def __init__(self):
        self.received = bytearray()
        echo = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                while data := self.request.recv(65536):
                    echo.received.extend(data)
                    self.request.sendall(data)

        class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


def wait_open(port: int, timeout: float = 10.0) -> None:
    """Wait until something listens on the loopback port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def through_socks(port: int, target: int, payload: bytes) -> str:
    """A SOCKS5 CONNECT through `port` to 127.0.0.1:target, then the payload; as send_through."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"\x05\x01\x00")
            if conn.recv(2) != b"\x05\x00":
                return "refused (no SOCKS)"
            conn.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", target))
            if conn.recv(10)[:2] != b"\x05\x00":
                return "refused (CONNECT)"
            conn.sendall(payload)
            return f"OPEN: {conn.recv(100)[:40]!r}"
    except OSError as error:
        return f"refused ({type(error).__name__})"


FORWARDS = {
    "-L": lambda local, echo: (["-L", f"{local}:127.0.0.1:{echo}"], send_through),
    "-R": lambda remote, echo: (["-R", f"{remote}:127.0.0.1:{echo}"], send_through),
    "-D": lambda local, echo: (
        ["-D", str(local)],
        lambda port, payload: through_socks(port, echo, payload),
    ),
}


@pytest.mark.parametrize("flag", list(FORWARDS))
@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_a_forward_carries_bytes_only_after_the_phone_approved(pam_gate, echo, matrix, flag, answer):
    port = free_port()
    options, send = FORWARDS[flag](port, echo.port)
    client = pam_gate.login("sa-alice", options=("-N", *options))
    url = short_url(client)
    before = send(port, b"early")
    getattr(PhoneHolder(ALICE), answer)(url)
    client.press_enter()
    if answer == "approve":
        wait_open(port)
        after = send(port, b"after")
    else:
        client.finish()
        after = send(port, b"after")
    client.kill()
    arrived = bytes(echo.received)
    got = f"before: {before.split(' ')[0]}, after {answer}: {after.split(' ')[0]}, echo saw {arrived!r}"
    expected = {
        "approve": "before: refused, after approve: OPEN:, echo saw b'after'",
        "deny": "before: refused, after deny: refused, echo saw b''",
    }[answer]
    assert matrix(f"pam: ssh -N {flag}, phone answers {answer}", expected, got) == expected


@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_a_stdio_forward_carries_bytes_only_after_the_phone_approved(pam_gate, echo, matrix, answer):
    client = pam_gate.login("sa-alice", options=("-W", f"127.0.0.1:{echo.port}"), stdin=subprocess.PIPE)
    url = short_url(client)
    client.process.stdin.write(b"typed-early\n")
    client.process.stdin.flush()
    time.sleep(0.5)
    before = bytes(echo.received)
    getattr(PhoneHolder(ALICE), answer)(url)
    client.press_enter()
    if answer == "approve":
        client.wait_for("typed-early")
    client.process.stdin.close()
    client.finish()
    got = f"before: {before!r}, after {answer}: {bytes(echo.received)!r}"
    expected = {
        "approve": "before: b'', after approve: b'typed-early\\n'",
        "deny": "before: b'', after deny: b''",
    }[answer]
    assert matrix(f"pam: ssh -W, phone answers {answer}", expected, got) == expected


def test_proxyjump_through_a_gated_bastion_costs_one_check_per_hop(pam_gate, matrix):
    logged = len(pam_gate.service.log_text())
    hop = f"sa-alice@localhost:{pam_gate.port}"  # another name: ssh refuses a jump to itself
    client = pam_gate.login("sa-alice", "echo arrived", options=("-J", hop))
    with PromptAnswerer(client, ALICE) as person:
        status, out, err = client.finish(timeout=60)
    checks = pam_gate.service.log_text()[logged:].count(" started for sa-alice")
    got = f"exit {status}, {out!r}, checks {checks}, prompts answered {len(person.approved)}"
    expected = "exit 0, b'arrived\\n', checks 2, prompts answered 2"
    assert matrix("pam: ProxyJump through a gated bastion to a gated target", expected, got) == expected


def run_approved(gate, argv: list[str], **popen) -> bytes:
    """A client program run at a terminal to its end while the person approves every prompt."""
    client = gate.at_terminal(argv, **popen)
    with PromptAnswerer(client, ALICE) as person:
        status, out, err = client.finish(timeout=60)
    assert status == 0, client.text()
    assert person.approved, "no phone check was asked for"
    return out


@pytest.fixture
def local(tmp_path):
    (tmp_path / "payload.bin").write_bytes(PAYLOAD)
    return tmp_path


def test_scp_up_and_down_in_its_default_sftp_mode(pam_gate, local):
    scp = ["scp", "-q", "-P", str(pam_gate.port), *pam_gate.client_options()]
    (HOME / "pam-up.bin").unlink(missing_ok=True)
    run_approved(pam_gate, [*scp, str(local / "payload.bin"), "sa-alice@127.0.0.1:pam-up.bin"])
    assert (HOME / "pam-up.bin").read_bytes() == PAYLOAD
    run_approved(pam_gate, [*scp, "sa-alice@127.0.0.1:pam-up.bin", str(local / "down.bin")])
    assert (local / "down.bin").read_bytes() == PAYLOAD


def test_sftp_without_a_control_master(pam_gate, local):
    (HOME / "pam-sftp.bin").unlink(missing_ok=True)
    commands = f"put {local / 'payload.bin'} pam-sftp.bin\nget pam-sftp.bin {local / 'back.bin'}\n"
    sftp = ["sftp", "-P", str(pam_gate.port), *pam_gate.client_options(), "sa-alice@127.0.0.1"]
    (local / "commands").write_text(commands)
    with open(local / "commands", "rb") as stdin:
        run_approved(pam_gate, sftp, stdin=stdin)
    assert (HOME / "pam-sftp.bin").read_bytes() == PAYLOAD
    assert (local / "back.bin").read_bytes() == PAYLOAD


def test_rsync_copies_a_tree(pam_gate, local):
    tree = local / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.bin").write_bytes(PAYLOAD)
    (tree / "sub" / "b.txt").write_text("hello\n")
    shutil.rmtree(HOME / "pam-rsynced", ignore_errors=True)
    run_approved(
        pam_gate,
        ["rsync", "-a", "-e", pam_gate.ssh_command(), f"{tree}/", "sa-alice@127.0.0.1:pam-rsynced/"],
    )
    assert (HOME / "pam-rsynced" / "a.bin").read_bytes() == PAYLOAD
    assert (HOME / "pam-rsynced" / "sub" / "b.txt").read_text() == "hello\n"


def test_git_clone_and_push(pam_gate, local):
    repo = HOME / "pam-project.git"
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run(
        ["runuser", "-u", "sa-alice", "--", "git", "init", "-q", "--bare", "-b", "main", str(repo)],
        check=True,
    )
    env = {**os.environ, "GIT_SSH_COMMAND": pam_gate.ssh_command()}
    git = ["git", "-c", "user.name=Test", "-c", "user.email=t@example.test"]
    clone = local / "clone"
    run_approved(pam_gate, [*git, "clone", "-q", f"sa-alice@127.0.0.1:{repo}", str(clone)], env=env)
    (clone / "README").write_text("gated at auth time\n")
    subprocess.run([*git, "-C", str(clone), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(clone), "commit", "-qm", "first"], check=True)
    run_approved(pam_gate, [*git, "-C", str(clone), "push", "-q", "origin", "HEAD:main"], env=env)
    shown = subprocess.run(
        ["git", "--git-dir", str(repo), "show", "main:README"], capture_output=True, text=True
    )
    assert shown.stdout == "gated at auth time\n"
