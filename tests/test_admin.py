"""Administration against a temporary root: install, uninstall, migration, users, real sshd -t/-T."""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from webserver.sshd_install import Installer, InstallError, InstallOptions

from .conftest_helpers import gate_with
from .emulator_fixture import VENV_BIN
from .gate import PhoneHolder, client_key, ensure_user, run, ssh_client_options
from .processes import ServerProcess, free_port
from .test_matrix import _through

SHADOW_TOOLS_LEFTOVERS = {"etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/.pwd.lock"}
TUTORIAL_FORCE = "ForceCommand /usr/local/bin/tru-id-ssh-auth/ssh-auth create-check\n"


def ssh_auth(*argv, check=False):
    return subprocess.run(
        [str(VENV_BIN / "ssh-auth"), *argv], capture_output=True, text=True, check=check, timeout=60
    )


@pytest.fixture
def target(tmp_path):
    """A root directory that looks like a Debian server: sshd_config with an Include, accounts."""
    root = Path(tempfile.mkdtemp(prefix="sa-root-", dir="/tmp"))
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        shutil.copy2(f"/etc/{name}", root / "etc" / name)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "etc/ssh/host_key"))
    (root / "etc/ssh/sshd_config").write_text(
        "Include /etc/ssh/sshd_config.d/*.conf\n"
        f"HostKey {root}/etc/ssh/host_key\nUsePAM no\nPasswordAuthentication no\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    credentials = tmp_path / "tru.json"
    credentials.write_text(
        json.dumps({"credentials": [{"client_id": "id", "client_secret": "s"}], "data_residency": "eu"})
    )
    credentials.chmod(0o600)
    config = tmp_path / "ssh-auth.conf"
    config.write_text("# settings\npublic_url = https://ssh.example.com\nuser=root:447700900123\n")
    yield root, credentials, config
    shutil.rmtree(root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, str]:
    """Every file's bytes (as a hash), but our backups and the shadow tools' own backups."""
    files = {}
    for path in root.rglob("*"):
        relative = str(path.relative_to(root))
        if (
            path.is_file()
            and not relative.startswith("var/backups/")
            and relative not in SHADOW_TOOLS_LEFTOVERS
        ):
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def install(root, credentials, config, *extra):
    return ssh_auth(
        "install",
        "--root",
        str(root),
        "--credentials",
        str(credentials),
        "--config",
        str(config),
        *extra,
    )


def test_install_writes_every_file_with_its_owner_and_mode(target):
    root, credentials, config = target
    result = install(root, credentials, config)
    assert result.returncode == 0, result.stderr
    passwd = (root / "etc/passwd").read_text()
    uid, gid = next(line.split(":")[2:4] for line in passwd.splitlines() if line.startswith("ssh-auth:"))
    expected = {
        "etc/ssh-auth/ssh-auth.conf": (0o640, "0", gid),
        "etc/ssh-auth/tru.json": (0o600, uid, gid),
        "usr/local/lib/ssh-auth/shim.pyz": (0o644, "0", "0"),
        "etc/systemd/system/ssh-auth.service": (0o644, "0", "0"),
        "etc/ssh/sshd_config.d/ssh-auth.conf": (0o644, "0", "0"),
    }
    for relative, (mode, owner, group) in expected.items():
        info = (root / relative).stat()
        assert (info.st_mode & 0o777, str(info.st_uid), str(info.st_gid)) == (mode, owner, group)
    unit = (root / "etc/systemd/system/ssh-auth.service").read_text()
    for setting in (
        "User=ssh-auth",
        "RuntimeDirectory=ssh-auth",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
    ):
        assert setting in unit
    installer = Installer(str(root), say=lambda _: None)
    assert installer.effective("192.0.2.1")["forcecommand"] == (
        "/usr/bin/python3 -I /usr/local/lib/ssh-auth/shim.pyz create-check "
        "--socket /run/ssh-auth/ssh-auth.sock"
    )
    assert installer.effective("192.0.2.1")["disableforwarding"] == "yes"
    shim = subprocess.run(
        [
            "/usr/bin/python3",
            "-I",
            str(root / "usr/local/lib/ssh-auth/shim.pyz"),
            "create-check",
            "--socket",
            "/nonexistent",
        ],
        capture_output=True,
        text=True,
    )
    assert (shim.returncode, shim.stderr) == (
        1,
        "ssh-auth: the ssh-auth service is not running. Access denied.\n",
    )


def test_a_second_install_changes_nothing_and_says_so(target):
    root, credentials, config = target
    assert install(root, credentials, config).returncode == 0
    before = snapshot(root)
    again = install(root, credentials, config)
    assert again.returncode == 0
    assert again.stdout == "ssh-auth is already installed as asked: nothing to change.\n"
    assert snapshot(root) == before


def test_dry_run_prints_the_diff_and_changes_nothing(target):
    root, credentials, config = target
    before = snapshot(root)
    result = install(root, credentials, config, "--dry-run")
    assert result.returncode == 0
    assert "+ForceCommand /usr/bin/python3 -I /usr/local/lib/ssh-auth/shim.pyz" in result.stdout
    assert "/usr/local/lib/ssh-auth/shim.pyz: would be written" in result.stdout
    assert snapshot(root) == before


def test_uninstall_returns_every_file_to_its_prior_bytes(target):
    root, credentials, config = target
    before = snapshot(root)
    assert install(root, credentials, config).returncode == 0
    assert snapshot(root) != before
    result = ssh_auth("uninstall", "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert "sshd -t: configuration OK" in result.stdout and "reload sshd" in result.stdout
    assert snapshot(root) == before
    assert not (root / "etc/ssh-auth").exists() and not (root / "usr/local/lib").exists()
    assert list((root / "var/backups").iterdir())  # a backup of what was removed


def test_without_an_include_a_marked_block_goes_first_and_comes_out_again(target):
    root, credentials, config = target
    sshd_config = root / "etc/ssh/sshd_config"
    sshd_config.write_text(
        sshd_config.read_text().replace("Include /etc/ssh/sshd_config.d/*.conf\n", "")
    )
    before = snapshot(root)
    assert install(root, credentials, config).returncode == 0
    text = sshd_config.read_text()
    assert text.startswith("# BEGIN ssh-auth") and "ForceCommand /usr/bin/python3" in text
    assert not (root / "etc/ssh/sshd_config.d/ssh-auth.conf").exists()
    assert ssh_auth("uninstall", "--root", str(root)).returncode == 0
    assert snapshot(root) == before


def test_a_broken_sshd_config_is_left_alone(target):
    root, credentials, config = target
    sshd_config = root / "etc/ssh/sshd_config"
    sshd_config.write_text(sshd_config.read_text() + "NoSuchKeyword yes\n")
    before = snapshot(root)
    result = install(root, credentials, config)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "ssh-auth: sshd's configuration is already invalid; fix it first, nothing was changed:"
    )
    assert snapshot(root) == before


def test_a_forcecommand_that_would_win_rolls_everything_back(target):
    root, credentials, config = target
    sshd_config = root / "etc/ssh/sshd_config"
    sshd_config.write_text("ForceCommand /bin/other\n" + sshd_config.read_text())
    before = snapshot(root)
    result = install(root, credentials, config)
    assert result.returncode == 1
    assert "sshd would not run the phone check (ForceCommand is '/bin/other'" in result.stderr
    assert "restored every file to what it was before" in result.stdout
    assert snapshot(root) == before | {
        k: v
        for k, v in snapshot(root).items()
        if k in ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")
    }


def test_the_lockout_is_refused_unless_forced(target):
    root, credentials, config = target
    config.write_text("public_url = https://ssh.example.com\n")
    before = snapshot(root)
    refused = install(root, credentials, config)
    assert refused.returncode == 1
    assert refused.stderr.startswith("ssh-auth: refusing to install: no administrator")
    assert snapshot(root) == before
    assert install(root, credentials, config, "--force").returncode == 0
    exempt = install(root, credentials, config, "--exempt-network", "10.0.0.0/8")
    assert exempt.returncode == 0


def test_tutorial_install_is_migrated_and_uninstall_clears_its_leftovers(target):
    root, credentials, _ = target
    tutorial = root / "usr/local/bin/tru-id-ssh-auth"
    tutorial.mkdir(parents=True)
    (tutorial / "tru-id-ssh-auth.conf").write_text(
        "header=tru.ID SSH\nuser=root:447700900123\nuser=nobody:447700900124\n"
    )
    (tutorial / "tru.json").write_text(credentials.read_text())
    (tutorial / "tru.json").chmod(0o644)
    sshd_config = root / "etc/ssh/sshd_config"
    sshd_config.write_text(sshd_config.read_text() + TUTORIAL_FORCE)
    (root / "etc/ssh/sshd_confige").write_text("the tutorial's backup\n")
    result = ssh_auth("install", "--root", str(root), "--public-url", "https://ssh.example.com")
    assert result.returncode == 0, result.stderr
    assert "moved the API credentials out of /usr/local/bin/tru-id-ssh-auth/tru.json" in result.stdout
    assert not (tutorial / "tru.json").exists()
    assert (root / "etc/ssh-auth/tru.json").read_text() == credentials.read_text()
    assert (root / "etc/ssh-auth/tru.json").stat().st_mode & 0o777 == 0o600
    installed = (root / "etc/ssh-auth/ssh-auth.conf").read_text()
    assert "user=root:447700900123\n" in installed and "user=nobody:447700900124\n" in installed
    assert ssh_auth("uninstall", "--root", str(root)).returncode == 0
    assert TUTORIAL_FORCE not in sshd_config.read_text()
    assert not (root / "etc/ssh/sshd_confige").exists()
    assert (tutorial / "tru.json").read_text() == credentials.read_text()  # given back


def test_the_installed_drop_in_gates_logins_and_refuses_forwarding(target, tmp_path):
    root, credentials, config = target
    assert install(root, credentials, config, "--exempt-network", "127.0.0.2/32").returncode == 0
    ensure_user("sa-alice", client_key().with_suffix(".pub").read_text())
    tested = tmp_path / "sshd_config"  # the installed config, its Include pointed into the root
    tested.write_text(
        (root / "etc/ssh/sshd_config").read_text().replace("Include /etc/", f"Include {root}/etc/")
    )
    port = free_port()
    os.makedirs("/run/sshd", exist_ok=True)
    argv = [
        "/usr/sbin/sshd",
        "-D",
        "-e",
        "-f",
        str(tested),
        "-o",
        f"Port={port}",
        "-o",
        "ListenAddress=127.0.0.1",
        "-o",
        f"PidFile={tmp_path}/sshd.pid",
        "-o",
        "LogLevel=VERBOSE",
    ]
    base = ["ssh", "-p", str(port), *ssh_client_options(client_key())]

    def ssh(*args, **kwargs):
        return subprocess.run(
            [*base, *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def listening(_):
        return ssh_keyscan(port)

    with ServerProcess(argv, tmp_path / "sshd.log", ready=listening) as sshd:
        gated = ssh("sa-alice@127.0.0.1", "echo ran")
        exempt = ssh("-o", "BindAddress=127.0.0.2", "sa-alice@127.0.0.1", "echo ran")
        stdio = ssh("-W", "127.0.0.1:22", "sa-alice@127.0.0.1")
        remote = ssh(
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            f"{free_port()}:127.0.0.1:22",
            "sa-alice@127.0.0.1",
        )
        probes = {}
        for flag in ("-L", "-D"):
            local = free_port()
            spec = f"{local}:127.0.0.1:{port}" if flag == "-L" else str(local)
            client = subprocess.Popen(
                [*base, "-N", flag, spec, "sa-alice@127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            socks = bytes([4, 1]) + port.to_bytes(2, "big") + bytes([127, 0, 0, 1, 0])
            probes[flag] = _through(local, socks if flag == "-D" else b"SSH-2.0-probe\r\n")
            client.kill()
            client.wait()
        log = sshd.log_text()
    assert gated.stdout == "" and gated.returncode != 0
    assert (
        "forced-command (config) '/usr/bin/python3 -I /usr/local/lib/ssh-auth/shim.pyz create-check"
    ) in log
    assert exempt.stdout == "ran\n"
    assert stdio.returncode != 0 and "stdio forwarding failed" in stdio.stderr
    assert remote.returncode != 0 and "forwarding failed" in remote.stderr
    assert all(result.startswith("refused") for result in probes.values()), probes


def ssh_keyscan(port: int) -> bool:
    return (
        subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True).returncode
        == 0
    )


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


verify_deployment, verify_gate = gate_with("verify_gate", {})


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
    page = PhoneHolder(sim).scan(session.check_url())
    assert "(register this phone for sa-carol)" in page.text
    PhoneHolder(sim).phone.answer(page, "approve")
    code, out, err = session.finish(timeout=30)
    assert code == status, err
    assert ("user=sa-carol:447700900132" in verify_gate.config.read_text()) is saved
    if not saved:
        assert err.splitlines()[-1].endswith("Not registered.")
        assert verify_gate.config.read_text() == before
    verify_gate.config.write_text(before)
