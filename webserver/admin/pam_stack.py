"""sshd's PAM stack in auth-time mode: every `auth` line replaced by our module alone, so that
nothing (a password, another module) can stand in for the phone; the other stacks are kept."""

import re

MODULE = "pam_ssh_auth.so"
TIMEOUT_MARGIN = 30  # the module waits this long past the check's ttl for the verdict
GRACE_MARGIN = 60  # sshd's LoginGraceTime: the ttl, the module's margin, and time to type
MARK = "#ssh-auth# "  # the admin's auth lines, kept as comments to show what was replaced
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
    out, placed = [], False
    for line in re.findall(r"[^\n]*\n|[^\n]+\Z", original):  # libpam's lines: only \n ends one
        if line in HEADER.splitlines(keepends=True) or OUR_LINE.match(line):
            continue  # an earlier install's lines: written again below
        if line.startswith(MARK):
            line = line[len(MARK) :]  # an admin's line an earlier install commented out
        if _replaced(libpam_words(line.rstrip("\n"))):
            if not placed:
                out += [HEADER, auth_line(module, socket, ttl)]
                placed = True
            out.append(MARK + line if line.endswith("\n") else MARK + line + "\n")
            continue
        out.append(line)
    if not placed:
        out[:0] = [HEADER, auth_line(module, socket, ttl)]
    return "".join(out)


def libpam_words(line: str) -> list[str]:
    """A line's words as libpam splits them: up to the first '#', at spaces and tabs."""
    return [word for word in re.split(r"[ \t]+", line.split("#", 1)[0]) if word]


def _replaced(words: list[str]) -> bool:
    """An auth line, or Debian's `@include common-auth`: what our line stands in for."""
    if words and words[0].lower() == "@include":
        return words[1:2] == ["common-auth"]
    return bool(words) and words[0].lstrip("-").lower() == "auth"
