"""Auth-time mode benchmarks: from the Enter after approval to the session, and what the PAM
module adds to the sshd process that runs it.

    .venv/bin/python -m benchmarks.pam            # 30 logins (as root)
    .venv/bin/python -m benchmarks.pam --quick    # the smoke run CI does

Real processes on loopback: the emulator, ssh-auth-server, a real sshd whose auth stack is our
module, and the real ssh client at a terminal, as in tests/test_pam_login.py.
"""

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from harness.accounts import Ledger
from harness.emulator import Emulator
from harness.pam_gate import PAM_BUILD, PamGate, short_url
from harness.people import PhoneHolder
from webserver.admin.pam_module import build

ALICE = "447700900123"
OURS = ("pam_ssh_auth.so", "libjson-c.so")  # what the module brings into sshd's process


def enter_to_session(gate: PamGate) -> float:
    """Seconds from the Enter, pressed once the phone's approval reached the module, to the
    command's first output."""
    logged = gate.service.log_text().count("login allowed user=sa-alice")
    client = gate.login("sa-alice", "echo ran")
    PhoneHolder(ALICE).approve(short_url(client))
    while gate.service.log_text().count("login allowed user=sa-alice") == logged:
        time.sleep(0.001)
    pressed = time.perf_counter()
    client.press_enter()
    return output_after(client, pressed)


def output_after(client, pressed: float) -> float:
    """Seconds from `pressed` to the command's output ("ran"), once the client has ended."""
    while b"ran" not in client.out and client.process.poll() is None:
        time.sleep(0.0005)
    seconds = time.perf_counter() - pressed
    status, out, _ = client.finish()
    if status or out != b"ran\n":
        raise RuntimeError(f"the login failed (exit {status}): {client.text()}")
    return seconds


def enter_to_session_with_a_password(gate: PamGate, password: str) -> float:
    """The same measure through the same sshd with Debian's auth stack: the password typed, then
    the Enter; what sshd and PAM take after authentication without our module."""
    client = gate.login("sa-alice", "echo ran")
    client.wait_for("assword: ")
    client.type(password)
    pressed = time.perf_counter()
    client.press_enter()
    return output_after(client, pressed)


@contextmanager
def password(user: str):
    """A password for the user while the baseline runs, MD5-hashed so that checking it costs
    nothing to speak of; the account's '*' again afterwards."""
    secret = secrets.token_urlsafe(12)
    hashed = subprocess.run(
        ["openssl", "passwd", "-1", secret], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["usermod", "-p", hashed, user], check=True)
    try:
        yield secret
    finally:
        subprocess.run(["usermod", "-p", "*", user], check=True)


def smaps_kb(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, RSS of our module's and json-c's mappings) of a process, in kB."""
    rss = pss = ours = 0
    mapping = ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            words = line.split()
            if "-" in words[0] and len(words) >= 5:
                mapping = words[5] if len(words) > 5 else ""
            elif words[0] == "Rss:":
                rss += int(words[1])
                ours += int(words[1]) if any(name in mapping for name in OURS) else 0
            elif words[0] == "Pss:":
                pss += int(words[1])
    return rss, pss, ours


def pam_process(user: str) -> int | None:
    """The sshd process running PAM for a login of `user` (OpenSSH's `sshd: USER [pam]`)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.rstrip(b"\0").endswith(f"{user} [pam]".encode()):
            return int(pid)
    return None


def module_memory(gate: PamGate) -> tuple[int, int, int]:
    """smaps_kb of the process running our module while it waits at the prompt."""
    client = gate.login("sa-alice", "true")
    url = short_url(client)
    pid = pam_process("sa-alice")
    figures = smaps_kb(pid)
    PhoneHolder(ALICE).deny(url)
    client.press_enter()
    client.finish()
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pam", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few logins: a smoke run")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks need root: they create users and run a private sshd", file=sys.stderr)
        return 1
    logs = Path(tempfile.mkdtemp(prefix="ssh-auth-bench-pam-"))
    ledger = Ledger()
    try:
        build(str(PAM_BUILD))
        count = 3 if args.quick else 30
        with Emulator(logs / "emulator.log") as emulator:
            with PamGate(emulator) as gate:
                enter_to_session(gate)  # the first login fetches the API token and JWKS
                runs = [enter_to_session(gate) for _ in range(count)]
                rss, pss, ours = module_memory(gate)
            with PamGate(emulator, stock_auth=True) as stock, password("sa-alice") as secret:
                baseline = [enter_to_session_with_a_password(stock, secret) for _ in range(count)]
    finally:
        ledger.restore()
    median, base = statistics.median(runs) * 1000, statistics.median(baseline) * 1000
    print("\n| measure (auth-time mode) | target | result |")
    print("|---|---|---|")
    print(f"| Enter after approval → session output, median of {count} | | {median:.1f} ms |")
    print(f"| same sshd, Debian's password stack: Enter → output, median | | {base:.1f} ms |")
    print(f"| our module's part of it (the difference) | < 50 ms | {median - base:.1f} ms |")
    print(f"| sshd's PAM process at our prompt: RSS / PSS | | {rss} kB / {pss} kB |")
    print(f"| of which mapped from pam_ssh_auth.so and json-c (RSS) | < 5 MB | {ours} kB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
