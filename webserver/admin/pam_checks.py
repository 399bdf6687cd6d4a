"""`ssh-auth doctor` in auth-time mode: sshd asks for the phone during authentication, the PAM
stack runs our module alone, the module is sshd's to load, and root is treated as sshd will."""

import os
import stat
from pathlib import Path

from ..errors import InstallError
from .layout import PAM_STACK
from .pam_files import (
    module_dir,
    module_path,
    module_refusal,
    our_module,
    stack_lines,
    stack_problem,
    stack_refusal,
)
from .pam_proof import stack_proof
from .pam_service import service_refusal
from .pam_stack import MODULE, OUR_LINE, login_grace_time
from .proof import PROBE_ADDRESSES, grace_refusal
from .sshd import Sshd
from .system import SHOWN, read

INSTALL_FIX = "ssh-auth install --mode pam, then reload sshd"
UNREADABLE_FIX = (
    "make each line of the PAM stack whole and include only files that are there, then "
    "ssh-auth install --mode pam"
)
PAM_SERVICE_NAME = (9, 8)  # OpenSSH's PAMServiceName: a PAM stack of our own, not sshd's
NO_ENTER = (10, 3)  # from here the client needs no Enter after the phone approved


def check_login_grace(report, effective: dict[str, str], ttl: int) -> None:
    """sshd's LoginGraceTime leaves the person time to answer on the phone."""
    grace = grace_refusal(effective, ttl)
    if grace:
        report.bad(
            grace, f"set LoginGraceTime {login_grace_time(ttl)} (ssh-auth install --mode pam does)"
        )
    else:
        report.ok(
            f"LoginGraceTime {effective.get('logingracetime')} s leaves time for a check of ttl {ttl} s"
        )


def check_pam(report, settings, root: Path) -> None:
    """The PAM stack, the module, the OpenSSH version and root, one line each."""
    stack = read(root, PAM_STACK)
    text = stack.decode(errors="replace") if stack is not None else None
    if _check_stack(report, root, text, settings.socket):
        _check_proof(report, root)
    _check_module(report, root, our_module(text or "") or MODULE)
    sshd = Sshd(root)
    _check_openssh(report, sshd.version())
    try:
        for_root = sshd.effective(PROBE_ADDRESSES[0], "root")
    except (InstallError, OSError) as error:
        report.bad(f"sshd's settings for a login as root cannot be read: {error}", "sshd -t")
        return
    _check_service(report, root, for_root)
    _check_pam_root(report, for_root, settings.pam_root)


def _check_stack(report, root: Path, text: str | None, socket: str) -> bool:
    """The stack as read here: False when it is missing or cannot be read as libpam does."""
    if text is None:
        report.bad(f"/{PAM_STACK} is missing: sshd has no PAM stack to run the phone check", INSTALL_FIX)
        return False
    problem = stack_problem(root, text)
    if problem:
        report.bad(problem, UNREADABLE_FIX)
        return False
    refusal = stack_refusal(root, text)
    if refusal:
        report.bad(refusal, "ssh-auth install --mode pam (it comments out every other auth line)")
        return True
    line = next(line for line in stack_lines(text) if OUR_LINE.match(line))
    asked = next((word[len("socket=") :] for word in line.split() if word.startswith("socket=")), None)
    if asked != socket:
        report.bad(
            f"the PAM module in /{PAM_STACK} asks the socket {asked}, the service listens on {socket}",
            INSTALL_FIX,
        )
    else:
        report.ok(f"the PAM stack /{PAM_STACK} runs ssh-auth's module alone: {line}")
    return True


def _check_proof(report, root: Path) -> None:
    """The stack as libpam runs it (a copy, against a service of the proof's own)."""
    if os.geteuid() != 0:
        report.warn(f"/{PAM_STACK} was not run through libpam: run doctor as root for that")
        return
    refusal = stack_proof(root)
    if refusal:
        report.bad(refusal, INSTALL_FIX)
    else:
        report.ok(
            f"libpam, running a copy of /{PAM_STACK}, keeps a login out when ssh-auth's service "
            "answers deny and lets it in when it answers allow"
        )


def _check_module(report, root: Path, name: str) -> None:
    relative = module_path(root, name)
    if relative is None:
        report.bad("no PAM module directory (none holds pam_unix.so)", "apt-get install libpam-modules")
        return
    shown = f"/{relative}"
    try:
        info = (root / relative).stat()
        data = (root / relative).read_bytes()
    except FileNotFoundError:
        report.bad(f"the PAM module {shown} is missing: sshd denies every login", INSTALL_FIX)
        return
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != 0 or mode != 0o644:
        report.bad(
            f"the PAM module {shown} is {info.st_uid}:{info.st_gid} {mode:04o}: sshd loads it as root",
            f"chown root:root {shown} && chmod 0644 {shown}",
        )
        return
    directory = module_dir(root)
    refusal = module_refusal(data, read(root, f"{directory}/pam_unix.so") if directory else None)
    if refusal:
        report.bad(f"the PAM module {shown}: {refusal}", INSTALL_FIX)
    else:
        report.ok(f"the PAM module {shown}: root 0644")


def _check_openssh(report, version: tuple[int, int] | None) -> None:
    if version is None:
        report.warn("the OpenSSH version could not be read (sshd -V, ssh -V)")
        return
    notes = [
        "it has PAMServiceName (9.8+)"
        if version >= PAM_SERVICE_NAME
        else f"no PAMServiceName before 9.8, so ssh-auth edits /{PAM_STACK}",
        "before 10.3 the person presses Enter after approving on the phone"
        if version < NO_ENTER
        else "no Enter needed after approving on the phone",
    ]
    report.ok(f"OpenSSH {version[0]}.{version[1]}: {'; '.join(notes)}")


def _check_service(report, root: Path, for_root: dict[str, str]) -> None:
    """sshd reads the stack we edit (OpenSSH before 9.8 takes its PAM service from its name)."""
    refusal = service_refusal(root, for_root)
    if refusal:
        report.bad(refusal, "start sshd as sshd (or ssh-auth install --mode forcecommand)")
    else:
        report.ok(f"sshd reads the PAM stack /{PAM_STACK}: nothing starts it under another name")


def _check_pam_root(report, for_root: dict[str, str], pam_root: str) -> None:
    """The service's pam_root against what sshd lets root do (PermitRootLogin)."""
    login = for_root.get("permitrootlogin", "")
    shown = SHOWN.get(login, login)
    if login == "yes" and pam_root == "deny":
        report.bad(
            "pam_root = deny, but sshd's PermitRootLogin is yes: the service refuses root at once",
            "ssh-auth config set pam_root check (or set PermitRootLogin prohibit-password)",
        )
    elif login != "yes" and pam_root == "check":
        report.bad(
            f"pam_root = check, but sshd's PermitRootLogin {shown} refuses keyboard-interactive for "
            "root: sshd would refuse root after the phone approved",
            "ssh-auth config set pam_root deny",
        )
    else:
        report.ok(f"pam_root = {pam_root} fits sshd's PermitRootLogin {shown}")
