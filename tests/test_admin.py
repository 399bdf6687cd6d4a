"""Administration against a temporary root: install, uninstall, migration, users, real sshd -t/-T."""

import base64
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.accounts import client_key, ensure_user
from harness.emulator import VENV_BIN
from harness.people import PhoneHolder
from harness.processes import free_port, run, send_through
from harness.server_root import (
    accounts_aside,
    changed,
    install,
    installed_sshd,
    ownership,
    service_ids,
    snapshot,
    ssh_auth,
    sshd_T,
)
from webserver.admin.install import Installer, InstallOptions
from webserver.admin.sshd import Sshd
from webserver.errors import InstallError

TUTORIAL_FORCE = "ForceCommand /usr/local/bin/tru-id-ssh-auth/ssh-auth create-check\n"
FORCED = (
    "/usr/bin/python3 -I /usr/local/lib/ssh-auth/shim.pyz create-check "
    "--socket /run/ssh-auth/ssh-auth.sock"
)
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
        "/usr/bin/python3 -I /usr/local/lib/ssh-auth/shim.pyz create-check "
        "--socket /run/ssh-auth/ssh-auth.sock"
    )
    assert sshd.effective("192.0.2.1")["disableforwarding"] == "yes"
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
    assert install(root, credentials, config, "--exempt-network", "127.0.0.2/32").returncode == 0
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
        "forced-command (config) '/usr/bin/python3 -I /usr/local/lib/ssh-auth/shim.pyz create-check"
    ) in log
    assert exempt.stdout == "ran\n"
    assert stdio.returncode != 0 and "stdio forwarding failed" in stdio.stderr
    assert remote.returncode != 0 and "forwarding failed" in remote.stderr
    assert all(result.startswith("refused") for result in probes.values()), probes


# --- the effective configuration, proven (issue 11, items 2 and 3) -----------------------------

# The review's sshd_config: no Include of sshd_config.d, no HostKey (sshd's default keys).
NO_INCLUDE = "PasswordAuthentication no\nPermitRootLogin no\nAllowUsers {allowed}\n"
MATCH_BLOCK_AT_THE_END = (
    "# BEGIN ssh-auth Match blocks (written by `ssh-auth install`, last: a Match runs to the "
    "end of the file)\n"
    "\n"
    "# Logins from these networks skip the phone check (decided by sshd, not by what a client "
    "says).\n"
    "Match Address 10.0.0.0/8\n"
    "    ForceCommand none\n"
    "# END ssh-auth\n"
)


def test_an_exempt_network_without_an_include_swallows_none_of_the_admins_settings(
    target, default_host_keys
):
    root, credentials, config = target
    sshd_config = root / "etc/ssh/sshd_config"
    sshd_config.write_text(NO_INCLUDE.format(allowed="admin"))
    before = snapshot(root)
    logins = {
        "gated": "user=nobody,host=client.example,addr=192.0.2.10",
        "exempt": "user=nobody,host=client.example,addr=10.1.2.3",
    }
    admins = {name: sshd_T(root, spec) for name, spec in logins.items()}
    result = install(root, credentials, config, "--exempt-network", "10.0.0.0/8")
    assert result.returncode == 0, result.stderr
    ours = {
        "disableforwarding": ("no", "yes"),
        "permituserrc": ("yes", "no"),
    }  # (PermitTunnel and PermitUserEnvironment are off by default)
    assert changed(admins["gated"], sshd_T(root, logins["gated"])) == ours | {
        "forcecommand": ("none", FORCED)
    }
    assert changed(admins["exempt"], sshd_T(root, logins["exempt"])) == ours
    text = sshd_config.read_text()
    assert text.startswith("# BEGIN ssh-auth (written by `ssh-auth install`")
    assert text.endswith("AllowUsers admin\n" + MATCH_BLOCK_AT_THE_END)
    assert ssh_auth("uninstall", "--root", str(root)).returncode == 0
    assert snapshot(root) == before


def test_without_an_include_logins_from_other_addresses_still_meet_allowusers(
    target, tmp_path, default_host_keys, matrix
):
    root, credentials, config = target
    (root / "etc/ssh/sshd_config").write_text(NO_INCLUDE.format(allowed="sa-bob"))
    assert install(root, credentials, config, "--exempt-network", "127.0.0.2/32").returncode == 0
    for user in ("sa-alice", "sa-bob"):
        ensure_user(user, client_key().with_suffix(".pub").read_text())
    with installed_sshd(root, tmp_path) as server:
        not_listed = server.ssh("sa-alice@127.0.0.1", "echo ran")
        gated = server.ssh("sa-bob@127.0.0.1", "echo ran")
        exempt = server.ssh("-o", "BindAddress=127.0.0.2", "sa-bob@127.0.0.1", "echo ran")
        log = server.log()
    denied = "sa-alice@127.0.0.1: Permission denied (publickey,keyboard-interactive)."
    matrix(
        "install --exempt-network, no Include: a user AllowUsers leaves out, from elsewhere",
        denied,
        not_listed.stderr.strip(),
    )
    assert (not_listed.returncode, not_listed.stdout, not_listed.stderr) == (255, "", denied + "\n")
    assert "User sa-alice from 127.0.0.1 not allowed because not listed in AllowUsers" in log
    assert gated.stdout == "" and gated.returncode != 0
    assert "forced-command (config) '/usr/bin/python3 -I /usr/local/lib/ssh-auth/shim.pyz" in log
    assert (exempt.returncode, exempt.stdout) == (0, "ran\n")


NO_PROBE_LEFT = (
    "ssh-auth: refusing to install: the exempt networks ({}) leave no address to prove the phone "
    "check from (tried 192.0.2.10, 198.51.100.10, 203.0.113.10, 2001:db8::10)\n"
)


@pytest.mark.parametrize(
    "networks, status, stderr, gated",
    [
        (["192.0.2.0/24"], 0, "", "198.51.100.10"),
        (["0.0.0.0/0"], 0, "", "2001:db8::10"),
        (["0.0.0.0/0", "::/0"], 1, NO_PROBE_LEFT.format("0.0.0.0/0, ::/0"), None),
    ],
    ids=["probe network exempt", "all of IPv4 exempt", "every address exempt"],
)
def test_install_proves_the_check_from_an_address_outside_every_exempt_network(
    target, networks, status, stderr, gated
):
    root, credentials, config = target
    before = snapshot(root)
    exempt = [arg for network in networks for arg in ("--exempt-network", network)]
    result = install(root, credentials, config, *exempt)
    assert (result.returncode, result.stderr) == (status, stderr)
    if gated:
        spec = f"user=nobody,host=client.example,addr={gated}"
        assert sshd_T(root, spec)["forcecommand"] == FORCED
    else:
        assert accounts_aside(root, snapshot(root)) == accounts_aside(root, before)


BYPASSES = [
    (
        "Match User backup with its own ForceCommand, even with --force",
        lambda root: append(
            root / "etc/ssh/sshd_config", "Match User backup\n    ForceCommand internal-sftp\n"
        ),
        ("--force",),
        "Match User backup (/etc/ssh/sshd_config line 6) would bypass the phone check: "
        "ForceCommand is 'internal-sftp'",
    ),
    (
        "Include after three settings (sshd takes the first value)",
        lambda root: prepend(
            root / "etc/ssh/sshd_config",
            "PermitUserEnvironment yes\nPermitTunnel yes\nPermitUserRC yes\n",
        ),
        (),
        "a login as nobody from 192.0.2.10 would bypass the phone check: PermitTunnel is yes, "
        "PermitUserRC is yes, PermitUserEnvironment is yes",
    ),
    (
        "Match Address with forwarding",
        lambda root: append(
            root / "etc/ssh/sshd_config", "Match Address 203.0.113.0/24\n    DisableForwarding no\n"
        ),
        (),
        "Match Address 203.0.113.0/24 (/etc/ssh/sshd_config line 6) would bypass the phone "
        "check: DisableForwarding is no",
    ),
    (
        "Match Host with user rc",
        lambda root: append(
            root / "etc/ssh/sshd_config", "Match Host *.corp.example\n    PermitUserRC yes\n"
        ),
        (),
        "Match Host *.corp.example (/etc/ssh/sshd_config line 6) would bypass the phone check: "
        "PermitUserRC is yes",
    ),
    (
        "Match LocalPort with a shell",
        lambda root: append(
            root / "etc/ssh/sshd_config", "Match LocalPort 2222\n    ForceCommand /bin/sh\n"
        ),
        (),
        "Match LocalPort 2222 (/etc/ssh/sshd_config line 6) would bypass the phone check: "
        "ForceCommand is '/bin/sh'",
    ),
    (
        "Match in another drop-in",
        lambda root: (root / "etc/ssh/sshd_config.d/10-backup.conf").write_text(
            "Match User backup\n    PermitTunnel yes\n"
        ),
        (),
        "Match User backup (/etc/ssh/sshd_config.d/10-backup.conf line 1) would bypass the phone "
        "check: PermitTunnel is yes",
    ),
]


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def prepend(path: Path, text: str) -> None:
    path.write_text(text + path.read_text())


@pytest.mark.parametrize("case, breaks, extra, refusal", BYPASSES, ids=[row[0] for row in BYPASSES])
def test_an_admin_setting_that_bypasses_the_check_refuses_the_install(
    target, matrix, case, breaks, extra, refusal
):
    root, credentials, config = target
    breaks(root)
    before = snapshot(root)
    result = install(root, credentials, config, *extra)
    expected = "ssh-auth: refusing to install: " + refusal + BYPASS_ADVICE
    matrix(f"install over {case}", expected.strip(), result.stderr.strip())
    assert (result.returncode, result.stderr) == (1, expected)
    assert "restored every file to what it was before" in result.stdout
    assert accounts_aside(root, snapshot(root)) == accounts_aside(root, before)


def test_a_match_group_is_proven_with_a_member_of_that_group(target):
    root, credentials, config = target
    group, member = f"sa-sftp{os.getpid() % 10000}", f"sa-sftpu{os.getpid() % 10000}"
    run("groupadd", group)
    try:
        run("useradd", "--no-create-home", "--no-user-group", "--groups", group, member)
        for name in ("passwd", "group"):  # the root's account files as the host now has them
            shutil.copy2(f"/etc/{name}", root / "etc" / name)
        append(root / "etc/ssh/sshd_config", f"Match Group {group}\n    PermitTunnel yes\n")
        result = install(root, credentials, config)
    finally:
        subprocess.run(["userdel", member], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)
    assert (result.returncode, result.stderr) == (
        1,
        f"ssh-auth: refusing to install: Match Group {group} (/etc/ssh/sshd_config line 6) "
        "would bypass the phone check: PermitTunnel is yes" + BYPASS_ADVICE,
    )


def test_allow_forwarding_accepts_forwarding_in_a_match_block_and_nothing_else(target):
    root, credentials, config = target
    append(root / "etc/ssh/sshd_config", "Match Address 203.0.113.0/24\n    DisableForwarding no\n")
    refused = install(root, credentials, config)
    assert refused.returncode == 1 and "DisableForwarding is no" in refused.stderr
    allowed = install(root, credentials, config, "--allow-forwarding")
    assert allowed.returncode == 0, allowed.stderr


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
