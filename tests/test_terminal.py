"""What a person sees at an 80x24 terminal (a real pty under tmux): a QR that scans, a countdown."""

import shlex
import subprocess
import time
import uuid

import pytest

from harness.camera import decode
from harness.deployment import USERS
from harness.people import PhoneHolder

ALICE = USERS["sa-alice"]


class Tmux:
    """A detached tmux session of a given size running one command."""

    def __init__(self, command: str, columns: int, rows: int, env: dict[str, str]):
        self.name = f"sa-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                self.name,
                "-x",
                str(columns),
                "-y",
                str(rows),
                f"env {exports} {command}; sleep 30",
            ],
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-t", self.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait_for(self, words: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if words in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{words!r} never appeared on:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def terminal(gate):
    opened = []

    def open_terminal(env: dict, columns: int = 80, rows: int = 24, command: str = "echo ok"):
        ssh = shlex.join(gate.ssh_argv("sa-alice", command, tty=True, options=("-o", "SendEnv=LANG")))
        opened.append(Tmux(ssh, columns, rows, env))
        return opened[-1]

    yield open_terminal
    for each in opened:
        each.close()


def qr_block(screen: str) -> str:
    rows = [line for line in screen.splitlines() if line and set(line) <= set("█▀▄ ")]
    return "\n".join(rows)


def test_the_qr_on_an_80x24_utf8_terminal_scans_to_the_check_url(gate, terminal):
    screen_of = terminal({"TERM": "xterm-256color", "LANG": "C.UTF-8"})
    screen = screen_of.wait_for("Waiting for your phone:")
    url = next(word for word in screen.split() if "/redirect" in word)
    [scanned] = decode(qr_block(screen), unicode=True)
    assert scanned.lower() == url.lower() and scanned.endswith(url.split("/", 3)[3])
    lines = screen.splitlines()
    assert lines[0] == "ssh-auth: confirm this login with your phone (Wi-Fi off, mobile data on):"
    assert lines[-1].startswith("Waiting for your phone: ")  # everything on one 80x24 screen
    assert "Or open on the phone: http" in screen
    PhoneHolder(ALICE).approve(url)
    screen_of.wait_for("ssh-auth: approved on your phone.\nok\n")


def test_the_countdown_updates_in_place(gate, terminal):
    screen_of = terminal({"TERM": "xterm-256color", "LANG": "C.UTF-8"})
    first = screen_of.wait_for("Waiting for your phone:")
    time.sleep(2.2)
    later = screen_of.screen()
    assert later.count("Waiting for your phone:") == 1
    assert later != first  # the same line, counting down
    PhoneHolder(ALICE).deny(next(w for w in later.split() if "/redirect" in w))


@pytest.mark.parametrize(
    "env",
    [{"TERM": "dumb", "LANG": "C.UTF-8"}, {"TERM": "xterm", "LANG": "C"}],
    ids=["TERM=dumb", "LANG=C"],
)
def test_without_utf8_an_80x24_terminal_gets_the_url_alone(gate, terminal, env):
    screen_of = terminal(env)
    screen = screen_of.wait_for("Or open on the phone:")
    assert "No room for a QR code in this terminal: open the URL below on the phone." in screen
    assert not set(screen) & set("█▀▄")
    PhoneHolder(ALICE).deny(next(w for w in screen.split() if "/redirect" in w))


def test_without_utf8_a_large_terminal_gets_an_ascii_qr_that_scans(gate, terminal):
    screen_of = terminal({"TERM": "dumb", "LANG": "C"}, columns=120, rows=60)
    screen = screen_of.wait_for("Or open on the phone:")
    rows = [line for line in screen.splitlines() if line and set(line) <= {"#", " "}]
    url = next(word for word in screen.split() if "/redirect" in word)
    assert decode("\n".join(rows), unicode=False)[0].lower() == url.lower()
    PhoneHolder(ALICE).deny(url)


def test_a_tiny_terminal_gets_the_url_alone(gate, terminal):
    screen_of = terminal({"TERM": "xterm-256color", "LANG": "C.UTF-8"}, columns=40, rows=12)
    screen = screen_of.wait_for("No room for a QR code")
    url = next(word for word in screen.replace("\n", "").split() if "/redirect" in word)
    PhoneHolder(ALICE).deny(url)
