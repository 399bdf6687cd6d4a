"""Install, uninstall and the proof in auth-time (PAM) mode, against temporary roots: the drop-in,
sshd's PAM stack and the module, proven with the real sshd and given back byte for byte."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.emulator import VENV_BIN
from harness.pam_gate import PAM_BUILD
from harness.processes import ServerProcess, free_port
from harness.server_root import (
    accounts_aside,
    add_admin,
    append,
    changed,
    install,
    ownership,
    prepend,
    snapshot,
    ssh_auth,
    sshd_T,
)
from webserver.admin.proof import PAM_NEEDS, Context, Verdict

PLAIN = "user=nobody,host=client.example,addr=192.0.2.10"
METHODS = "publickey,keyboard-interactive:pam"
OUR_LINE = "auth required pam_ssh_auth.so socket=/run/ssh-auth/ssh-auth.sock timeout=150"
FORCED = (
    "/usr/bin/python3 -I -S /usr/local/lib/ssh-auth/shim.pyz create-check "
    "--socket /run/ssh-auth/ssh-auth.sock"
)
STACK = "etc/pam.d/sshd"
SHIM = "usr/local/lib/ssh-auth/shim.pyz"
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPx6sYc6Ym7p1dGzJ9wq0X2vV5p3n6X4h1q2r3s4t5u6 admin\n"
BYPASS_ADVICE = (
    " (sshd takes a keyword's first value, and a Match block's over the global one; "
    "change your sshd configuration and install again)\n"
)


@pytest.fixture
def pam_target(target):
    """A temporary root with an administrator who could log in in auth-time mode: in the sudo
    group, registered, with a key in ~/.ssh/authorized_keys."""
    root, credentials, config = target
    add_admin(root, "sa-padmin", ADMIN_KEY)
    config.write_text(config.read_text() + "user=sa-padmin:447700900125\n")
    return root, credentials, config


def module_file(root: Path) -> Path:
    """Where the module goes: beside the root's pam_unix.so."""
    (unix,) = root.rglob("pam_unix.so")
    return unix.parent / "pam_ssh_auth.so"


def active_auth_lines(stack: str) -> list[str]:
    """The stack's auth lines that are not comments (@include common-auth being one)."""
    return [
        " ".join(line.split())
        for line in stack.splitlines()
        if re.match(r"\s*(-?auth\s|@include\s+common-auth\b)", line)
    ]


def without_ours(stack: str) -> str:
    """The stack with our header and line taken out and the admin's lines uncommented."""
    lines = [
        line
        for line in stack.splitlines(keepends=True)
        if not line.startswith(("# ssh-auth, auth-time mode", "# `ssh-auth install --mode pam`"))
        and not line.startswith("auth required pam_ssh_auth.so")
    ]
    return "".join(line.removeprefix("#ssh-auth# ") for line in lines)


def test_install_pam_writes_the_drop_in_the_stack_and_the_module_and_sshd_proves_them(
    pam_target, pam_module
):
    root, credentials, config = pam_target
    original_stack = (root / STACK).read_text()
    admins = sshd_T(root, PLAIN)
    result = install(root, credentials, config, "--mode", "pam")
    assert result.returncode == 0, result.stderr
    assert changed(admins, sshd_T(root, PLAIN)) == {
        "authenticationmethods": ("any", METHODS),
        "logingracetime": ("120", "180"),
        "usepam": ("no", "yes"),
    }  # no ForceCommand, forwarding as it was, KbdInteractiveAuthentication already yes
    dropin = (root / "etc/ssh/sshd_config.d/ssh-auth.conf").read_text()
    for line in ("UsePAM yes", "KbdInteractiveAuthentication yes", f"AuthenticationMethods {METHODS}"):
        assert f"\n{line}\n" in dropin
    assert "ForceCommand" not in dropin and "DisableForwarding" not in dropin
    stack = (root / STACK).read_text()
    assert active_auth_lines(stack) == [OUR_LINE]
    assert "#ssh-auth# @include common-auth\n" in stack
    assert without_ours(stack) == original_stack  # nothing but the auth lines was touched
    module = module_file(root)
    assert module.read_bytes() == PAM_BUILD.read_bytes()  # built here, the one builder's bytes
    assert ownership(module) == (0o644, 0, 0)
    assert not (root / SHIM).exists()


def test_a_prebuilt_module_is_installed_as_given_and_a_second_install_changes_nothing(
    pam_target, pam_module
):
    root, credentials, config = pam_target
    first = install(root, credentials, config, "--mode", "pam", "--pam-module", str(PAM_BUILD))
    assert first.returncode == 0, first.stderr
    assert module_file(root).read_bytes() == PAM_BUILD.read_bytes()
    before = snapshot(root)
    again = install(root, credentials, config)  # the installed mode is kept
    assert (again.returncode, again.stdout) == (
        0,
        "ssh-auth is already installed as asked: nothing to change.\n",
    )
    assert snapshot(root) == before


def text_file(tmp_path: Path) -> Path:
    (tmp_path / "module.so").write_bytes(b"not a module\n")
    return tmp_path / "module.so"


def install_without_a_compiler(root, credentials, config) -> subprocess.CompletedProcess:
    """`ssh-auth install --mode pam` where no cc or gcc is on the PATH (a server's usual case)."""
    argv = [str(VENV_BIN / "ssh-auth"), "install", "--root", str(root), "--mode", "pam"]
    argv += ["--credentials", str(credentials), "--config", str(config)]
    env = {**os.environ, "PATH": "/usr/sbin:/sbin"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


def test_without_a_compiler_install_says_what_to_install_or_keeps_the_installed_module(
    pam_target, pam_module
):
    root, credentials, config = pam_target
    before = snapshot(root)
    refused = install_without_a_compiler(root, credentials, config)
    assert (refused.returncode, refused.stderr) == (
        1,
        "ssh-auth: cannot build the PAM module: no C compiler (apt-get install gcc libc6-dev "
        "libpam0g-dev libjson-c-dev)\n",
    )
    assert snapshot(root) == before
    given = install(root, credentials, config, "--mode", "pam", "--pam-module", str(PAM_BUILD))
    assert given.returncode == 0, given.stderr
    installed = snapshot(root)
    again = install_without_a_compiler(root, credentials, config)
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == (
        "note: cannot build the PAM module: no C compiler (apt-get install gcc libc6-dev "
        f"libpam0g-dev libjson-c-dev); kept the installed /{module_file(root).relative_to(root)} "
        "(--pam-module FILE replaces it)\nssh-auth is already installed as asked: nothing to change.\n"
    )
    assert snapshot(root) == installed


def other_machine(tmp_path: Path) -> Path:
    """Our module with another e_machine in its ELF header (AArch64's, 183)."""
    data = bytearray(PAM_BUILD.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")
    (tmp_path / "module.so").write_bytes(bytes(data))
    return tmp_path / "module.so"


NO_SYMBOL = "exports no pam_sm_authenticate: not a PAM authentication module"
NOT_A_MODULE = [
    (
        "a text file",
        text_file,
        "not an ELF shared object (build it with `make pam`, or leave --pam-module out)",
    ),
    ("a program", lambda tmp_path: Path("/bin/true"), NO_SYMBOL),
    (
        "a library that is not a PAM module",
        lambda tmp_path: Path(os.path.realpath("/lib/x86_64-linux-gnu/libpam.so.0")),
        NO_SYMBOL,
    ),
    (
        "a module for another machine",
        other_machine,
        "built for another architecture than this server's PAM modules (pam_unix.so)",
    ),
    ("no such file", lambda tmp_path: tmp_path / "missing.so", "No such file or directory"),
]


@pytest.mark.parametrize("case, given, refusal", NOT_A_MODULE, ids=[row[0] for row in NOT_A_MODULE])
def test_a_pam_module_that_is_not_one_is_refused_and_nothing_changes(
    pam_target, pam_module, tmp_path, case, given, refusal
):
    root, credentials, config = pam_target
    module = given(tmp_path)
    before = snapshot(root)
    result = install(root, credentials, config, "--mode", "pam", "--pam-module", str(module))
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"ssh-auth: --pam-module {module}: {refusal}\n",
    )
    assert snapshot(root) == before


@pytest.mark.parametrize("include", [True, False], ids=["drop-in", "marked blocks in sshd_config"])
def test_uninstall_gives_back_sshd_config_and_the_pam_stack_byte_for_byte(pam_target, include):
    root, credentials, config = pam_target
    sshd_config = root / "etc/ssh/sshd_config"
    if not include:
        sshd_config.write_text(
            sshd_config.read_text().replace("Include /etc/ssh/sshd_config.d/*.conf\n", "")
        )
    os.chown(root / STACK, 1, 4)  # daemon:adm 0640: nothing install would choose
    (root / STACK).chmod(0o640)
    before = snapshot(root)
    result = install(root, credentials, config, "--mode", "pam")
    assert result.returncode == 0, result.stderr
    if not include:
        assert sshd_config.read_text().startswith("# BEGIN ssh-auth")
        assert sshd_T(root, PLAIN)["authenticationmethods"] == METHODS
    assert snapshot(root) != before
    removed = ssh_auth("uninstall", "--root", str(root))
    assert removed.returncode == 0, removed.stderr
    assert "sshd -t: configuration OK" in removed.stdout
    assert snapshot(root) == before
    assert ownership(root / STACK) == (0o640, 1, 4)
    assert not module_file(root).exists()


def test_switching_modes_in_place_both_ways_each_time_proven(pam_target):
    root, credentials, config = pam_target
    before = snapshot(root)
    stack = (root / STACK).read_bytes()
    assert install(root, credentials, config).returncode == 0
    assert sshd_T(root, PLAIN)["forcecommand"] == FORCED

    to_pam = install(root, credentials, config, "--mode", "pam")
    assert to_pam.returncode == 0, to_pam.stderr
    assert "removed /usr/local/lib/ssh-auth/shim.pyz\n" in to_pam.stdout
    effective = sshd_T(root, PLAIN)
    assert (effective["forcecommand"], effective["disableforwarding"]) == ("none", "no")
    assert effective["authenticationmethods"] == METHODS
    assert active_auth_lines((root / STACK).read_text()) == [OUR_LINE]
    assert module_file(root).exists() and not (root / SHIM).exists()

    back = install(root, credentials, config, "--mode", "forcecommand")
    assert back.returncode == 0, back.stderr
    effective = sshd_T(root, PLAIN)
    assert (effective["forcecommand"], effective["disableforwarding"]) == (FORCED, "yes")
    assert (effective["authenticationmethods"], effective["usepam"]) == ("any", "no")
    assert (root / STACK).read_bytes() == stack
    assert not module_file(root).exists() and (root / SHIM).exists()

    assert install(root, credentials, config, "--mode", "pam").returncode == 0
    assert ssh_auth("uninstall", "--root", str(root)).returncode == 0
    assert snapshot(root) == before


def test_an_exempt_network_needs_the_key_only(pam_target):
    root, credentials, config = pam_target
    result = install(root, credentials, config, "--mode", "pam", "--exempt-network", "10.0.0.0/8")
    assert result.returncode == 0, result.stderr
    exempt = sshd_T(root, "user=nobody,host=client.example,addr=10.1.2.3")
    assert exempt["authenticationmethods"] == "publickey"
    assert sshd_T(root, PLAIN)["authenticationmethods"] == METHODS


def test_dry_run_shows_the_pam_stack_diff_and_changes_nothing(pam_target):
    root, credentials, config = pam_target
    before = snapshot(root)
    result = install(root, credentials, config, "--mode", "pam", "--dry-run")
    assert result.returncode == 0, result.stderr
    for line in (
        "--- /etc/pam.d/sshd\n+++ /etc/pam.d/sshd\n",
        "\n-@include common-auth\n",
        f"\n+{OUR_LINE}\n",
        "\n+#ssh-auth# @include common-auth\n",
        f"\n+AuthenticationMethods {METHODS}\n",
        f"/{module_file(root).relative_to(root)}: would be written (",
    ):
        assert line in result.stdout
    assert snapshot(root) == before


# --- who could still log in -----------------------------------------------------------------

ROOT_ONLY = (
    "ssh-auth: refusing to install --mode pam: root is the only administrator, and sshd's "
    "PermitRootLogin prohibit-password refuses the phone check (keyboard-interactive) for root, "
    "so nobody could log in to fix a problem. Add an administrator to the sudo group, with a key "
    "in ~/.ssh/authorized_keys, and register them (ssh-auth register-user NAME PHONE), or pass "
    "--force.\n"
)
NO_KEY = (
    "ssh-auth: refusing to install --mode pam: no administrator who could log in (sa-padmin) has "
    "an authorized key, and auth-time mode asks for a key before the phone, so nobody could log "
    "in to fix a problem. Add your public key to ~/.ssh/authorized_keys (ssh-copy-id), or pass "
    "--force.\n"
)


def admin_without_key(root, config):
    add_admin(root, "sa-padmin", None)
    config.write_text(config.read_text() + "user=sa-padmin:447700900125\n")


def admin_with_a_comment_only(root, config):
    add_admin(root, "sa-padmin", "# my key goes here\n")
    config.write_text(config.read_text() + "user=sa-padmin:447700900125\n")


LOCKOUTS = [
    ("root is the only admin, under PermitRootLogin prohibit-password", lambda r, c: None, ROOT_ONLY),
    ("an admin without an authorized key", admin_without_key, NO_KEY),
    ("an admin whose authorized_keys holds a comment only", admin_with_a_comment_only, NO_KEY),
]


@pytest.mark.parametrize("case, arrange, refusal", LOCKOUTS, ids=[row[0] for row in LOCKOUTS])
def test_the_pam_lockout_is_refused_unless_forced(target, matrix, case, arrange, refusal):
    root, credentials, config = target
    arrange(root, config)
    before = snapshot(root)
    refused = install(root, credentials, config, "--mode", "pam")
    matrix(f"install --mode pam: {case}", refusal.strip(), refused.stderr.strip())
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", refusal)
    assert snapshot(root) == before
    forced = install(root, credentials, config, "--mode", "pam", "--force")
    assert forced.returncode == 0, forced.stderr


def test_root_counts_under_permit_root_login_yes_and_gets_pam_root_check(target):
    root, credentials, config = target
    prepend(root / "etc/ssh/sshd_config", "PermitRootLogin yes\n")
    keys = root / "root/.ssh/authorized_keys"
    keys.parent.mkdir(parents=True)
    keys.write_text(ADMIN_KEY)
    result = install(root, credentials, config, "--mode", "pam")
    assert result.returncode == 0, result.stderr
    assert (root / "etc/ssh-auth/ssh-auth.conf").read_text().endswith("pam_root = check\n")


def test_pam_root_stays_deny_under_prohibit_password(pam_target):
    root, credentials, config = pam_target
    assert install(root, credentials, config, "--mode", "pam").returncode == 0
    assert "pam_root" not in (root / "etc/ssh-auth/ssh-auth.conf").read_text()


# --- the proof: every login asks for the phone, and the stack runs our module alone -----------


def extra_auth_include(root: Path, include: str = "@include") -> None:
    """A stack file of the admin's own with an auth line, included from sshd's stack."""
    (root / "etc/pam.d/extra-auth").write_text("auth sufficient pam_permit.so\n")
    append(root / STACK, f"{include} extra-auth\n")


BYPASSES = [
    (
        "Match User with AuthenticationMethods publickey",
        lambda root: append(
            root / "etc/ssh/sshd_config", "Match User backup\n    AuthenticationMethods publickey\n"
        ),
        "Match User backup (/etc/ssh/sshd_config line 6) would bypass the phone check: "
        "AuthenticationMethods is publickey" + BYPASS_ADVICE,
    ),
    (
        "Match Address with keyboard-interactive off",
        lambda root: append(
            root / "etc/ssh/sshd_config",
            "Match Address 203.0.113.0/24\n    KbdInteractiveAuthentication no\n",
        ),
        "Match Address 203.0.113.0/24 (/etc/ssh/sshd_config line 6) would bypass the phone "
        "check: KbdInteractiveAuthentication is no" + BYPASS_ADVICE,
    ),
    (
        "LoginGraceTime too short, before the Include",
        lambda root: prepend(root / "etc/ssh/sshd_config", "LoginGraceTime 60\n"),
        "sshd's LoginGraceTime is 60 s, shorter than the phone check needs (180 s: the ttl of "
        "120 s + 60 s)" + BYPASS_ADVICE,
    ),
    (
        "an @include of a file with an auth line",
        extra_auth_include,
        "the PAM stack /etc/pam.d/sshd would still run other auth lines, which could let a login "
        "in without the phone: @include extra-auth: auth sufficient pam_permit.so (take them out "
        "of sshd's auth stack, and install again)\n",
    ),
    (
        "an @INCLUDE in capitals of a file with an auth line",
        lambda root: extra_auth_include(root, "@INCLUDE"),
        "the PAM stack /etc/pam.d/sshd would still run other auth lines, which could let a login "
        "in without the phone: @INCLUDE extra-auth: auth sufficient pam_permit.so (take them out "
        "of sshd's auth stack, and install again)\n",
    ),
]


@pytest.mark.parametrize("case, breaks, refusal", BYPASSES, ids=[row[0] for row in BYPASSES])
def test_a_login_that_would_skip_the_phone_refuses_the_install_and_rolls_back(
    pam_target, matrix, case, breaks, refusal
):
    root, credentials, config = pam_target
    breaks(root)
    before = snapshot(root)
    result = install(root, credentials, config, "--mode", "pam", "--force")
    expected = "ssh-auth: refusing to install: " + refusal
    matrix(f"install --mode pam over {case}", expected.strip(), result.stderr.strip())
    assert (result.returncode, result.stderr) == (1, expected)
    assert "restored every file to what it was before" in result.stdout
    assert accounts_aside(root, snapshot(root)) == accounts_aside(root, before)


# OpenSSH 9.8+ takes PAMServiceName in a Match block, and `sshd -T -C` reports it; the 9.2 these
# tests run cannot, so the verdict is given sshd's answer as 9.8 would report it.
PAM_SERVICES = [
    ("no PAMServiceName (before OpenSSH 9.8)", {}, None),
    ("PAMServiceName sshd", {"pamservicename": "sshd"}, None),
    (
        "PAMServiceName sshd-legacy",
        {"pamservicename": "sshd-legacy"},
        "refusing to install: Match User sa-legacy (/etc/ssh/sshd_config line 6) would bypass the "
        "phone check: PAMServiceName is sshd-legacy" + BYPASS_ADVICE.rstrip("\n"),
    ),
]


@pytest.mark.parametrize("case, reported, refusal", PAM_SERVICES, ids=[row[0] for row in PAM_SERVICES])
def test_a_match_naming_another_pam_service_bypasses_the_phone_check(case, reported, refusal):
    context = Context("Match User sa-legacy (/etc/ssh/sshd_config line 6)", user="sa-legacy")
    effective = {**PAM_NEEDS, "logingracetime": "180", **reported}
    verdict = Verdict.judge_pam(context, dict(effective), effective, exempt_network=None)
    assert verdict.refusal() == refusal


def test_the_admins_own_auth_lines_in_the_stack_are_commented_out_not_refused(pam_target):
    root, credentials, config = pam_target
    prepend(root / STACK, "auth sufficient pam_permit.so\n-auth optional pam_gnome_keyring.so\n")
    result = install(root, credentials, config, "--mode", "pam")
    assert result.returncode == 0, result.stderr
    stack = (root / STACK).read_text()
    assert active_auth_lines(stack) == [OUR_LINE]
    assert "#ssh-auth# auth sufficient pam_permit.so\n" in stack


def test_an_include_of_common_auth_with_a_comment_is_replaced_and_proven(pam_target):
    root, credentials, config = pam_target
    stack = (root / STACK).read_text()
    assert "\n@include common-auth\n" in stack
    (root / STACK).write_text(
        stack.replace("\n@include common-auth\n", "\n@include common-auth # debian\n")
    )
    result = install(root, credentials, config, "--mode", "pam")
    assert result.returncode == 0, result.stderr
    stack = (root / STACK).read_text()
    assert active_auth_lines(stack) == [OUR_LINE]
    assert "\n#ssh-auth# @include common-auth # debian\n" in stack


CLI_ERRORS = [
    (
        ("--mode", "password"),
        2,
        "argument --mode: invalid choice: 'password' (choose from 'forcecommand', 'pam')\n",
    ),
    (
        ("--mode", "forcecommand", "--pam-module", "/bin/true"),
        1,
        "ssh-auth: --pam-module is for --mode pam (forcecommand mode runs no PAM module)\n",
    ),
    (
        ("--mode", "pam", "--allow-forwarding"),
        1,
        "ssh-auth: --allow-forwarding is for --mode forcecommand: auth-time mode leaves "
        "forwarding as your sshd configuration has it\n",
    ),
]


@pytest.mark.parametrize("extra, status, message", CLI_ERRORS, ids=["bad mode", "module", "forwarding"])
def test_mode_options_that_do_not_fit_are_one_clear_line(pam_target, extra, status, message):
    root, credentials, config = pam_target
    before = snapshot(root)
    result = install(root, credentials, config, *extra)
    assert result.returncode == status
    assert result.stderr == message if status == 1 else result.stderr.endswith(message)
    assert snapshot(root) == before


# --- libpam reads the stack: nothing it reads otherwise than we do, and it runs it (review 3) ----


def before_common_auth(line: str):
    """An admin's edit: `line` put just above `@include common-auth` in sshd's stack; returns the
    number of the line put there."""

    def edit(root: Path) -> int:
        text = (root / STACK).read_text()
        (root / STACK).write_text(
            text.replace("@include common-auth\n", line + "@include common-auth\n")
        )
        return text[: text.index("@include common-auth\n")].count("\n") + 1

    return edit


def at_the_top(path: str, line: str):
    """An admin's edit: `line` put at the top of a PAM file of the root; returns 1."""
    return lambda root: prepend(root / path, line) or 1


LONG = "session optional pam_env.so " + "x" * 995 + "auth sufficient pam_permit.so\n"
CONTINUED = "ends in a backslash, so libpam reads the next line as part of it"
UNREADABLE = [
    (
        "a stray backslash above @include common-auth",
        before_common_auth("account required pam_nologin.so \\\n"),
        f"/etc/pam.d/sshd line {{line}} {CONTINUED}",
    ),
    (
        "a backslash and a space above @include common-auth",
        before_common_auth("account required pam_nologin.so \\ \n"),
        f"/etc/pam.d/sshd line {{line}} {CONTINUED}",
    ),
    (
        "an auth line of the admin's continued",
        before_common_auth(
            "auth [success=1 default=ignore] pam_succeed_if.so \\\n    user ingroup nopass\n"
        ),
        f"/etc/pam.d/sshd line {{line}} {CONTINUED}",
    ),
    (
        "an auth line hidden by a continuation in an included file",
        at_the_top("etc/pam.d/common-account", "auth\\\n    sufficient pam_permit.so\n"),
        f"/etc/pam.d/common-account line 1 {CONTINUED}",
    ),
    (
        "an @include of a file that is not there",
        at_the_top(STACK, "@include sshd-extra\n"),
        "/etc/pam.d/sshd line 1 includes sshd-extra, which libpam would not find "
        "(/etc/pam.d/sshd-extra)",
    ),
    (
        "a substack of a file that is not there",
        at_the_top(STACK, "account substack sshd-extra\n"),
        "/etc/pam.d/sshd line 1 includes sshd-extra, which libpam would not find "
        "(/etc/pam.d/sshd-extra, /usr/lib/pam.d/sshd-extra)",
    ),
    (
        "a line that is left of an auth line continued before",
        at_the_top(STACK, "    readenv=1\n"),
        "/etc/pam.d/sshd line 1 starts with readenv=1, which is no PAM type: libpam fails every login",
    ),
    (
        "a line longer than libpam reads at once",
        at_the_top(STACK, LONG),
        "/etc/pam.d/sshd line 1 is longer than libpam reads at once (1023 bytes): it would read "
        "the rest as another line",
    ),
]


@pytest.mark.parametrize("case, edit, problem", UNREADABLE, ids=[row[0] for row in UNREADABLE])
def test_a_stack_libpam_would_read_otherwise_is_refused_before_anything_changes(
    pam_target, matrix, case, edit, problem
):
    root, credentials, config = pam_target
    line = edit(root)
    before = snapshot(root)
    result = install(root, credentials, config, "--mode", "pam", "--force")
    expected = (
        f"ssh-auth: refusing to install --mode pam: {problem.format(line=line)} (ssh-auth reads "
        "the stack as libpam does only without these: make each line whole and include only files "
        "that are there, then install again)\n"
    )
    matrix(f"install --mode pam over {case}", expected.strip(), result.stderr.strip())
    assert (result.returncode, result.stdout, result.stderr) == (1, "", expected)
    assert snapshot(root) == before


def test_a_module_that_lets_everyone_in_is_caught_by_running_the_stack_with_libpam(pam_target, matrix):
    root, credentials, config = pam_target
    permit = Path(os.path.realpath("/lib/x86_64-linux-gnu/security/pam_permit.so"))
    before = snapshot(root)
    result = install(root, credentials, config, "--mode", "pam", "--pam-module", str(permit))
    expected = (
        "ssh-auth: refusing to install: libpam, running a copy of /etc/pam.d/sshd, let a login in "
        "with ssh-auth's service answering deny: something other than ssh-auth's module decides\n"
    )
    matrix("install --mode pam --pam-module pam_permit.so", expected.strip(), result.stderr.strip())
    assert (result.returncode, result.stderr) == (1, expected)
    assert "restored every file to what it was before" in result.stdout
    assert accounts_aside(root, snapshot(root)) == accounts_aside(root, before)


# --- the PAM service sshd reads: OpenSSH before 9.8 names it after its program (review 3) -------

STOCK_UNIT = Path("/lib/systemd/system/ssh.service").read_text()
OVERRIDE = "[Service]\nExecStart=\nExecStart=/usr/local/sbin/sshd-alt -D $SSHD_OPTS\n"
ANOTHER_NAME = (
    ", and OpenSSH before 9.8 reads the PAM stack named after its program, /etc/pam.d/sshd-alt, "
    "not /etc/pam.d/sshd, which auth-time mode edits (start sshd as sshd, or use --mode "
    "forcecommand)\n"
)
UNITS = [
    ("Debian's own unit", {"lib/systemd/system/ssh.service": STOCK_UNIT}, None),
    (
        "a unit starting sshd through a symlink",
        {"lib/systemd/system/ssh.service": "[Service]\nExecStart=/usr/sbin/sshd-alt -D\n"},
        "the unit ssh.service starts sshd as sshd-alt (ExecStart=/usr/sbin/sshd-alt -D)",
    ),
    (
        "a unit giving sshd another argv[0]",
        {"lib/systemd/system/ssh.service": "[Service]\nExecStart=@/usr/sbin/sshd sshd-alt -D\n"},
        "the unit ssh.service starts sshd as sshd-alt (ExecStart=@/usr/sbin/sshd sshd-alt -D)",
    ),
    (
        "a drop-in replacing the unit's ExecStart",
        {
            "lib/systemd/system/ssh.service": STOCK_UNIT,
            "etc/systemd/system/ssh.service.d/override.conf": OVERRIDE,
        },
        "the unit ssh.service starts sshd as sshd-alt (ExecStart=/usr/local/sbin/sshd-alt -D "
        "$SSHD_OPTS)",
    ),
]


@pytest.mark.parametrize("case, files, where", UNITS, ids=[row[0] for row in UNITS])
def test_an_sshd_unit_running_sshd_under_another_name_is_refused(pam_target, matrix, case, files, where):
    root, credentials, config = pam_target
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    before = snapshot(root)
    result = install(root, credentials, config, "--mode", "pam", "--force")
    if where is None:
        assert result.returncode == 0, result.stderr
        return
    expected = f"ssh-auth: refusing to install --mode pam: {where}{ANOTHER_NAME}"
    matrix(f"install --mode pam under {case}", expected.strip(), result.stderr.strip())
    assert (result.returncode, result.stdout, result.stderr) == (1, "", expected)
    assert snapshot(root) == before


def test_a_running_sshd_started_under_another_name_is_refused(pam_target, tmp_path, matrix):
    root, credentials, config = pam_target
    program = tmp_path / "sshd-alt"
    program.symlink_to("/usr/sbin/sshd")
    pidfile = root / "run/sshd.pid"
    pidfile.parent.mkdir()
    os.makedirs("/run/sshd", exist_ok=True)
    argv = [str(program), "-D", "-e", "-f", "/dev/null", "-o", f"HostKey={root}/etc/ssh/host_key"]
    for option in (f"Port={free_port()}", "ListenAddress=127.0.0.1", f"PidFile={pidfile}"):
        argv += ["-o", option]
    with ServerProcess(argv, tmp_path / "sshd.log", ready=lambda _: pidfile.exists()) as sshd:
        before = snapshot(root)
        result = install(root, credentials, config, "--mode", "pam", "--force")
        after, pid = snapshot(root), sshd.process.pid
    where = f"the running sshd (pid {pid}, in /run/sshd.pid) was started as sshd-alt"
    expected = f"ssh-auth: refusing to install --mode pam: {where}{ANOTHER_NAME}"
    matrix("install --mode pam beside a running sshd-alt", expected.strip(), result.stderr.strip())
    assert (result.returncode, result.stdout, result.stderr) == (1, "", expected)
    assert after == before


def test_an_exempt_network_taking_in_this_server_is_refused_in_auth_time_mode_too(pam_target):
    root, credentials, config = pam_target
    before = snapshot(root)
    refused = install(root, credentials, config, "--mode", "pam", "--exempt-network", "127.0.0.1")
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1,
        "",
        "ssh-auth: refusing to install: the exempt network 127.0.0.1/32 takes in loopback "
        "(127.0.0.0/8): anyone who gets onto this server (a local user, a forwarded port, a jump "
        "through it) would log in there without the phone. Leave it out, or pass --force.\n",
    )
    assert snapshot(root) == before
