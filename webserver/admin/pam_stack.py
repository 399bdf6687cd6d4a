"""sshd's PAM stack in auth-time mode: every `auth` line replaced by our module alone, so that
nothing (a password, another module) can stand in for the phone; the other stacks are kept."""

import re

MODULE = "pam_ssh_auth.so"
TIMEOUT_MARGIN = 30  # the module waits this long past the check's ttl for the verdict
GRACE_MARGIN = 60  # sshd's LoginGraceTime: the ttl, the module's margin, and time to type
MARK = "#ssh-auth# "  # the admin's auth lines, kept as comments to show what was replaced
AUTH_LINE = re.compile(r"(?i)^\s*(-?auth\s|@include\s+common-auth\s*$)")
OUR_LINE = re.compile(r"(?m)^auth\s+required\s+\S*pam_ssh_auth\.so\b")
HEADER = (
    "# ssh-auth, auth-time mode: the phone check is the whole auth stack (written by\n"
    "# `ssh-auth install --mode pam`; `ssh-auth uninstall` restores this file byte for byte).\n"
)


def module_timeout(ttl: int) -> int:
    """The module's timeout= for a check of `ttl` seconds."""
    return ttl + TIMEOUT_MARGIN


def login_grace_time(ttl: int) -> int:
    """The LoginGraceTime auth-time mode needs for a check of `ttl` seconds."""
    return ttl + GRACE_MARGIN


def auth_line(module: str, socket: str, ttl: int) -> str:
    """Our module's line: `module` is its name in the PAM directory, or an absolute path."""
    for name, value in (("module", module), ("socket", socket)):
        if not value or any(c.isspace() or c in "[]\\#" for c in value):
            raise ValueError(f"{name} must have no spaces, brackets or '#': {value!r}")
    return f"auth required {module} socket={socket} timeout={module_timeout(ttl)}\n"


def render_pam_stack(original: str, module: str, socket: str, ttl: int) -> str:
    """The stack with its auth lines commented out and ours where the first of them was."""
    lines = original.splitlines(keepends=True)
    out, placed = [], False
    for line in lines:
        if line in HEADER.splitlines(keepends=True) or OUR_LINE.match(line):
            continue  # an earlier install's lines: written again below
        if line.startswith(MARK):
            line = line[len(MARK) :]  # an admin's line an earlier install commented out
        if AUTH_LINE.match(line):
            if not placed:
                out += [HEADER, auth_line(module, socket, ttl)]
                placed = True
            out.append(MARK + line if line.endswith("\n") else MARK + line + "\n")
            continue
        out.append(line)
    if not placed:
        out[:0] = [HEADER, auth_line(module, socket, ttl)]
    return "".join(out)


def has_other_auth(stack: str) -> list[str]:
    """The auth lines other than ours still active in a stack (none, in auth-time mode)."""
    return [
        line.strip() for line in stack.splitlines() if AUTH_LINE.match(line) and not OUR_LINE.match(line)
    ]
