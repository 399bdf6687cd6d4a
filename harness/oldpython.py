"""Debian 11's own system Python (3.9, the oldest we claim), from a cached debootstrap tree."""

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# Root-owned and world-traversable, outside every 0700 directory: login users run this Python.
CACHE = Path("/var/cache/ssh-auth-tests")
TREE = CACHE / "bullseye"
PYTHON = TREE / "usr" / "bin" / "python3"
MIRROR = "http://deb.debian.org/debian"


def python() -> Path:
    """Bullseye's /usr/bin/python3, run from the tree (no chroot); built on first use."""
    if not PYTHON.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        os.chmod(CACHE, 0o755)
        with open(CACHE / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it right now
            if not PYTHON.exists():
                for stale in [*CACHE.glob(".bullseye-*"), TREE]:  # a run killed mid-build
                    if stale.exists():
                        _remove(stale)
                build()
    return PYTHON


def build() -> None:
    """debootstrap into a temp dir beside TREE, renamed into place only when complete."""
    # Measured here: 42 s from deb.debian.org (252 MB), once per machine.
    work = Path(tempfile.mkdtemp(prefix=".bullseye-", dir=CACHE))
    try:
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3",
                "bullseye",
                str(work),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            log = work / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-3000:] if log.exists() else result.stderr[-3000:]
            raise RuntimeError(f"debootstrap bullseye failed ({result.returncode}):\n{detail}")
        if not (work / PYTHON.relative_to(TREE)).exists():
            raise RuntimeError("debootstrap bullseye finished without usr/bin/python3")
        os.chmod(work, 0o755)  # mkdtemp made it 0700
        work.rename(TREE)
    finally:
        if work.exists():
            _remove(work)


def _remove(root: Path) -> None:
    """Delete an unfinished tree, unmounting first what debootstrap mounted inside (/proc, /sys)."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(root, ignore_errors=True)
