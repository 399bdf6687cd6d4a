"""Benchmarks: what the gate adds to a login, and what polling alone would cost.

    .venv/bin/python -m benchmarks            # full run (as root): about 3 minutes
    .venv/bin/python -m benchmarks --quick    # the few-login smoke run CI does

Real processes on loopback: the emulator, ssh-auth-server, a real sshd and the real ssh client.
The comparison column is our own service learning verdicts only from a GET every 5 s
(benchmarks/poll_only_service.py); the tutorial's own figures are in benchmarks/README.md.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.accounts import Ledger
from harness.deployment import SHIM_BUILD, Gate
from harness.emulator import Emulator
from harness.people import PhoneHolder

QR_BYTES = "█".encode()
# Our own service learning verdicts only by a GET every 5 s: NOT the tutorial (its own bash
# script's figures, measured side by side on this machine, are in README.md).
POLL_ONLY = "ssh-auth, poll-only (5 s)"
SERVICE_CALLS = ("token", "create", "get", "patch", "jwks")


class TimedLogin:
    """One real ssh login whose output chunks are time-stamped as they arrive."""

    def __init__(self, gate: Gate, user: str, options: tuple = ()):
        env = {**os.environ, "LANG": "C.UTF-8"}
        argv = gate.ssh_argv(user, "echo ran", options=("-o", "SendEnv=LANG", *options))
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.chunks = {"out": [], "err": []}
        self.threads = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("out", self.process.stdout), ("err", self.process.stderr))
        ]
        for thread in self.threads:
            thread.start()
        self.approved_at: float | None = None

    def _read(self, name, stream):
        while chunk := os.read(stream.fileno(), 65536):
            self.chunks[name].append((time.perf_counter(), chunk))

    def first(self, name: str, needle: bytes, timeout: float = 60) -> float:
        """When `needle` first appeared on a stream (perf_counter time)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            seen = b""
            for stamp, chunk in list(self.chunks[name]):
                seen += chunk
                if needle in seen:
                    return stamp
            time.sleep(0.002)
        raise TimeoutError(f"{needle!r} never appeared")

    def check_url(self) -> str:
        self.first("err", b"/redirect")
        text = b"".join(c for _, c in self.chunks["err"]).decode()
        return next(w for w in text.split() if w.endswith("/redirect"))

    def approve(self, sim: str) -> None:
        """The phone scans and approves; the moment the approve POST is answered is recorded."""
        holder = PhoneHolder(sim)
        page = holder.scan(self.check_url())
        holder.phone.answer(page, "approve")
        self.approved_at = time.perf_counter()

    def finish(self) -> tuple[bool, float]:
        """(the command ran, verdict-to-shell seconds)."""
        self.process.wait(timeout=120)
        for thread in self.threads:
            thread.join(timeout=5)
        self.process.stdout.close()
        self.process.stderr.close()
        out = b"".join(c for _, c in self.chunks["out"])
        ran = self.process.returncode == 0 and out == b"ran\n"
        return ran, (self.first("out", b"ran") - self.approved_at) if ran else float("nan")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def shim_startup(runs: int) -> dict:
    """Wall time of the zipapp's --help under /usr/bin/python3 -I, and of a bare interpreter."""

    def wall(argv):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=False)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    importtime = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-X", "importtime", str(SHIM_BUILD), "--help"],
        capture_output=True,
        text=True,
    ).stderr.splitlines()
    names = [line.split("|")[-1].strip() for line in importtime if line.startswith("import time:")]
    selfs = [
        int(line.split("|")[0].split(":")[1])
        for line in importtime
        if line.startswith("import time:") and line.split(":")[1].strip()[0].isdigit()
    ]
    after_site = sum(selfs[names.index("site") + 1 :]) / 1e6 if "site" in names else float("nan")
    return {
        "shim": wall(["/usr/bin/python3", "-I", "-S", str(SHIM_BUILD), "--help"]),
        "python": wall(["/usr/bin/python3", "-I", "-S", "-c", "pass"]),
        "imports": after_site,
    }


def sequential(gate: Gate, emulator: Emulator, logins: int) -> dict:
    """Logins one after another: time-to-QR, verdict-to-shell, API calls per login."""
    warm = TimedLogin(gate, "sa-alice")  # the first login after a reset fetches token + JWKS
    warm.approve("447700900123")
    warm.finish()
    before = emulator.calls()
    to_qr, to_shell = [], []
    for _ in range(logins):
        login = TimedLogin(gate, "sa-alice")
        to_qr.append(login.first("err", QR_BYTES) - login.started)
        login.approve("447700900123")
        ran, seconds = login.finish()
        assert ran, "a login did not run its command"
        to_shell.append(seconds)
    after = emulator.calls()
    calls = {name: (after.get(name, 0) - before.get(name, 0)) / logins for name in SERVICE_CALLS}
    return {"to_qr": to_qr, "to_shell": to_shell, "calls": calls}


def ssh_baseline(gate: Gate, runs: int) -> list[float]:
    """Client start to the command's output for a login sshd exempts (no shim at all)."""
    times = []
    for _ in range(runs):
        login = TimedLogin(gate, "sa-alice", options=("-o", "BindAddress=127.0.0.2"))
        times.append(login.first("out", b"ran") - login.started)
        login.process.wait(timeout=30)
        login.process.stdout.close()
        login.process.stderr.close()
    return times


# Runs inside an SSH login (the service refuses callers outside one): starts the shim as sshd
# would and times its first QR byte, once per argument.
GATE_PART = """
import json, os, subprocess, sys, time
times = []
for _ in range(int(sys.argv[3])):
    started = time.perf_counter()
    shim = subprocess.Popen(["/usr/bin/python3", "-I", "-S", sys.argv[1], "create-check", "--socket",
        sys.argv[2]], env={**os.environ, "LANG": "C.UTF-8", "SSH_ORIGINAL_COMMAND": "true"},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    while "\u2588".encode() not in seen:
        chunk = os.read(shim.stderr.fileno(), 65536)
        if not chunk:
            sys.exit("the shim ended before its QR: " + repr(seen[-200:]))
        seen += chunk
    times.append(time.perf_counter() - started)
    shim.kill(); shim.wait()
print(json.dumps(times))
"""


def gate_part(gate: Gate, runs: int) -> list[float]:
    """The gate's own share of time-to-QR: from the shim's start to the first QR byte.

    Timed inside a real SSH login that sshd exempts (so it runs a shell, not the shim), from the
    same connection the service sees: the shim starts there exactly as sshd would start it.
    """
    script = gate.root / "lib" / "gate_part.py"
    script.write_text(GATE_PART)
    script.chmod(0o644)
    command = f"/usr/bin/python3 {script} {gate.shim} {gate.socket} {runs}"
    argv = gate.ssh_argv("sa-alice", command, options=("-o", "BindAddress=127.0.0.2"))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if result.returncode:
        raise RuntimeError(result.stderr.strip())
    return json.loads(result.stdout)


def proc_status(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"])}


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def concurrent(gate: Gate, users: dict, logins: int, spread: float) -> dict:
    """`logins` waiting at once; phones approve at random moments over `spread` seconds."""
    pid = gate.service.process.pid
    cpu_before = cpu_seconds(pid)
    names = [name for name in users for _ in range(3)][:logins]  # at most 3 waiting per user
    sessions = [TimedLogin(gate, name) for name in names]
    for session in sessions:
        session.check_url()
    waiting = proc_status(pid)

    def phone(pair):
        session, name = pair
        time.sleep(random.uniform(0, spread))
        session.approve(users[name])

    with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
        list(pool.map(phone, zip(sessions, names, strict=True)))
    results = [session.finish() for session in sessions]
    return {
        "ok": sum(ran for ran, _ in results),
        "to_shell": [s for ran, s in results if ran],
        "rss_mb": waiting["rss_mb"],
        "threads": waiting["threads"],
        "cpu": cpu_seconds(pid) - cpu_before,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few logins: a smoke run")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks need root: they create users and run a private sshd", file=sys.stderr)
        return 1
    logs = Path(tempfile.mkdtemp(prefix="ssh-auth-bench-"))
    ledger = Ledger()  # every account the run makes goes when it ends
    try:
        return run(args, logs)
    finally:
        ledger.restore()


def run(args, logs: Path) -> int:
    """Both designs, one after the other; then the table."""
    # --quick is the smoke run CI does: each poll-only login costs up to poll_interval.
    serial, serial_poll_only, crowd = (3, 2, 6) if args.quick else (30, 10, 200)
    users = {f"sa-c{n:03d}": f"44770090{2000 + n}" for n in range((crowd + 2) // 3)}
    startup = shim_startup(5 if args.quick else 20)
    print(f"machine: {os.cpu_count()} cores, {sys.platform}; logs in {logs}", flush=True)
    results = {}
    with Emulator(logs / "emulator.log") as emulator:
        for design, module in (
            ("ssh-auth", "webserver"),
            (POLL_ONLY, "benchmarks.poll_only_service"),
        ):
            everyone = {"sa-alice": "447700900123", **users}
            with Gate(
                emulator, users=everyone, service_module=module, exempt_networks=("127.0.0.2/32",)
            ) as gate:
                emulator.reset()
                count = serial if design == "ssh-auth" else serial_poll_only
                if design == "ssh-auth":
                    startup["baseline"] = ssh_baseline(gate, serial)
                    startup["gate_part"] = gate_part(gate, serial)
                print(f"{design}: {count} logins one by one ...", flush=True)
                results[design] = sequential(gate, emulator, count)
                print(f"{design}: {crowd} logins at once ...", flush=True)
                results[design]["crowd"] = concurrent(
                    gate, users, crowd, spread=2.0 if args.quick else 10.0
                )
    report(results, startup, crowd)
    return 0


def report(results: dict, startup: dict, crowd: int) -> None:
    ours, theirs = results["ssh-auth"], results[POLL_ONLY]

    def row(name, target, a, b, ratio=True):
        times = f"{b / a:.0f}x" if ratio and a > 0 else ""
        print(f"| {name} | {target} | {ms(a)} | {ms(b)} | {times} |")

    print(f"\n| measure | target | ssh-auth | {POLL_ONLY} | poll-only / ssh-auth |")
    print("|---|---|---|---|---|")
    print(
        f"| ssh login with no gate (client start → output), median | | "
        f"{ms(statistics.median(startup['baseline']))} | | |"
    )
    print(
        f"| gate's part of time-to-QR (sshd starts the shim → QR), median | < 150 ms | "
        f"{ms(statistics.median(startup['gate_part']))} | | |"
    )
    row(
        "time-to-QR (client start → QR), median",
        "",
        statistics.median(ours["to_qr"]),
        statistics.median(theirs["to_qr"]),
        ratio=False,
    )
    row(
        "time-to-QR, p95",
        "",
        percentile(ours["to_qr"], 95),
        percentile(theirs["to_qr"], 95),
        ratio=False,
    )
    for q, label in ((50, "median"), (95, "p95"), (99, "p99")):
        row(
            f"verdict-to-shell, {label}",
            "< 50 ms" if q == 50 else "",
            percentile(ours["to_shell"], q),
            percentile(theirs["to_shell"], q),
        )
    for name, result in (("ssh-auth", ours), (POLL_ONLY, theirs)):
        calls = result["calls"]
        detail = ", ".join(f"{k} {v:.2f}" for k, v in calls.items() if v)
        print(f"| API calls per login ({name}) | ≤ 2.1 | {sum(calls.values()):.2f} ({detail}) | | |")
    a, b = ours["crowd"], theirs["crowd"]
    print(f"| {crowd} logins at once: succeeded | all | {a['ok']}/{crowd} | {b['ok']}/{crowd} | |")
    row(
        f"{crowd} at once: verdict-to-shell p50",
        "",
        percentile(a["to_shell"], 50),
        percentile(b["to_shell"], 50),
    )
    row(
        f"{crowd} at once: verdict-to-shell p99",
        "< 500 ms",
        percentile(a["to_shell"], 99),
        percentile(b["to_shell"], 99),
    )
    print(
        f"| {crowd} at once: service RSS / threads while waiting | | {a['rss_mb']:.0f} MB / "
        f"{a['threads']} | {b['rss_mb']:.0f} MB / {b['threads']} | |"
    )
    print(
        f"| {crowd} at once: service CPU for the whole run | | {a['cpu']:.1f} s | {b['cpu']:.1f} s | |"
    )
    print(
        f"| shim start-up: wall, `/usr/bin/python3 -I -S shim.pyz --help` | < 100 ms | "
        f"{ms(startup['shim'])} (bare interpreter {ms(startup['python'])}; "
        f"shim imports {ms(startup['imports'])}) | | |"
    )


if __name__ == "__main__":
    sys.exit(main())
