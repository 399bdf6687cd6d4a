"""Real local accounts for loopback logins, and the client key they accept."""

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

from .processes import run


def ensure_user(name: str, public_key: str) -> None:
    """A real account that sshd accepts with our test key (password field '*', not locked)."""
    try:
        run("id", name)
    except subprocess.CalledProcessError:
        run("useradd", "--create-home", "--shell", "/bin/bash", name)
    run("usermod", "-p", "*", name)
    home = Path(f"/home/{name}")
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    present = keys.read_text() if keys.exists() else ""
    if public_key.strip() not in present:  # added, never replaced: test runs may overlap
        keys.write_text(present + public_key.strip() + "\n")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    shutil.chown(ssh_dir, name, name)
    shutil.chown(ssh_dir / "authorized_keys", name, name)


def ssh_client_options(key: Path) -> list[str]:
    """Client options for a private test sshd: our key only, no prompts, no known_hosts."""
    return [
        "-F",
        "/dev/null",
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
    ]


@functools.cache
def client_key() -> Path:
    """One client key for every gate of this run (each writes it to the users' authorized_keys)."""
    directory = Path(tempfile.mkdtemp(prefix="sa-key-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "id_ed25519"))
    return directory / "id_ed25519"


class Ledger:
    """The machine's accounts and groups when a run began, to remove what the run added."""

    def __init__(self):
        self.users, self.groups = _names("passwd"), _names("group")

    def added(self) -> tuple[list[str], list[str]]:
        """(users, groups) that exist now but did not when the ledger was opened."""
        return sorted(_names("passwd") - self.users), sorted(_names("group") - self.groups)

    def restore(self, only: Collection[str] | None = None) -> tuple[list[str], list[str]]:
        """Kill the added users' processes, remove them, their homes and the added groups; only
        those named in `only` when given, so that a run beside another leaves the other's alone."""
        users, groups = self.added()
        if only is not None:
            users, groups = [u for u in users if u in only], [g for g in groups if g in only]
        for user in users:
            subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
        for user in users:
            for _ in range(50):  # userdel refuses (8) while a killed process is still exiting
                if subprocess.run(["userdel", "-r", user], capture_output=True).returncode != 8:
                    break
                time.sleep(0.1)
        remaining = _names("group") - self.groups
        for group in remaining if only is None else remaining & set(only):
            subprocess.run(["groupdel", group], capture_output=True)
        return users, groups


def _names(database: str) -> set[str]:
    entries = subprocess.run(["getent", database], capture_output=True, text=True).stdout
    return {line.split(":", 1)[0] for line in entries.splitlines() if line}
