"""Exec the user's passwd shell (login shell, or -c SSH_ORIGINAL_COMMAND) with default signals."""

from __future__ import annotations

import os
import pwd
import signal

SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/ssh/sftp-server",
)


def restore_default_signals() -> None:
    """Undo Python's SIGPIPE/SIGINT handling and any mask, so `yes | head -1` ends normally."""
    for number in signal.valid_signals():
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def sftp_server() -> str:
    """The sftp-server binary that stands in for sshd's internal-sftp."""
    for path in SFTP_SERVERS:
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("no sftp-server binary for internal-sftp")


def exec_shell(command: str | None) -> None:
    """Replace this process with the user's shell from the passwd database (never $SHELL)."""
    shell = pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
    name = os.path.basename(shell)
    if command is not None and command.split(" ", 1)[0] == "internal-sftp":
        command = sftp_server() + command[len("internal-sftp") :]
    restore_default_signals()
    if command is None:
        os.execv(shell, ["-" + name])
    os.execv(shell, [name, "-c", command])
