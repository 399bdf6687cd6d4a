"""The README's install commands, run as written on a throwaway server (harness.isolated_server):
then doctor is all ticks and a login goes through the installed gate with the phone."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.deployment import REPO
from harness.isolated_server import ADMIN, SYSTEMCTL_LINE


@pytest.fixture(scope="module")
def followed():
    """What each README step printed on the throwaway server."""
    directory = Path(tempfile.mkdtemp(prefix="sa-readme-", dir="/tmp"))
    try:
        result = subprocess.run(
            [
                "unshare",
                "--mount",
                "--fork",
                sys.executable,
                "-m",
                "harness.isolated_server",
                str(directory),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.splitlines()[-1])
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert "error" not in report, report
    return report


def test_the_readme_install_block_is_four_commands_and_the_systemctl_line_is_the_one_replaced(followed):
    steps = followed["steps"]
    assert len(steps) == 4 and steps[2] == SYSTEMCTL_LINE
    assert steps[0].startswith("python3 -m venv /opt/ssh-auth")
    assert steps[1].startswith("/opt/ssh-auth/bin/ssh-auth install ")
    assert steps[3] == "/opt/ssh-auth/bin/ssh-auth doctor"


def test_the_venv_and_the_install_succeed_as_written(followed):
    assert followed["venv"]["status"] == 0, followed["venv"]["stderr"][-2000:]
    install = followed["install"]
    assert install["status"] == 0, install["stderr"]
    for wrote in (
        "wrote /etc/ssh-auth/ssh-auth.conf",
        "wrote /etc/ssh-auth/tru.json",
        "wrote /usr/local/lib/ssh-auth/shim.pyz",
        "wrote /etc/systemd/system/ssh-auth.service",
        "wrote /etc/ssh/sshd_config.d/ssh-auth.conf",
        "created the system user ssh-auth",
    ):
        assert wrote in install["stdout"], install["stdout"]


def test_the_installed_unit_verifies_and_its_service_starts_as_its_user(followed):
    unit = followed["systemctl"]
    assert (unit["verify"], unit["verify_output"], unit["user"]) == (0, "", "ssh-auth")


def test_doctor_is_all_ticks(followed):
    doctor = followed["doctor"]
    assert doctor["status"] == 0, doctor["stdout"]
    assert "✗" not in doctor["stdout"]
    for tick in (
        "✔ configuration /etc/ssh-auth/ssh-auth.conf is valid",
        "✔ an access token was obtained from https://eu.api.idlayr.com",
        "✔ the webhook answers at https://ssh-auth.example.com/healthz",
        "✔ the service answers on /run/ssh-auth/ssh-auth.sock",
        "✔ sshd runs the phone check for every login (sshd -T)",
    ):
        assert tick in doctor["stdout"], doctor["stdout"]


def test_a_login_through_the_installed_gate_runs_after_the_phone_approves(followed):
    login = followed["login"]
    assert login["check_url"].startswith("https://eu.api.idlayr.com/phone_check/v0.2/checks/")
    assert (login["page"], login["status"], login["stdout"]) == (
        200,
        0,
        "the installed gate let me in\n",
    )
    assert login["stderr"].endswith("ssh-auth: approved on your phone.\n")
    assert f"login allowed user={ADMIN}" in followed["service_log"]
