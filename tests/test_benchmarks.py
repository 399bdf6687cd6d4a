"""The benchmarks' quick mode runs end to end, so the published numbers never rot."""

import subprocess

from harness.deployment import REPO
from harness.emulator import VENV_BIN


def quick(module: str) -> str:
    """What `python -m MODULE --quick` prints; it must exit 0."""
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", module, "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    return result.stdout


def test_quick_benchmark_prints_the_table():
    printed = quick("benchmarks")
    for row in (
        "verdict-to-shell, median",
        "API calls per login (ssh-auth)",
        "gate's part of time-to-QR",
        "6 logins at once: succeeded | all | 6/6 | 6/6",
    ):
        assert row in printed, printed


def test_quick_auth_time_benchmark_prints_the_table(pam_module):
    printed = quick("benchmarks.pam")
    for row in (
        "| Enter after approval → session output, median of 3 |",
        "| same sshd, Debian's password stack: Enter → output, median |",
        "| of which mapped from pam_ssh_auth.so and json-c (RSS) | < 5 MB |",
    ):
        assert row in printed, printed


def test_quick_fleet_benchmark_prints_the_table():
    printed = quick("benchmarks.fleet")
    for row in (
        "| logins waiting at once (hub's table), over 4 hosts | 20 | 20 |",
        "| allowed (socket logins + whole logins through sshd) | all | 20/20 (16 + 4) |",
        "| check created on the login's own host, for its user (hub's table) | all | 20/20 |",
        "| hosts whose agent allowed exactly its own logins (agent logs) | all | 4/4 |",
        "| approval POST answered → allow at the login, p99 | < 200 ms |",
    ):
        assert row in printed, printed
