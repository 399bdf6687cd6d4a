"""make demo: a real SSH login gated by a phone check, on this machine, with no account.

Starts the PhoneCheck emulator, ssh-auth-server and a private sshd on a free loopback port,
registers a demo user, logs in with the real ssh client, and lets the emulator's phone approve.
Exits 0 only if the gated command really ran. --interactive leaves it all running for a person.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .accounts import Ledger
from .deployment import Gate
from .emulator import VENV_BIN, Emulator

DEMO_USER, DEMO_PHONE = "sa-demo", "447700900123"
COMMAND = 'echo "hello from $(hostname) as $(whoami): the phone check let me in"'


def step(number: int, text: str) -> None:
    print(f"\n[{number}/5] {text}", flush=True)


def indent(text: str) -> str:
    return "".join(f"      {line}\n" for line in text.splitlines())


def automatic(gate: Gate) -> int:
    step(3, f"ssh -p {gate.port} {DEMO_USER}@127.0.0.1 '{COMMAND}'")
    session = gate.ssh(DEMO_USER, COMMAND, options=("-o", "SendEnv=LANG"))
    url = session.check_url()
    time.sleep(0.2)
    print("      what the user sees on the terminal:")
    print(indent(session.text()), end="", flush=True)
    step(
        4,
        f"the phone scans the QR on mobile data and approves "
        f"(phonecheck-emulator phone URL --sim {DEMO_PHONE} --approve)",
    )
    phone = subprocess.run(
        [str(VENV_BIN / "phonecheck-emulator"), "phone", url, "--sim", DEMO_PHONE, "--approve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in phone.stdout.splitlines():
        print(indent(line[:220]), end="")
    if phone.returncode:
        print(indent(phone.stderr), end="")
    status, out, err = session.finish(timeout=60)
    step(5, "the verdict, and the command's output")
    print(indent(err.splitlines()[-1] if err else "(nothing)"), end="")
    print(indent(f"stdout: {out.decode(errors='replace').rstrip()}"), end="")
    print(indent(f"exit status: {status}"), end="")
    ran = status == 0 and out.decode().startswith("hello from ")
    print(
        "\nDemo "
        + (
            "passed: the login ran the command only after the phone approved."
            if ran
            else "FAILED: the command did not run."
        ),
        flush=True,
    )
    return 0 if ran else 1


def interactive(gate: Gate) -> int:
    step(3, "ready for you")
    print(
        f"""
      Log in (in another terminal, as root):
          ssh -p {gate.port} -i {gate.key} -o StrictHostKeyChecking=no {DEMO_USER}@127.0.0.1
      Open the printed check URL in a browser: the emulator's phone page lets you pick
      "this SIM" (approve), "another SIM" (no match) or "on Wi-Fi" (network error), then the
      confirmation page asks you to Approve or Deny.
      Logs: {gate.root}/log/   Press Ctrl-C to stop.""",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--interactive", action="store_true", help="leave it running for you")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "make demo needs root: it creates the user sa-demo and runs a private sshd. "
            "Run: sudo make demo",
            file=sys.stderr,
        )
        return 1
    os.environ.setdefault("LANG", "C.UTF-8")
    logs = Path(tempfile.mkdtemp(prefix="ssh-auth-demo-"))
    ledger = Ledger()  # the demo's account goes when it ends
    try:
        return _run(args, logs)
    finally:
        ledger.restore()


def _run(args, logs: Path) -> int:
    step(1, "starting the PhoneCheck emulator (no account, no network)")
    extra = ("--phone-page",) if args.interactive else ()
    with Emulator(logs / "emulator.log", *extra) as emulator:
        print(indent(f"API at {emulator.url}"), end="")
        step(2, f"starting ssh-auth-server and a private sshd; {DEMO_USER} registered as +{DEMO_PHONE}")
        with Gate(emulator, users={DEMO_USER: DEMO_PHONE}) as gate:
            print(
                indent(
                    f"sshd on 127.0.0.1:{gate.port}, webhook on "
                    f"http://127.0.0.1:{gate.webhook_port}, shim {gate.shim}"
                ),
                end="",
            )
            return interactive(gate) if args.interactive else automatic(gate)


if __name__ == "__main__":
    sys.exit(main())
