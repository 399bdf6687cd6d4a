"""The PAM module on its own, driven through libpam by a small C driver as sshd drives it: every
path that is not an allow from our service is a deny with one line; no fd or memory grows; and
valgrind finds no leak or memory error."""

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.deployment import REPO, USERS
from harness.pam_gate import PAM_BUILD, SHORT_URL, PamGate
from harness.people import PhoneHolder
from webserver.admin.pam_stack import auth_line

ALICE = USERS["sa-alice"]
DRIVER_SOURCE = REPO / "tests" / "fixtures" / "pam_driver.c"
VALGRIND = ["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect"]
VALGRIND_FAILED = 99
ALLOW = b'{"v":1,"event":"verdict","allow":true,"reason":"approved on your phone."}\n'


@pytest.fixture(scope="module")
def driver(tmp_path_factory, pam_module):
    """The driver, compiled for this run."""
    binary = tmp_path_factory.mktemp("driver") / "pam_driver"
    subprocess.run(
        [
            "gcc",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-g",
            "-o",
            str(binary),
            str(DRIVER_SOURCE),
            "-lpam",
        ],
        check=True,
    )
    return binary


@contextmanager
def pam_service(socket_path: str, timeout: int | None = None, module: Path = PAM_BUILD):
    """A PAM service of the test's own whose auth stack is our module alone; its name."""
    name = f"sa-driver-{secrets.token_hex(4)}"
    line = auth_line(str(module), socket_path, 60)
    if timeout is not None:
        line = line.replace("timeout=90", f"timeout={timeout}")
    path = Path("/etc/pam.d") / name
    path.write_text(line)
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


class Run:
    """One driver run: each login's line, every message the module showed, the exit status."""

    def __init__(self, argv: list[str], answer=None, stdin=subprocess.PIPE):
        self.logins, self.messages, self.prompts = [], [], []
        with subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as self.process:
            prompt = None
            for line in self.process.stdout:
                if line == "PROMPT\n":
                    prompt = []
                elif line == "END\n":
                    self.prompts.append("".join(prompt))
                    answer(self, "".join(prompt))
                    prompt = None
                elif prompt is not None:
                    prompt.append(line)
                elif line.startswith("LOGIN "):
                    self.logins.append(line.split())
                elif line.startswith("MESSAGE "):
                    self.messages.append(line.removeprefix("MESSAGE ").rstrip("\n"))
            self.stderr = self.process.stderr.read()
            self.status = self.process.wait(timeout=600)

    def reply(self, text: str = "") -> None:
        """Answer the prompt (the person presses Enter), if anyone can."""
        if self.process.stdin is not None:
            self.process.stdin.write(text + "\n")
            self.process.stdin.flush()

    def figures(self, index: int) -> tuple[int, int, int, int]:
        """(fds before, fds after, RSS kB before, RSS kB after) of one login."""
        words = self.logins[index]
        return int(words[4]), int(words[5]), int(words[7]), int(words[8])


def drive(driver, service, user, count, mode="fork", answer=None, valgrind=False, stdin=subprocess.PIPE):
    argv = [str(driver), service, user, str(count), mode, "[priv]"]
    if valgrind:
        argv = [*VALGRIND, f"--error-exitcode={VALGRIND_FAILED}", *argv]
    return Run(argv, answer or (lambda run, prompt: run.reply()), stdin)


class FakeService:
    """A root peer on a Unix socket that answers a login with chosen bytes (or nothing)."""

    def __init__(self, path: str, reply: bytes | None, close: bool = True):
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(8)
        self.reply, self.close = reply, close
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self.requests.append(conn.recv(65536))
                if self.reply is not None:
                    conn.sendall(self.reply)
                if not self.close:
                    time.sleep(5)

    def stop(self):
        self.server.close()


@pytest.fixture
def socket_dir():
    directory = tempfile.mkdtemp(prefix="sa-pm-", dir="/tmp")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


CHALLENGE = b'{"v":1,"event":"challenge","prompt":"scan me"}\n'
FAULTS = {
    "the service's socket is missing": (None, "the ssh-auth service is not running. Access denied."),
    "the service never answers": (b"", "the ssh-auth service did not answer. Access denied."),
    "not JSON": (b"allow\n", "the ssh-auth service sent a malformed answer. Access denied."),
    "another protocol version": (
        ALLOW.replace(b'"v":1', b'"v":2'),
        "the ssh-auth service sent a malformed answer. Access denied.",
    ),
    # Not a JSON true: denied; its empty reason (a retry's) adds no line of its own.
    "allow as a string": (
        ALLOW.replace(b"true", b'"true"').replace(b"approved on your phone.", b""),
        None,
    ),
    "JSON nested too deep": (
        b'{"v":1,"event":"verdict","allow":true,"x":' + b"[" * 50 + b"]" * 50 + b"}\n",
        "the ssh-auth service sent a malformed answer. Access denied.",
    ),
    "a line over 64 KiB": (
        b'{"v":1,"event":"verdict","allow":true,"x":"' + b"a" * 70000,
        "the ssh-auth service sent a malformed answer. Access denied.",
    ),
    "an unknown event": (
        b'{"v":1,"event":"party","allow":true}\n',
        "the ssh-auth service sent a malformed answer. Access denied.",
    ),
    "a challenge, then the line closes": (
        CHALLENGE,
        "the ssh-auth service did not answer. Access denied.",
    ),
    "a challenge, then an allow over a NUL byte": (
        CHALLENGE + ALLOW.replace(b"approved", b"appro\x00ved"),
        "the ssh-auth service sent a malformed answer. Access denied.",
    ),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_every_fault_of_the_service_is_a_deny_with_one_line(driver, socket_dir, matrix, case):
    reply, expected = FAULTS[case]
    path = f"{socket_dir}/s.sock"
    fake = FakeService(path, reply, close=reply != b"") if reply is not None else None
    try:
        with pam_service(path, timeout=2) as service:
            run = drive(driver, service, "sa-alice", 1, valgrind=True)
    finally:
        if fake:
            fake.stop()
    got = f"{run.logins[0][2] if run.logins else 'no login'}: {run.messages}"
    wanted = f"denied: {[f'ssh-auth: {expected}'] if expected else []}"
    assert run.status == 0, run.stderr  # valgrind: no memory error and no leak on this path
    assert matrix(f"pam module: {case}", wanted, got) == wanted


def test_a_peer_that_is_not_root_or_the_service_cannot_answer(driver, socket_dir, matrix):
    path = f"{socket_dir}/s.sock"
    os.chmod(socket_dir, 0o777)
    server = (  # would say allow, if the module ever listened to it
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen(1);print('ready',flush=True)\n"
        "c,_=s.accept()\n"
        "try: c.sendall(sys.argv[2].encode())\n"
        "except OSError: pass\n"
    )
    argv = ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", server, path, ALLOW.decode()]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as impostor:
        try:
            assert impostor.stdout.readline() == "ready\n"
            with pam_service(path, timeout=2) as service:
                run = drive(driver, service, "sa-alice", 1)
        finally:
            impostor.kill()
    line = "ssh-auth: the ssh-auth socket is served by an untrusted process. Access denied."
    expected = f"denied: {[line]}"
    got = f"{run.logins[0][2]}: {run.messages}"
    assert matrix("pam module: an allow from a socket served by nobody", expected, got) == expected


@pytest.fixture
def module_gate(deployments, emulator, pam_module):
    """The shared PAM deployment: its service answers the driver's logins."""
    return deployments.get(kind=PamGate)


def approve_or_deny(run: Run, prompt: str) -> None:
    """The person approves even-numbered logins and denies odd ones, then presses Enter."""
    url = SHORT_URL.search(prompt).group(0)
    holder = PhoneHolder(ALICE)
    (holder.approve if len(run.prompts) % 2 else holder.deny)(url)
    run.reply()


def test_a_conversation_that_fails_is_a_deny(driver, module_gate):
    module = module_gate.root / "lib" / "pam_ssh_auth.so"
    with pam_service(str(module_gate.socket), module=module) as service:
        run = drive(driver, service, "sa-alice", 1, stdin=subprocess.DEVNULL)
    assert run.messages == ["ssh-auth: the phone check could not be shown. Access denied."]
    assert run.logins[0][2] == "denied"


def test_200_logins_each_in_a_process_of_its_own_leave_no_fd_and_no_memory(driver, module_gate):
    module = module_gate.root / "lib" / "pam_ssh_auth.so"
    with pam_service(str(module_gate.socket), module=module) as service:
        run = drive(driver, service, "sa-alice", 200, answer=approve_or_deny)
    figures = [run.figures(i) for i in range(200)]
    grown = max(after - before for _, _, before, after in figures)
    print(
        f"200 logins, one process each: fds before/after pam: {figures[0][:2]}..{figures[-1][:2]}; "
        f"largest RSS growth from pam_start to pam_end: {grown} kB"
    )
    assert [w[2] for w in run.logins] == ["allowed", "denied"] * 100
    assert all(before == after for before, after, _, _ in figures), figures
    assert run.status == 0, run.stderr


def test_200_logins_in_one_process_grow_neither_fds_nor_memory(driver, module_gate):
    module = module_gate.root / "lib" / "pam_ssh_auth.so"
    with pam_service(str(module_gate.socket), module=module) as service:
        run = drive(driver, service, "sa-alice", 200, mode="same", answer=approve_or_deny)
    first, last = run.figures(10), run.figures(199)
    print(f"200 logins in one process: fds {first[1]} -> {last[1]}, RSS {first[3]} kB -> {last[3]} kB")
    assert len(run.prompts) == 1  # one connection: one check, then its retries denied at once
    assert first[1] == last[1]
    assert last[3] - first[3] <= 64, (first, last)


def test_valgrind_finds_no_leak_or_error_on_the_phone_paths(driver, module_gate):
    module = module_gate.root / "lib" / "pam_ssh_auth.so"
    with pam_service(str(module_gate.socket), module=module) as service:
        forked = drive(driver, service, "sa-alice", 6, answer=approve_or_deny, valgrind=True)
        same = drive(driver, service, "sa-alice", 30, mode="same", answer=approve_or_deny, valgrind=True)
        unregistered = drive(driver, service, "sa-carol", 3, valgrind=True)
    assert [w[2] for w in forked.logins] == ["allowed", "denied"] * 3
    for run in (forked, same, unregistered):
        assert run.status == 0, run.stderr
