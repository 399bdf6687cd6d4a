"""Users and settings: register-user (and --verify), unregister, list, allow-once, config set."""

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.emulator import VENV_BIN
from harness.people import PhoneHolder
from harness.server_root import (
    ssh_auth,
)
from webserver.admin.install import Installer, InstallOptions
from webserver.errors import InstallError

# --- register-user, unregister-user, list-users, allow-once -----------------------------------


@pytest.fixture
def registry(tmp_path):
    path = tmp_path / "ssh-auth.conf"
    path.write_text(
        "# keep this comment\npublic_url = https://ssh.example.com\nuser=root:447700900123\n"
    )
    path.chmod(0o640)
    return path


@pytest.mark.parametrize(
    "user, phone, message",
    [
        ("root", "0770 0900123", "'0770 0900123' is not a phone number in E.164 form"),
        ("root", "+44 7700 9001234567890", "is not a phone number in E.164 form"),
        ("root", "447700900123; reboot", "is not a phone number in E.164 form"),
        ("root", "$(id)", "is not a phone number in E.164 form"),
        ("sa-nosuchuser", "+447700900123", "no such user on this machine: sa-nosuchuser"),
        ("ro;ot", "+447700900123", "'ro;ot' is not a valid user name"),
        ("$(id)", "+447700900123", "'$(id)' is not a valid user name"),
        ("root\nuser=evil", "+447700900123", "is not a valid user name"),
        ("root", "+447700900123\nuser=evil:447700900999", "is not a phone number in E.164 form"),
    ],
)
def test_register_user_refuses_bad_input_and_changes_nothing(registry, user, phone, message):
    before = registry.read_bytes()
    result = ssh_auth("register-user", "--config", str(registry), user, phone)
    assert result.returncode == 2
    assert result.stderr.startswith("ssh-auth: ") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert registry.read_bytes() == before


def test_register_replaces_never_duplicates_and_keeps_comments(registry):
    assert (
        ssh_auth("register-user", "--config", str(registry), "root", "+44 7700 900456").stdout
        == "registered root as +447700900456\n"
    )
    assert (
        ssh_auth("register-user", "--config", str(registry), "nobody", "+1 (415) 555-0100").returncode
        == 0
    )
    assert registry.read_text() == (
        "# keep this comment\npublic_url = https://ssh.example.com\n"
        "user=root:447700900456\nuser=nobody:14155550100\n"
    )
    assert registry.stat().st_mode & 0o777 == 0o640
    listed = ssh_auth("list-users", "--config", str(registry)).stdout
    assert listed == "root\t+447700900456\nnobody\t+14155550100\n"
    assert ssh_auth("unregister-user", "--config", str(registry), "nobody").returncode == 0
    assert "nobody" not in registry.read_text()


def test_fifty_parallel_registrations_all_land(registry):
    users = [f"sa-p{n:02d}" for n in range(50)]
    for user in users:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], capture_output=True)

    def register(pair):
        number, user = pair
        return ssh_auth(
            "register-user", "--config", str(registry), user, f"+4477009{10000 + number}"
        ).returncode

    with ThreadPoolExecutor(max_workers=50) as pool:
        assert set(pool.map(register, enumerate(users))) == {0}
    lines = registry.read_text().splitlines()
    assert lines[:2] == ["# keep this comment", "public_url = https://ssh.example.com"]
    assert sorted(line for line in lines if line.startswith("user=sa-p")) == sorted(
        f"user={user}:4477009{10000 + n}" for n, user in enumerate(users)
    )


def test_allow_once_writes_an_expiring_exemption(registry):
    result = ssh_auth("allow-once", "--config", str(registry), "root", "--for", "1h")
    assert result.returncode == 0 and "may log in without the phone until" in result.stdout
    assert "allow_once=root:" in registry.read_text()
    bad = ssh_auth("allow-once", "--config", str(registry), "root", "--for", "forever")
    assert bad.returncode == 2 and "give a duration such as 30m, 1h or 2d" in bad.stderr


def test_version():
    assert ssh_auth("version").stdout == "ssh-auth 0.1.0\n"


def test_installer_errors_are_one_line(target):
    root, credentials, config = target
    with pytest.raises(InstallError, match="give --config FILE or --public-url URL"):
        Installer(str(root), say=lambda _: None).install(InstallOptions(str(root)))


@pytest.fixture
def verify_gate(deployments, emulator):
    """The default deployment."""
    return deployments.get({})


@pytest.mark.parametrize(
    "sim, status, saved",
    [("447700900132", 0, True), ("447700900999", 1, False)],
    ids=["right SIM: saved", "wrong SIM: not saved"],
)
def test_register_user_verify_runs_a_real_check_first(verify_gate, sim, status, saved):
    before = verify_gate.config.read_text()
    session = verify_gate.client(
        [
            str(VENV_BIN / "ssh-auth"),
            "register-user",
            "--verify",
            "--config",
            str(verify_gate.config),
            "sa-carol",
            "+44 7700 900132",
        ]
    )
    phone = PhoneHolder(sim)
    page = phone.scan(session.check_url())
    assert "(register this phone for sa-carol)" in page.text
    phone.phone.answer(page, "approve")
    code, out, err = session.finish(timeout=30)
    assert code == status, err
    assert ("user=sa-carol:447700900132" in verify_gate.config.read_text()) is saved
    if not saved:
        assert err.splitlines()[-1].endswith("Not registered.")
        assert verify_gate.config.read_text() == before
    verify_gate.config.write_text(before)


def test_register_user_verify_saves_nothing_when_failmode_safe_lets_logins_in(deployments, emulator):
    # failmode = safe may let a login in while the API is down; it never verifies a phone.
    gate = deployments.get({"failmode": "safe"})
    before = gate.config.read_text()
    emulator.fault("create", "status", status=503)  # the one create the check makes
    result = subprocess.run(
        [str(VENV_BIN / "ssh-auth"), "register-user", "--verify", "--config", str(gate.config),
         "sa-carol", "+44 7700 900132"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode, gate.config.read_text()) == (1, before)
    assert result.stderr.splitlines()[-1] == (
        "ssh-auth: phone verification for sa-carol: the phone check service is unreachable; "
        "nothing was verified. Not registered."
    )


# --- config set -------------------------------------------------------------------------------


def test_config_set_changes_one_setting_atomically_and_keeps_the_rest(registry):
    registry.chmod(0o640)
    before = registry.read_text()
    result = ssh_auth("config", "set", "--config", str(registry), "ttl", "90")
    assert (result.returncode, result.stdout) == (0, "ttl = 90\n")
    assert registry.read_text() == before + "ttl = 90\n"
    again = ssh_auth("config", "set", "--config", str(registry), "ttl", "60")
    assert again.stdout == "ttl = 60\n" and registry.read_text() == before + "ttl = 60\n"
    assert ssh_auth("config", "set", "--config", str(registry), "ttl", "60").stdout == (
        "ttl is already 60\n"
    )
    assert oct(registry.stat().st_mode & 0o777) == "0o640"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("colour", "blue", "ssh-auth: unknown setting 'colour' (see docs/configuration.md)"),
        ("ttl", "soon", "ssh-auth: ttl must be a number"),
        ("poll_interval", "nan", "ssh-auth: poll_interval must be a finite number"),
        (
            "api_base_url",
            "http://emulator:8081",
            "is plain HTTP to another host: the API's answers decide who logs in.",
        ),
        ("public_url", "https://x.example\nuser=evil:447700900999", "public_url: a value is one line"),
    ],
)
def test_config_set_refuses_what_would_not_work_and_changes_nothing(registry, key, value, message):
    before = registry.read_bytes()
    result = ssh_auth("config", "set", "--config", str(registry), key, value)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert registry.read_bytes() == before
