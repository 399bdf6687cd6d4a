"""Atomic, locked file writes: a reader sees the old file or the new one, never half of either."""

import fcntl
import os
import tempfile
from contextlib import contextmanager


@contextmanager
def locked(path: str):
    """Hold an exclusive lock beside `path` (path + '.lock') for a read-modify-write."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Write through a temp file in the same directory: fsync, chmod/chown, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        if uid != -1 or gid != -1:
            os.chown(temp, uid, gid)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
