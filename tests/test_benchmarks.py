"""The benchmarks' quick mode runs end to end, so the published numbers never rot."""

import subprocess

from harness.deployment import REPO
from harness.emulator import VENV_BIN


def test_quick_benchmark_prints_the_table():
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "benchmarks", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for row in (
        "verdict-to-shell, median",
        "API calls per login (ssh-auth)",
        "gate's part of time-to-QR",
        "6 logins at once: succeeded | all | 6/6 | 6/6",
    ):
        assert row in result.stdout, result.stdout
