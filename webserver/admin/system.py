"""The server as install and doctor read it (under a root): accounts, groups, the lockout guard,
the system Python the shim runs on."""

import os
import re
import subprocess
from pathlib import Path

from ..config import Settings
from ..errors import InstallError
from ..policy import is_exempt
from ..registry import parse_entry
from .layout import ADMIN_GROUPS, SERVICE_USER, SHIM_PYTHON, SHIM_PYTHON_CLAIM, SHIM_PYTHON_MIN

SHOWN = {"without-password": "prohibit-password"}  # sshd -T prints PermitRootLogin's old name


def read(root: Path, relative: str) -> bytes | None:
    """A file's bytes under the root, or None."""
    try:
        return (root / relative).read_bytes()
    except FileNotFoundError:
        return None


def passwd_entry(root: Path, name: str) -> tuple[int, int] | None:
    """(uid, gid) of an account in the root's etc/passwd, or None."""
    fields = _passwd_fields(root, name)
    return (int(fields[2]), int(fields[3])) if fields else None


def home_of(root: Path, name: str) -> str | None:
    """An account's home directory as the root's etc/passwd gives it, or None."""
    fields = _passwd_fields(root, name)
    return fields[5] if fields and len(fields) >= 6 else None


def _passwd_fields(root: Path, name: str) -> list[str] | None:
    for line in (read(root, "etc/passwd") or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == name:
            return parts
    return None


def groups(root: Path) -> dict[str, set[str]]:
    """Each group of the root's etc/group with its listed members."""
    found: dict[str, set[str]] = {}
    for line in (read(root, "etc/group") or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 4:
            found[parts[0]] = {m for m in parts[3].split(",") if m}
    return found


def members(root: Path) -> dict[str, list[str]]:
    """Each group with its members, users whose primary group it is included."""
    gids: dict[str, str] = {}
    for line in (read(root, "etc/group") or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 4:
            gids[parts[0]] = parts[2]
    primary: dict[str, set[str]] = {}
    for line in (read(root, "etc/passwd") or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 4:
            primary.setdefault(parts[3], set()).add(parts[0])
    listed = groups(root)
    return {g: sorted(listed[g] | primary.get(gid, set())) for g, gid in gids.items()}


def ensure_service_account(root: Path, say) -> tuple[int, int]:
    """The service user's uid and gid, creating the account if needed."""
    found = passwd_entry(root, SERVICE_USER)
    if found is not None:
        return found
    argv = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        SERVICE_USER,
    ]
    if str(root) != "/":
        argv[1:1] = ["--root", str(root)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise InstallError(f"cannot create the user {SERVICE_USER}: {result.stderr.strip()}")
    say(f"created the system user {SERVICE_USER}")
    return passwd_entry(root, SERVICE_USER)


def refuse_lockout(root: Path, config_text: str) -> None:
    """InstallError unless an administrator is registered or exempt (the classic lockout)."""
    listed = groups(root)
    admins = sorted({m for g in ADMIN_GROUPS for m in listed.get(g, ())} or {"root"})
    if not _let_in(root, config_text, admins):
        raise InstallError(_no_admin(admins))


def refuse_pam_lockout(root: Path, config_text: str, effective, networks_exempt: bool) -> None:
    """In auth-time mode an administrator needs a key, and root counts only if sshd lets root
    use keyboard-interactive: `effective(user)` is sshd's effective settings for a login."""
    listed = groups(root)
    admins = sorted({m for g in ADMIN_GROUPS for m in listed.get(g, ())})
    root_login = effective("root").get("permitrootlogin", "")
    if root_login == "yes" and "root" not in admins:
        admins.append("root")
    if not admins:
        raise InstallError(
            "refusing to install --mode pam: root is the only administrator, and sshd's "
            f"PermitRootLogin {SHOWN.get(root_login, root_login)} refuses the phone check "
            "(keyboard-interactive) for root, so nobody could log in to fix a problem. Add an "
            "administrator to the sudo group, with a key in ~/.ssh/authorized_keys, and register "
            "them (ssh-auth register-user NAME PHONE), or pass --force."
        )
    allowed = admins if networks_exempt else _let_in(root, config_text, admins)
    if not allowed:
        raise InstallError(_no_admin(admins))
    if not any(has_key(root, admin, effective(admin)) for admin in allowed):
        raise InstallError(
            f"refusing to install --mode pam: no administrator who could log in "
            f"({', '.join(allowed)}) has an authorized key, and auth-time mode asks for a key "
            "before the phone, so nobody could log in to fix a problem. Add your public key to "
            "~/.ssh/authorized_keys (ssh-copy-id), or pass --force."
        )


def has_key(root: Path, user: str, effective: dict[str, str]) -> bool:
    """Whether sshd could find a public key for `user` under the root (AuthorizedKeysFile)."""
    if effective.get("authorizedkeyscommand", "none") != "none":
        return True  # keys come from a command: nothing here to check
    home, ids = home_of(root, user), passwd_entry(root, user)
    if home is None or ids is None:
        return False
    for pattern in effective.get("authorizedkeysfile", ".ssh/authorized_keys").split():
        if pattern == "none":
            continue
        path = re.sub(
            r"%[%hUu]",
            lambda m: {"%%": "%", "%h": home, "%U": str(ids[0]), "%u": user}[m.group()],
            pattern,
        )
        path = path if path.startswith("/") else f"{home}/{path}"
        text = (read(root, path.lstrip("/")) or b"").decode(errors="replace")
        if any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
            return True
    return False


def _let_in(root: Path, config_text: str, admins: list[str]) -> list[str]:
    """The administrators the service would let in: registered or exempt."""
    settings = Settings.parse(config_text)
    registered = {entry[0] for line in config_text.splitlines() if (entry := parse_entry(line))}
    listed = groups(root)
    return [
        admin
        for admin in admins
        if admin in registered
        or is_exempt(
            admin,
            [g for g, names in listed.items() if admin in names],
            settings.exempt_users,
            settings.exempt_groups,
        )
    ]


def _no_admin(admins: list[str]) -> str:
    return (
        f"refusing to install: no administrator ({', '.join(admins)}) is registered "
        "or exempt, so nobody could log in to fix a problem. Register one first "
        "(ssh-auth register-user NAME PHONE), exempt one (exempt_users), add "
        "--exempt-network CIDR, or pass --force."
    )


def shim_python_check(root: str) -> tuple[bool, str]:
    """Whether the interpreter the shim runs under is new enough, and one line saying so."""
    candidate = Path(root) / SHIM_PYTHON.lstrip("/")
    path = str(candidate) if root != "/" and os.path.exists(candidate) else SHIM_PYTHON
    needs = f"the shim needs Python 3.9 or later ({SHIM_PYTHON_CLAIM})"
    try:
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"{path} cannot be run ({getattr(error, 'strerror', None) or error}); {needs}"
    answer = (result.stdout.strip() or result.stderr.strip()).splitlines()[:1]
    found = re.fullmatch(r"Python (\d+)\.(\d+)\S*", answer[0] if answer else "")
    if not found:
        return False, f"{path} did not say which Python it is ({' '.join(answer)!r}); {needs}"
    version = (int(found.group(1)), int(found.group(2)))
    shown = f"{version[0]}.{version[1]}"
    if version < SHIM_PYTHON_MIN:
        return False, f"{path} is Python {shown}; the shim needs 3.9 or later ({SHIM_PYTHON_CLAIM})"
    return True, f"{path} is Python {shown} (the shim needs 3.9 or later)"
