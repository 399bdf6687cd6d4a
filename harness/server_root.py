"""A temporary root that looks like a Debian server, and the admin command run against it."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from webserver.admin.layout import PAM_DIR
from webserver.admin.pam_files import module_dir

from .accounts import client_key, ssh_client_options
from .emulator import VENV_BIN
from .processes import ServerProcess, free_port, run

SHADOW_TOOLS_LEFTOVERS = {"etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/.pwd.lock"}
ACCOUNTS = ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")


def ssh_auth(*argv, check=False) -> subprocess.CompletedProcess:
    """The venv's `ssh-auth` command, run for real."""
    return subprocess.run(
        [str(VENV_BIN / "ssh-auth"), *argv], capture_output=True, text=True, check=check, timeout=60
    )


@contextmanager
def debian_root(tmp_path: Path):
    """A root directory that looks like a Debian server: sshd_config with an Include, accounts,
    sshd's PAM stack and a PAM module directory.

    Yields (root, a tru.json, an ssh-auth.conf registering root); removed afterwards.
    """
    root = Path(tempfile.mkdtemp(prefix="sa-root-", dir="/tmp"))
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        shutil.copy2(f"/etc/{name}", root / "etc" / name)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "etc/ssh/host_key"))
    # What auth-time mode edits: the machine's own PAM stack for sshd (and the files it
    # includes), and a PAM module directory where the module goes (found by its pam_unix.so).
    (root / PAM_DIR).mkdir(parents=True)
    for stack in ("sshd", *sorted(p.name for p in Path("/etc/pam.d").glob("common-*"))):
        shutil.copy2(f"/etc/pam.d/{stack}", root / PAM_DIR / stack)
    machine = Path("/", module_dir(Path("/"))).resolve()
    (root / machine.relative_to("/")).mkdir(parents=True)
    shutil.copy2(machine / "pam_unix.so", root / machine.relative_to("/") / "pam_unix.so")
    (root / "etc/ssh/sshd_config").write_text(
        "Include /etc/ssh/sshd_config.d/*.conf\n"
        f"HostKey {root}/etc/ssh/host_key\nUsePAM no\nPasswordAuthentication no\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    credentials = tmp_path / "tru.json"
    credentials.write_text(
        json.dumps({"credentials": [{"client_id": "id", "client_secret": "s"}], "data_residency": "eu"})
    )
    credentials.chmod(0o600)
    config = tmp_path / "ssh-auth.conf"
    config.write_text("# settings\npublic_url = https://ssh.example.com\nuser=root:447700900123\n")
    try:
        yield root, credentials, config
    finally:
        shutil.rmtree(root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, str]:
    """Every file's bytes (as a hash), but our backups and the shadow tools' own backups."""
    files = {}
    for path in root.rglob("*"):
        relative = str(path.relative_to(root))
        if (
            path.is_file()
            and not relative.startswith("var/backups/")
            and relative not in SHADOW_TOOLS_LEFTOVERS
        ):
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def accounts_aside(root: Path, files: dict[str, str]) -> dict[str, str]:
    """A snapshot without the account files (a refused install may have made the service user)."""
    return {k: v for k, v in files.items() if k not in ACCOUNTS}


def sshd_T(root: Path, spec: str) -> dict[str, str]:
    """sshd's own effective settings for a login (`sshd -T -C`), Include paths under the root."""
    text = (root / "etc/ssh/sshd_config").read_text()
    text = re.sub(r"(?im)^(\s*Include\s+)/", lambda m: m.group(1) + f"{root}/", text)
    with tempfile.NamedTemporaryFile("w", prefix="sa-sshd-", suffix=".conf") as config:
        config.write(text)
        config.flush()
        result = run("/usr/sbin/sshd", "-T", "-f", config.name, "-C", spec)
    settings: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        settings[key] = f"{settings[key]} {value}" if key in settings else value
    return settings


def changed(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple]:
    """Every setting whose effective value differs: key -> (before, after)."""
    keys = sorted(set(before) | set(after))
    return {k: (before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)}


def ownership(path: Path) -> tuple[int, int, int]:
    """(mode, uid, gid) of a file."""
    info = path.stat()
    return info.st_mode & 0o7777, info.st_uid, info.st_gid


def service_ids(root: Path) -> tuple[int, int]:
    """The uid and gid of the service user in the root's passwd."""
    passwd = (root / "etc/passwd").read_text()
    line = next(line for line in passwd.splitlines() if line.startswith("ssh-auth:"))
    return int(line.split(":")[2]), int(line.split(":")[3])


@contextmanager
def default_host_keys():
    """sshd's default host keys (an sshd_config without HostKey uses them); made if missing."""
    made = [
        f"/etc/ssh/ssh_host_{kind}_key"
        for kind in ("rsa", "ecdsa", "ed25519")
        if not os.path.exists(f"/etc/ssh/ssh_host_{kind}_key")
    ]
    if made:
        run("ssh-keygen", "-A")
    try:
        yield
    finally:
        for key in made:
            for path in (key, key + ".pub"):
                if os.path.exists(path):
                    os.unlink(path)


def install(root, credentials, config, *extra) -> subprocess.CompletedProcess:
    """`ssh-auth install` into a temporary root."""
    return ssh_auth(
        "install",
        "--root",
        str(root),
        "--credentials",
        str(credentials),
        "--config",
        str(config),
        *extra,
    )


@contextmanager
def installed_sshd(root: Path, tmp_path: Path):
    """A real sshd on the root's installed sshd_config: yields its port, ssh argv, ssh(), log()."""
    tested = tmp_path / "sshd_config"  # the installed config, its Include pointed into the root
    tested.write_text(
        (root / "etc/ssh/sshd_config").read_text().replace("Include /etc/", f"Include {root}/etc/")
    )
    port = free_port()
    os.makedirs("/run/sshd", exist_ok=True)
    argv = ["/usr/sbin/sshd", "-D", "-e", "-f", str(tested)]
    for option in (
        f"Port={port}",
        "ListenAddress=127.0.0.1",
        f"PidFile={tmp_path}/sshd.pid",
        "LogLevel=VERBOSE",
    ):
        argv += ["-o", option]
    base = ["ssh", "-p", str(port), *ssh_client_options(client_key())]

    def ssh(*args):
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )

    with ServerProcess(argv, tmp_path / "sshd.log", ready=lambda _: ssh_keyscan(port)) as sshd:
        yield SimpleNamespace(port=port, base=base, ssh=ssh, log=sshd.log_text)


def ssh_keyscan(port: int) -> bool:
    """Whether an sshd answers on this loopback port."""
    return (
        subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True).returncode
        == 0
    )


def append(path: Path, text: str) -> None:
    """Add lines at the end of a file (an admin's edit)."""
    path.write_text(path.read_text() + text)


def prepend(path: Path, text: str) -> None:
    """Add lines at the start of a file (an admin's edit)."""
    path.write_text(text + path.read_text())


def add_admin(root: Path, name: str, key: str | None) -> None:
    """An administrator of the root only (passwd, the sudo group, a home), with `key` in
    ~/.ssh/authorized_keys (None: no key)."""
    passwd = root / "etc/passwd"
    taken = {int(line.split(":")[2]) for line in passwd.read_text().splitlines()}
    uid = next(uid for uid in range(4000, 60000) if uid not in taken)
    append(passwd, f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n")
    group = root / "etc/group"
    group.write_text(
        re.sub(
            r"(?m)^(sudo:[^:]*:[^:]*:)(.*)$",
            lambda m: m[1] + ",".join(filter(None, [m[2], name])),
            group.read_text(),
        )
    )
    keys = root / f"home/{name}/.ssh/authorized_keys"
    keys.parent.mkdir(parents=True)
    if key is not None:
        keys.write_text(key)
