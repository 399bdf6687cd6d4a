"""sshd's PAM stack run by the real libpam (a copy, against a service of the proof's own): only
ssh-auth's service decides, whatever the file says and however our own reading of it goes."""

import os
import shutil
from pathlib import Path

import pytest

from harness.server_root import append, install, prepend
from webserver.admin.pam_proof import stack_proof

STACK = "etc/pam.d/sshd"
OUR_LINE = "auth required pam_ssh_auth.so"
PERMIT = os.path.realpath("/lib/x86_64-linux-gnu/security/pam_permit.so")
COPY = "libpam, running a copy of /etc/pam.d/sshd,"
OTHERS_DECIDE = "something other than ssh-auth's module decides"


@pytest.fixture
def installed(target, pam_module):
    """A root with auth-time mode installed (its stack proven by install)."""
    root, credentials, config = target
    result = install(root, credentials, config, "--mode", "pam", "--force")
    assert result.returncode == 0, result.stderr
    return root


def above_our_line(line: str):
    """Someone's edit of the installed stack: `line` just above ours."""

    def edit(root: Path) -> None:
        text = (root / STACK).read_text()
        (root / STACK).write_text(text.replace(OUR_LINE, line + OUR_LINE))

    return edit


def module_replaced_by_permit(root: Path) -> None:
    (module,) = root.rglob("pam_ssh_auth.so")
    shutil.copyfile(PERMIT, module)


LONG = "session optional pam_env.so " + "x" * 995 + "auth sufficient pam_permit.so\n"
STACKS = [
    ("as installed", lambda root: None, None),
    (
        "a stray backslash joins our line to the one above",
        above_our_line("account required pam_nologin.so \\\n"),
        f"{COPY} never asked ssh-auth's service: {OTHERS_DECIDE}",
    ),
    (
        "pam_permit sufficient above our line",
        above_our_line("auth sufficient pam_permit.so\n"),
        f"{COPY} let a login in with ssh-auth's service answering deny: {OTHERS_DECIDE}",
    ),
    (
        "an auth line past libpam's line length",
        lambda root: prepend(root / STACK, LONG),
        f"{COPY} let a login in with ssh-auth's service answering deny: {OTHERS_DECIDE}",
    ),
    (
        "our module replaced by pam_permit",
        module_replaced_by_permit,
        f"{COPY} let a login in with ssh-auth's service answering deny: {OTHERS_DECIDE}",
    ),
    (
        "pam_deny after our line",
        lambda root: append(root / STACK, "auth required pam_deny.so\n"),
        f"{COPY} kept out a login with ssh-auth's service answering allow (Authentication failure)",
    ),
    (
        "an @include libpam cannot find",
        lambda root: prepend(root / STACK, "@include sshd-extra\n"),
        f"{COPY} could not start (Critical error - immediate abort)",
    ),
    (
        "a bare @include (libpam crashes on it)",
        lambda root: prepend(root / STACK, "@include\n"),
        f"{COPY} crashed (signal 11)",
    ),
]


@pytest.mark.parametrize("case, edit, refusal", STACKS, ids=[row[0] for row in STACKS])
def test_libpam_itself_runs_the_stack_and_only_the_service_decides(installed, case, edit, refusal):
    edit(installed)
    assert stack_proof(installed) == refusal
