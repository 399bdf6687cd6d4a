"""`ssh-auth doctor` against a running gate: all ✔ when healthy, then each check broken in turn."""

import json
import os
import shutil
import subprocess
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.pam_gate import PAM_BUILD
from harness.processes import free_port
from harness.server_root import install, prepend, service_ids, ssh_auth
from webserver.admin.dropin import render_dropin


@pytest.fixture
def setup(gate, target, tmp_path):  # noqa: F811
    """The gate's config, and a root where it is installed (so sshd -T sees the drop-in)."""
    root, credentials, _ = target
    config = tmp_path / "ssh-auth.conf"
    config.write_text(gate.config.read_text() + "user=root:447700900129\n")
    assert install(root, credentials, config).returncode == 0
    os.chown(config, 0, service_ids(root)[1])  # root:ssh-auth 0640, as install writes it
    config.chmod(0o640)
    return gate, root, config


def doctor(config, root) -> tuple[int, str]:
    result = ssh_auth("doctor", "--config", str(config), "--root", str(root))
    return result.returncode, result.stdout


def replace_setting(config: Path, key: str, value: str) -> None:
    lines = [line for line in config.read_text().splitlines() if not line.startswith(key + " ")]
    config.write_text("\n".join([f"{key} = {value}", *lines]) + "\n")


def test_a_healthy_installation_is_all_ticks(setup):
    gate, root, config = setup
    status, out = doctor(config, root)
    assert status == 0, out
    assert "✗" not in out
    for line in (
        "✔ configuration",
        "✔ credentials",
        "✔ an access token was obtained",
        "✔ the API's signing keys (JWKS) are reachable",
        "✔ clock within",
        "✔ the webhook answers at",
        "✔ the service answers on",
        "✔ sshd runs the phone check for every login (sshd -T)",
        "✔ a login as nobody from 192.0.2.10: the phone check, with no forwarding, tunnel, user rc "
        "or environment",
        "✔ a login as nobody from 2001:db8::10: the phone check, with no forwarding, tunnel, user "
        "rc or environment",
        "registered user(s), all exist",
        f"✔ /usr/bin/python3 is Python {PYTHON} (the shim needs 3.9 or later)",
        "✔ sshd accepts no environment variables from the client beyond LANG, LC_*, COLORTERM "
        "and NO_COLOR (AcceptEnv)",
        f"✔ the configuration {config} is readable by the service and no one else (root:ssh-auth 0640)",
    ):
        assert line in out, out
    assert "⚠ sa-alice's .bashrc" in out and "run before the phone check" in out


def test_forwarding_turned_off_by_its_own_keywords_is_all_ticks_as_install_judges_it(setup):
    gate, root, config = setup
    again = ssh_auth("install", "--root", str(root), "--config", str(config), "--allow-forwarding")
    assert again.returncode == 0, again.stderr
    prepend(root / "etc/ssh/sshd_config", "AllowTcpForwarding no\nAllowStreamLocalForwarding no\n")
    status, out = doctor(config, root)
    assert status == 0, out
    assert "✗" not in out
    assert (
        "✔ a login as nobody from 192.0.2.10: the phone check, with no forwarding, tunnel, user rc "
        "or environment"
    ) in out.splitlines(), out


PYTHON = subprocess.run(
    ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    capture_output=True,
    text=True,
).stdout.strip()


class SkewedAPI(BaseHTTPRequestHandler):
    """An API whose clock is an hour ahead (and that knows nothing else)."""

    def date_time_string(self, timestamp=None):
        return formatdate(__import__("time").time() + 3600, usegmt=True)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET

    def log_message(self, *args):
        pass


def break_clock(gate, root, config):
    server = ThreadingHTTPServer(("127.0.0.1", 0), SkewedAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    replace_setting(config, "api_base_url", f"http://127.0.0.1:{server.server_port}")


def break_credentials_mode(gate, root, config):
    copy = config.parent / "open-tru.json"
    shutil.copy(gate.root / "etc" / "tru.json", copy)
    copy.chmod(0o644)
    replace_setting(config, "credentials", str(copy))


def break_secret(gate, root, config):
    wrong = config.parent / "wrong-tru.json"
    body = json.loads((gate.root / "etc" / "tru.json").read_text())
    body["credentials"][0]["client_secret"] = "wrong"
    wrong.write_text(json.dumps(body))
    wrong.chmod(0o600)
    replace_setting(config, "credentials", str(wrong))


BROKEN = [
    (
        "configuration",
        lambda g, r, c: c.write_text(c.read_text() + "colour = blue\n"),
        "✗ configuration:",
        "unknown setting 'colour' — fix: correct the line it names",
    ),
    (
        "registry missing",
        lambda g, r, c: c.unlink(),
        "✗ configuration:",
        "— fix: restore the file or run ssh-auth install: without its registry the service "
        "denies every login",
    ),
    (
        "credentials readable by others",
        break_credentials_mode,
        "✗ credentials",
        "are readable by other users (mode 0644) — fix: chmod 600",
    ),
    (
        "token refused",
        break_secret,
        "✗ no access token:",
        "HTTP 401: invalid client credentials — fix: check client_id",
    ),
    (
        "JWKS down",
        lambda g, r, c: g.emulator.fault("jwks", "status", status=503, count=4),
        "✗ JWKS unreachable:",
        "— fix: allow HTTPS to the API from this server",
    ),
    (
        "clock skew",
        break_clock,
        "✗ clock is -3",
        "s off the API's (signed redirects allow 300 s) — fix: enable time sync",
    ),
    (
        "webhook unreachable",
        lambda g, r, c: replace_setting(c, "public_url", f"http://127.0.0.1:{free_port()}"),
        "✗ the webhook does not answer at",
        "— fix: start the service and check public_url",
    ),
    (
        "socket not answering",
        lambda g, r, c: replace_setting(c, "socket", "/tmp/sa-none.sock"),
        "✗ the service socket /tmp/sa-none.sock does not answer",
        "— fix: systemctl enable --now ssh-auth",
    ),
    (
        "drop-in missing",
        lambda g, r, c: ssh_auth("uninstall", "--root", str(r)),
        "✗ a login as nobody from 192.0.2.10 bypasses the phone check: ForceCommand is 'none'",
        "— fix: ssh-auth install, then reload sshd",
    ),
    (
        "forwarding allowed",
        lambda g, r, c: ssh_auth("install", "--root", str(r), "--config", str(c), "--allow-forwarding"),
        "✗ a login as nobody from 192.0.2.10 bypasses the phone check: DisableForwarding is no",
        "— fix: ssh-auth install, then reload sshd",
    ),
    (
        "registered user missing",
        lambda g, r, c: c.write_text(c.read_text() + "user=sa-nosuchuser:447700900131\n"),
        "✗ registered but not on this machine: sa-nosuchuser",
        "— fix: ssh-auth unregister-user NAME",
    ),
    (
        "balance low",
        lambda g, r, c: (g.socket.parent / "balance").write_text("5\n"),
        "✗ balance low: 5 left after the last check",
        "— fix: top up the account in the console",
    ),
]


@pytest.mark.parametrize("case, breaks, line, fix", BROKEN, ids=[row[0] for row in BROKEN])
def test_each_broken_check_says_what_to_fix(setup, case, breaks, line, fix):
    gate, root, config = setup
    try:
        breaks(gate, root, config)
        status, out = doctor(config, root)
    finally:
        (gate.socket.parent / "balance").unlink(missing_ok=True)
    assert status == 1, out
    found = [text for text in out.splitlines() if text.startswith(line)]
    assert found and fix in found[0], out


# --- the whole sshd configuration, the interpreter and the registry's access (issue 11) -------

BYPASS_FIX = (
    " — fix: change your sshd configuration (sshd takes a keyword's first value, and a Match "
    "block's over the global one)"
)


def old_layout(gate, root, config):
    """What the first release wrote without an Include: its Match block swallowing the rest."""
    (root / "etc/ssh/sshd_config.d/ssh-auth.conf").unlink()
    (root / "etc/ssh/sshd_config").write_text(  # no HostKey or UsePAM: not allowed in a Match
        "# BEGIN ssh-auth (written by `ssh-auth install`; `ssh-auth uninstall` removes it)\n"
        + render_dropin(socket=str(gate.socket), exempt_networks=("10.0.0.0/8",))
        + "# END ssh-auth\n"
        + "PasswordAuthentication no\nPermitRootLogin no\n"
    )


def old_python(gate, root, config):
    stand_in = root / "usr/bin/python3"
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text("#!/bin/sh\necho 'Python 3.8.10'\n")
    stand_in.chmod(0o755)


SSHD_CONFIG = "etc/ssh/sshd_config"
WHOLE = [
    (
        "Match User backup with its own ForceCommand",
        lambda g, r, c: (r / SSHD_CONFIG).write_text(
            (r / SSHD_CONFIG).read_text() + "Match User backup\n    ForceCommand internal-sftp\n"
        ),
        "✗ Match User backup (/etc/ssh/sshd_config line 6) bypasses the phone check: "
        "ForceCommand is 'internal-sftp'" + BYPASS_FIX,
    ),
    (
        "first release's layout swallows the admin's settings",
        old_layout,
        "✗ for a login as nobody from 192.0.2.10, ssh-auth's lines change settings of yours: "
        "passwordauthentication from no to yes, permitrootlogin from no to without-password "
        "— fix: ssh-auth install (it writes its Match block last, where it swallows nothing)",
    ),
    (
        "AcceptEnv broader than LANG LC_*",
        lambda g, r, c: (r / SSHD_CONFIG).write_text(
            (r / SSHD_CONFIG).read_text() + "AcceptEnv LANG LC_* COLORTERM NO_COLOR ZDOTDIR *PRELOAD\n"
        ),
        "✗ sshd accepts ZDOTDIR *PRELOAD from the client (AcceptEnv) for a login as nobody from "
        "192.0.2.10: they reach the user's login shell before the phone check (ZDOTDIR, "
        "LD_PRELOAD...) — fix: AcceptEnv LANG LC_* only (COLORTERM and NO_COLOR are fine too)",
    ),
    (
        "registry unreadable by the service",
        lambda g, r, c: (os.chown(c, 0, 0), c.chmod(0o600)),
        "✗ the configuration {config} is not readable by the service (root:root 0600): a registry "
        "it cannot read denies every login — fix: chown root:ssh-auth {config} && "
        "chmod 0640 {config}",
    ),
    (
        "registry readable by everyone",
        lambda g, r, c: c.chmod(0o644),
        "✗ the configuration {config} is readable by every user (root:ssh-auth 0644): it holds the "
        "phone numbers — fix: chown root:ssh-auth {config} && chmod 0640 {config}",
    ),
    (
        "Match Group with no member to prove it with",
        lambda g, r, c: (
            (r / "etc/group").write_text((r / "etc/group").read_text() + "sa-nomember:x:4999:\n"),
            (r / SSHD_CONFIG).write_text(
                (r / SSHD_CONFIG).read_text() + "Match Group sa-nomember\n    ForceCommand none\n"
            ),
        ),
        "✗ Match Group sa-nomember (/etc/ssh/sshd_config line 6): no member of group sa-nomember in "
        "/etc/group to prove it with, so what sshd gives such a login is not proven — fix: change "
        "the Match line (a group needs a member to prove it with)",
    ),
    (
        "system Python 3.8",
        old_python,
        "✗ {root}/usr/bin/python3 is Python 3.8; the shim needs 3.9 or later (Debian 11+, "
        "Ubuntu 22.04+, RHEL 9+) — fix: install Python 3.9 or later as /usr/bin/python3 (the "
        "shim runs under the system Python)",
    ),
]


@pytest.mark.usefixtures("default_host_keys")
@pytest.mark.parametrize("case, breaks, line", WHOLE, ids=[row[0] for row in WHOLE])
def test_doctor_proves_the_whole_configuration_in_one_line_per_failure(setup, case, breaks, line):
    gate, root, config = setup
    breaks(gate, root, config)
    status, out = doctor(config, root)
    assert status == 1, out
    expected = line.format(root=root, config=config)
    assert expected in out.splitlines(), out


# --- auth-time (PAM) mode (issue 14) -------------------------------------------------------------


@pytest.fixture
def pam_setup(gate, target, tmp_path, pam_module):
    """The gate's config, and a root where auth-time mode is installed."""
    root, credentials, _ = target
    config = tmp_path / "ssh-auth.conf"
    config.write_text(gate.config.read_text() + "user=root:447700900129\n")
    result = install(
        root, credentials, config, "--mode", "pam", "--pam-module", str(PAM_BUILD), "--force"
    )
    assert result.returncode == 0, result.stderr
    os.chown(config, 0, service_ids(root)[1])
    config.chmod(0o640)
    (unix,) = root.rglob("pam_unix.so")
    return gate, root, config, "/" + str(unix.parent.relative_to(root) / "pam_ssh_auth.so")


def test_a_healthy_pam_installation_is_all_ticks(pam_setup):
    gate, root, config, module = pam_setup
    status, out = doctor(config, root)
    assert status == 0, out
    assert "✗" not in out
    for line in (
        "✔ sshd asks every login for a key, then the phone (UsePAM yes, "
        "KbdInteractiveAuthentication yes, AuthenticationMethods publickey,keyboard-interactive:pam)",
        "✔ a login as nobody from 192.0.2.10: a key, then the phone check",
        "✔ LoginGraceTime 180 s leaves time for a check of ttl 120 s",
        "✔ the PAM stack /etc/pam.d/sshd runs ssh-auth's module alone: auth required "
        f"pam_ssh_auth.so socket={gate.socket} timeout=150",
        f"✔ the PAM module {module}: root 0644",
        "✔ OpenSSH 9.2: no PAMServiceName before 9.8, so ssh-auth edits /etc/pam.d/sshd; before "
        "10.3 the person presses Enter after approving on the phone",
        "✔ pam_root = deny fits sshd's PermitRootLogin prohibit-password",
    ):
        assert line in out.splitlines(), out
    for forcecommand_only in ("shim needs", "AcceptEnv", "run before the phone check"):
        assert forcecommand_only not in out


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


INSTALL_FIX = " — fix: ssh-auth install --mode pam, then reload sshd"
STACK_FIX = " — fix: ssh-auth install --mode pam (it comments out every other auth line)"
PAM_BROKEN = [
    (
        "module missing",
        lambda r, c, m: (r / m.lstrip("/")).unlink(),
        "✗ the PAM module {module} is missing: sshd denies every login" + INSTALL_FIX,
    ),
    (
        "module group-writable",
        lambda r, c, m: (r / m.lstrip("/")).chmod(0o664),
        "✗ the PAM module {module} is 0:0 0664: sshd loads it as root — fix: chown root:root "
        "{module} && chmod 0644 {module}",
    ),
    (
        "module replaced by something else",
        lambda r, c, m: (r / m.lstrip("/")).write_bytes(b"#!/bin/sh\n"),
        "✗ the PAM module {module}: not an ELF shared object (build it with `make pam`, or leave "
        "--pam-module out)" + INSTALL_FIX,
    ),
    (
        "another auth line added to the stack",
        lambda r, c, m: (r / "etc/pam.d/sshd").write_text(
            (r / "etc/pam.d/sshd").read_text() + "auth sufficient pam_permit.so\n"
        ),
        "✗ the PAM stack /etc/pam.d/sshd would still run other auth lines, which could let a "
        "login in without the phone: auth sufficient pam_permit.so" + STACK_FIX,
    ),
    (
        "common-auth included again",
        lambda r, c, m: replace_in(
            r / "etc/pam.d/sshd", "#ssh-auth# @include common-auth", "@include common-auth"
        ),
        "✗ the PAM stack /etc/pam.d/sshd would still run other auth lines, which could let a "
        "login in without the phone: @include common-auth: auth [success=1 default=ignore] "
        "pam_unix.so nullok; @include common-auth: auth requisite pam_deny.so; @include "
        "common-auth: auth required pam_permit.so; @include common-auth: auth optional pam_cap.so"
        + STACK_FIX,
    ),
    (
        "our line gone",
        lambda r, c, m: replace_in(r / "etc/pam.d/sshd", "auth required pam_ssh_auth.so", "#"),
        "✗ the PAM stack /etc/pam.d/sshd has no line for ssh-auth's module" + STACK_FIX,
    ),
    (
        "a stray backslash joins our line to the one above",
        lambda r, c, m: prepend(r / "etc/pam.d/sshd", "account required pam_nologin.so \\\n"),
        "✗ /etc/pam.d/sshd line 1 ends in a backslash, so libpam reads the next line as part of it "
        "— fix: make each line of the PAM stack whole and include only files that are there, then "
        "ssh-auth install --mode pam",
    ),
    (
        "our module replaced by one that lets everyone in",
        lambda r, c, m: shutil.copyfile(
            os.path.realpath("/lib/x86_64-linux-gnu/security/pam_permit.so"), r / m.lstrip("/")
        ),
        "✗ libpam, running a copy of /etc/pam.d/sshd, let a login in with ssh-auth's service "
        "answering deny: something other than ssh-auth's module decides" + INSTALL_FIX,
    ),
    (
        "sshd's unit starts it under another name",
        lambda r, c, m: (
            (r / "lib/systemd/system").mkdir(parents=True),
            (r / "lib/systemd/system/ssh.service").write_text(
                "[Service]\nExecStart=/usr/sbin/sshd-alt -D\n"
            ),
        ),
        "✗ the unit ssh.service starts sshd as sshd-alt (ExecStart=/usr/sbin/sshd-alt -D), and "
        "OpenSSH before 9.8 reads the PAM stack named after its program, /etc/pam.d/sshd-alt, not "
        "/etc/pam.d/sshd, which auth-time mode edits — fix: start sshd as sshd (or ssh-auth install "
        "--mode forcecommand)",
    ),
    (
        "pam_root = check under prohibit-password",
        lambda r, c, m: replace_setting(c, "pam_root", "check"),
        "✗ pam_root = check, but sshd's PermitRootLogin prohibit-password refuses "
        "keyboard-interactive for root: sshd would refuse root after the phone approved — fix: "
        "ssh-auth config set pam_root deny",
    ),
    (
        "pam_root = deny under PermitRootLogin yes",
        lambda r, c, m: prepend(r / "etc/ssh/sshd_config", "PermitRootLogin yes\n"),
        "✗ pam_root = deny, but sshd's PermitRootLogin is yes: the service refuses root at once "
        "— fix: ssh-auth config set pam_root check (or set PermitRootLogin prohibit-password)",
    ),
    (
        "LoginGraceTime too short",
        lambda r, c, m: prepend(r / "etc/ssh/sshd_config", "LoginGraceTime 60\n"),
        "✗ sshd's LoginGraceTime is 60 s, shorter than the phone check needs (180 s: the ttl of "
        "120 s + 60 s) — fix: set LoginGraceTime 180 (ssh-auth install --mode pam does)",
    ),
    (
        "Match User with a key alone",
        lambda r, c, m: (r / SSHD_CONFIG).write_text(
            (r / SSHD_CONFIG).read_text() + "Match User backup\n    AuthenticationMethods publickey\n"
        ),
        "✗ Match User backup (/etc/ssh/sshd_config line 6) bypasses the phone check: "
        "AuthenticationMethods is publickey" + BYPASS_FIX,
    ),
]


@pytest.mark.parametrize("case, breaks, line", PAM_BROKEN, ids=[row[0] for row in PAM_BROKEN])
def test_doctor_names_each_pam_problem_in_one_line(pam_setup, case, breaks, line):
    gate, root, config, module = pam_setup
    breaks(root, config, module)
    status, out = doctor(config, root)
    assert status == 1, out
    assert line.format(module=module) in out.splitlines(), out


def test_doctor_warns_of_an_exempt_network_that_takes_in_this_server(setup, target):
    gate, root, config = setup
    _, credentials, _ = target
    exempt = install(root, credentials, config, "--exempt-network", "127.0.0.2/32", "--force")
    assert exempt.returncode == 0, exempt.stderr
    status, out = doctor(config, root)
    assert (
        "⚠ the exempt network 127.0.0.2/32 takes in loopback (127.0.0.0/8): anyone who gets onto "
        "this server (a local user, a forwarded port, a jump through it) logs in there without the "
        "phone, and the service never sees those logins (sshd's log has them)"
    ) in out.splitlines(), out
