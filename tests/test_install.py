"""Install, uninstall and the proof of sshd's effective configuration, against temporary roots."""

import base64
import json
import os
import subprocess
import time

from harness.accounts import client_key, ensure_user
from harness.processes import free_port, send_through
from harness.server_root import (
    accounts_aside,
    install,
    installed_sshd,
    ownership,
    prepend,
    service_ids,
    snapshot,
    ssh_auth,
)
from webserver.admin.sshd import Sshd

TUTORIAL_FORCE = "ForceCommand /usr/local/bin/tru-id-ssh-auth/ssh-auth create-check\n"
BYPASS_ADVICE = (
    " (sshd takes a keyword's first value, and a Match block's over the global one; "
    "change your sshd configuration and install again)\n"
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
    sshd = Sshd(root)
    assert sshd.effective("192.0.2.1")["forcecommand"] == (
        "/usr/bin/python3 -I -S /usr/local/lib/ssh-auth/shim.pyz create-check "
        "--socket /run/ssh-auth/ssh-auth.sock"
    )
    assert sshd.effective("192.0.2.1")["disableforwarding"] == "yes"
    shim = subprocess.run(
        [
            "/usr/bin/python3",
            "-I",
            "-S",
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
    assert "+ForceCommand /usr/bin/python3 -I -S /usr/local/lib/ssh-auth/shim.pyz" in result.stdout
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
    assert result.stderr == (
        "ssh-auth: refusing to install: a login as nobody from 192.0.2.10 would bypass the phone "
        "check: ForceCommand is '/bin/other'" + BYPASS_ADVICE
    )
    assert "restored every file to what it was before" in result.stdout
    assert accounts_aside(root, snapshot(root)) == accounts_aside(root, before)


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
    assert "moved the phone numbers out of /usr/local/bin/tru-id-ssh-auth/tru-id-ssh-auth.conf" in (
        result.stdout
    )
    assert not (tutorial / "tru.json").exists()
    assert not (tutorial / "tru-id-ssh-auth.conf").exists()  # it was readable by everyone
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
    exempt = install(root, credentials, config, "--exempt-network", "127.0.0.2/32", "--force")
    assert exempt.returncode == 0, exempt.stderr  # loopback, to log in from it here
    ensure_user("sa-alice", client_key().with_suffix(".pub").read_text())
    with installed_sshd(root, tmp_path) as server:
        port, base, ssh = server.port, server.base, server.ssh
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
            probes[flag] = send_through(local, socks if flag == "-D" else b"SSH-2.0-probe\r\n")
            client.kill()
            client.wait()
        log = server.log()
    assert gated.stdout == "" and gated.returncode != 0
    assert (
        "forced-command (config) '/usr/bin/python3 -I -S /usr/local/lib/ssh-auth/shim.pyz create-check"
    ) in log
    assert exempt.stdout == "ran\n"
    assert stdio.returncode != 0 and "stdio forwarding failed" in stdio.stderr
    assert remote.returncode != 0 and "forwarding failed" in remote.stderr
    assert all(result.startswith("refused") for result in probes.values()), probes


# --- files given back exactly (items 12 and 13) -------------------------------------------------


def test_uninstall_keeps_secrets_private_and_gives_back_each_files_mode_and_owner(target):
    root, credentials, config = target
    existing = root / "etc/ssh-auth/ssh-auth.conf"
    existing.parent.mkdir(parents=True)
    existing.write_text("# the admin's own\npublic_url = https://old.example.com\n")
    os.chown(existing, 1, 4)  # daemon:adm, mode 0600: nothing install would choose
    existing.chmod(0o600)
    original = existing.read_bytes()
    assert install(root, credentials, config).returncode == 0
    uid, gid = service_ids(root)
    result = ssh_auth("uninstall", "--root", str(root))
    assert result.returncode == 0, result.stderr
    (backup,) = (root / "var/backups").iterdir()
    assert f"backup of the removed files: {backup}\n" in result.stdout
    assert backup.stat().st_mode & 0o777 == 0o700
    assert ownership(backup / "etc/ssh-auth/tru.json") == (0o600, uid, gid)
    assert ownership(backup / "etc/ssh-auth/ssh-auth.conf") == (0o640, 0, gid)
    assert existing.read_bytes() == original
    assert ownership(existing) == (0o600, 1, 4)


def test_uninstall_reads_an_old_manifest_and_never_widens_a_files_mode(target):
    root, credentials, config = target
    existing = root / "etc/ssh-auth/ssh-auth.conf"
    existing.parent.mkdir(parents=True)
    existing.write_text("public_url = https://old.example.com\n")
    existing.chmod(0o600)
    original = existing.read_bytes()
    assert install(root, credentials, config).returncode == 0
    _, gid = service_ids(root)
    manifest = root / "var/lib/ssh-auth/install.json"
    recorded = json.loads(manifest.read_text())
    recorded["files"] = {  # as the first release wrote it: only the bytes
        path: None if prior is None else prior if isinstance(prior, str) else prior["data"]
        for path, prior in recorded["files"].items()
    }
    recorded["files"]["etc/ssh-auth/ssh-auth.conf"] = base64.b64encode(original).decode()
    manifest.write_text(json.dumps(recorded))
    result = ssh_auth("uninstall", "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert existing.read_bytes() == original
    assert ownership(existing) == (0o640, 0, gid)  # as install left it: no mode was recorded


def test_a_failed_reinstall_restores_owner_group_and_mode_exactly(target, tmp_path):
    root, credentials, config = target
    assert install(root, credentials, config).returncode == 0
    installed = {
        path: ownership(root / path) for path in ("etc/ssh-auth/ssh-auth.conf", "etc/ssh-auth/tru.json")
    }
    contents = {path: (root / path).read_bytes() for path in installed}
    config.write_text(config.read_text() + "ttl = 90\n")
    other = tmp_path / "other-tru.json"
    other.write_text(credentials.read_text().replace('"s"', '"s2"'))
    other.chmod(0o600)
    prepend(root / "etc/ssh/sshd_config", "ForceCommand /bin/other\n")
    result = install(root, other, config)
    assert result.returncode == 1
    assert "restored every file to what it was before" in result.stdout
    assert {path: ownership(root / path) for path in installed} == installed
    assert {path: (root / path).read_bytes() for path in installed} == contents


# --- the shim's interpreter and the unit (items 14 and 20) --------------------------------------

PYTHON_38 = "#!/bin/sh\necho 'Python 3.8.10'\n"  # answers like Debian 10's or Ubuntu 20.04's


def test_install_refuses_a_system_python_older_than_3_9(target):
    root, credentials, config = target
    stand_in = root / "usr/bin/python3"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text(PYTHON_38)
    stand_in.chmod(0o755)
    before = snapshot(root)
    result = install(root, credentials, config)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"ssh-auth: {stand_in} is Python 3.8; the shim needs 3.9 or later "
        "(Debian 11+, Ubuntu 22.04+, RHEL 9+)\n",
    )
    assert snapshot(root) == before


HARDENING = (
    "UMask=0077",
    "ProtectHome=yes",
    "SystemCallFilter=@system-service",
    "RestrictSUIDSGID=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectKernelLogs=yes",
)


def test_the_installed_unit_is_hardened_and_systemd_analyze_verify_accepts_it(target, tmp_path):
    root, credentials, config = target
    assert install(root, credentials, config).returncode == 0
    unit = root / "etc/systemd/system/ssh-auth.service"
    lines = unit.read_text().splitlines()
    assert [line for line in HARDENING if line not in lines] == []
    assert [line for line in lines if line.startswith(("ProtectProc=", "ProcSubset="))] == []
    assert "ProtectHome=read-only" not in lines
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")
    broken = tmp_path / "ssh-auth.service"  # and the check would catch a broken unit
    broken.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=sometimes"))
    caught = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True)
    assert "Failed to parse protect home value, ignoring: sometimes" in caught.stderr


def test_install_admin_registers_the_administrator_it_names(target):
    root, credentials, _ = target
    result = ssh_auth(
        "install",
        "--root",
        str(root),
        "--credentials",
        str(credentials),
        "--public-url",
        "https://ssh.example.com",
        "--admin",
        "root:+44 7700 900123",
    )
    assert result.returncode == 0, result.stderr
    assert "user=root:447700900123\n" in (root / "etc/ssh-auth/ssh-auth.conf").read_text()
    refused = ssh_auth("install", "--root", str(root), "--admin", "nosuchuser:+447700900123")
    assert (refused.returncode, refused.stderr) == (
        1,
        "ssh-auth: --admin: no such user on this machine: nosuchuser\n",
    )
