"""Install proves sshd's effective configuration for every login that matters, or refuses."""

import ipaddress
import os
import shutil
import subprocess

import pytest

from harness.accounts import client_key, ensure_user
from harness.processes import run
from harness.server_root import (
    accounts_aside,
    add_admin,
    append,
    changed,
    install,
    installed_sshd,
    prepend,
    snapshot,
    ssh_auth,
    sshd_T,
)

FORCED = (
    "/usr/bin/python3 -I -S /usr/local/lib/ssh-auth/shim.pyz create-check "
    "--socket /run/ssh-auth/ssh-auth.sock"
)
BYPASS_ADVICE = (
    " (sshd takes a keyword's first value, and a Match block's over the global one; "
    "change your sshd configuration and install again)\n"
)


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
    exempt = install(root, credentials, config, "--exempt-network", "127.0.0.2/32", "--force")
    assert exempt.returncode == 0, exempt.stderr
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
    assert "forced-command (config) '/usr/bin/python3 -I -S /usr/local/lib/ssh-auth/shim.pyz" in log
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
    result = install(root, credentials, config, *exempt, "--force")  # some take in this server
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


SINCE = [
    ("forcecommand", "Match User sa-x\n    PermitTunnel yes\n", "PermitTunnel is yes"),
    (
        "pam",
        "Match User sa-x\n    AuthenticationMethods publickey\n",
        "AuthenticationMethods is publickey",
    ),
]


@pytest.mark.parametrize("mode, block, bypass", SINCE, ids=[row[0] for row in SINCE])
def test_a_bypassing_match_block_added_since_refuses_an_install_with_nothing_to_change(
    target, matrix, mode, block, bypass
):
    root, credentials, config = target
    first = install(root, credentials, config, "--mode", mode, "--force")
    assert first.returncode == 0, first.stderr
    append(root / "etc/ssh/sshd_config", block)
    before = snapshot(root)
    again = install(root, credentials, config, "--mode", mode, "--force")
    expected = (
        "ssh-auth: refusing to install: Match User sa-x (/etc/ssh/sshd_config line 6) would bypass "
        f"the phone check: {bypass}" + BYPASS_ADVICE
    )
    matrix(
        f"install --mode {mode} again over a Match block added since",
        expected.strip(),
        again.stderr.strip(),
    )
    assert (again.returncode, again.stderr) == (1, expected)
    assert "already installed" not in again.stdout
    assert snapshot(root) == before


# --- exempt networks that take in the server itself (review 3) ---------------------------------

OWN = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()[0]
SELF_EXEMPT = [
    ("loopback", "127.0.0.0/8", "loopback (127.0.0.0/8)"),
    ("one loopback address", "127.0.0.2/32", "loopback (127.0.0.0/8)"),
    ("IPv6 loopback", "::1", "loopback (::1/128)"),
    ("every IPv4 address", "0.0.0.0/0", "loopback (127.0.0.0/8)"),
    ("this server's own address", OWN, f"this server's own address {OWN}"),
]


@pytest.mark.parametrize("case, network, what", SELF_EXEMPT, ids=[row[0] for row in SELF_EXEMPT])
def test_an_exempt_network_taking_in_this_server_is_refused_unless_forced(
    target, matrix, case, network, what
):
    root, credentials, config = target
    before = snapshot(root)
    refused = install(root, credentials, config, "--exempt-network", network)
    shown = str(ipaddress.ip_network(network, strict=False))
    expected = (
        f"ssh-auth: refusing to install: the exempt network {shown} takes in {what}: anyone who "
        "gets onto this server (a local user, a forwarded port, a jump through it) would log in "
        "there without the phone. Leave it out, or pass --force.\n"
    )
    matrix(f"install --exempt-network {case}", expected.strip(), refused.stderr.strip())
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", expected)
    assert snapshot(root) == before
    forced = install(root, credentials, config, "--exempt-network", network, "--force")
    assert forced.returncode == 0, forced.stderr


# --- Match blocks install cannot prove (review 3) -------------------------------------------------


def no_member_group(root) -> None:
    """A group of the root's with no member, named in a Match block."""
    append(root / "etc/group", "sa-nomember:x:4999:\n")
    append(
        root / "etc/ssh/sshd_config", "Match Group sa-nomember\n    AuthenticationMethods publickey\n"
    )


@pytest.mark.parametrize("mode", ["forcecommand", "pam"])
def test_a_match_block_install_cannot_prove_is_refused_unless_forced(target, matrix, mode):
    root, credentials, config = target
    add_admin(
        root,
        "sa-padmin",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPx6sYc6Ym7p1dGzJ9wq0X2vV5p3n6X4h1q2r3s4t5u6\n",
    )
    config.write_text(config.read_text() + "user=sa-padmin:447700900125\n")
    no_member_group(root)
    before = snapshot(root)
    refused = install(root, credentials, config, "--mode", mode)
    unproven = (
        "Match Group sa-nomember (/etc/ssh/sshd_config line 6): no member of group sa-nomember in "
        "/etc/group to prove it with"
    )
    expected = (
        f"ssh-auth: refusing to install: {unproven}, so what sshd gives such a login cannot be "
        "proven (change the Match line, or pass --force to install without that proof)\n"
    )
    matrix(
        f"install --mode {mode} over a Match Group with no member",
        expected.strip(),
        refused.stderr.strip(),
    )
    assert (refused.returncode, refused.stderr) == (1, expected)
    assert "restored every file to what it was before" in refused.stdout
    assert accounts_aside(root, snapshot(root)) == accounts_aside(root, before)
    forced = install(root, credentials, config, "--mode", mode, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"note: {unproven}; not proven (--force)\n" in forced.stdout
