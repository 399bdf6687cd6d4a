"""The caller's SSH connection as the kernel knows it: its live sshd session process.

sshd forks, per TCP connection, a root monitor (`sshd: USER [priv]`, a child of the root listener)
and under it the session process owned by the user, whose children run the user's commands. So a
caller's connection is its nearest ancestor owned by the caller's uid whose parent is a root
process whose command line ends in `[priv]` and whose own parent is root too. Only that structure
counts, never process names: a user process can call itself anything (prctl, argv), a test sshd is
named after its symlink, and OpenSSH 9.8+ runs `sshd-session`. The session process's pid and start
time name the connection: every ControlMaster session shares them, a new TCP connection gets new
ones even from the same address and port, and they die with the connection.
"""

import ipaddress
import os
import time
from dataclasses import dataclass

PROC = "/proc"
MAX_DEPTH = 64  # ancestors walked before giving up
MONITOR_SUFFIX = b"[priv]"


@dataclass(frozen=True)
class SshConnection:
    """One live SSH connection: its session process, named by pid and start time."""

    pid: int
    start_time: int  # clock ticks after boot, /proc/PID/stat field 22

    @property
    def key(self) -> str:
        """The connection key: unique for the life of the machine, never reused."""
        return f"{self.pid}:{self.start_time}"

    def alive(self, proc: str = PROC) -> bool:
        """Whether the session process (and so the connection) still exists."""
        found = _stat(self.pid, proc)
        return found is not None and found[1] == self.start_time


def of_process(pid: int, uid: int, proc: str = PROC) -> SshConnection | None:
    """The SSH connection process `pid` (owned by `uid`) runs in, or None if it runs in none."""
    current = pid
    for _ in range(MAX_DEPTH):
        found = _stat(current, proc)
        if found is None or current <= 1:
            return None
        parent, start_time = found
        if _uid(current, proc) == uid and _is_monitor(parent, proc):
            return SshConnection(current, start_time)
        current = parent
    return None


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat's start times are counted in."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def started_by(pid: int, ticks: int, proc: str = PROC) -> bool:
    """Whether the process `pid` now names was already running at `ticks` (boot_ticks)."""
    found = _stat(pid, proc)
    return found is not None and found[1] <= ticks


def client_address(ssh_connection) -> str | None:
    """The client address from SSH_CONNECTION ("address port address port"), or None if malformed.

    sshd sets SSH_CONNECTION itself and overrides a value the client sends, so in a login its
    first word is the client's address; the broker still binds it to the connection key.
    """
    if not isinstance(ssh_connection, str) or len(ssh_connection) > 200:
        return None
    words = ssh_connection.split(" ")
    if len(words) != 4 or not all(_port(word) for word in words[1::2]):
        return None
    try:
        ipaddress.ip_address(words[2])
        return str(ipaddress.ip_address(words[0]))
    except ValueError:
        return None


def _port(word: str) -> bool:
    return word.isdigit() and len(word) <= 5 and 0 < int(word) < 65536


def _is_monitor(pid: int, proc: str) -> bool:
    """A root process with `[priv]` at the end of its command line, under a root parent."""
    found = _stat(pid, proc)
    if found is None or _uid(pid, proc) != 0:
        return False
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read(4096).rstrip(b"\0 ")
    except OSError:
        return False
    return cmdline.endswith(MONITOR_SUFFIX) and _uid(found[0], proc) == 0


def _stat(pid: int, proc: str) -> tuple[int, int] | None:
    """(parent pid, start time) of a process, or None if it is gone or hidden."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as handle:
            text = handle.read(4096)
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')': split after the last ')'.
    fields = text[text.rfind(b")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _uid(pid: int, proc: str) -> int | None:
    """The real uid of a process (from status: dumpable or not, the kernel reports it)."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def of_pam_process(pid: int, proc: str = PROC) -> SshConnection | None:
    """The SSH connection a PAM module's process (root) authenticates, or None.

    sshd runs PAM in its root monitor, or in a child it forks for PAM (`sshd: USER [pam]`):
    the connection is named by the monitor, whose pid and start time live as long as it does.
    """
    if _uid(pid, proc) != 0:
        return None
    found = _stat(pid, proc)
    if found is None:
        return None
    for candidate in (pid, found[0]):
        if _is_monitor(candidate, proc):
            stat = _stat(candidate, proc)
            return SshConnection(candidate, stat[1]) if stat else None
    return None
