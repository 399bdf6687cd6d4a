"""The PAM service sshd really uses: OpenSSH before 9.8 names it after its program (argv[0]), so
an sshd started under another name reads another /etc/pam.d file than the one auth-time mode edits."""

import os
import shlex
from pathlib import Path

from .layout import PAM_DIR, PAM_STACK, SSHD
from .system import read

SERVICE = PAM_STACK.rsplit("/", 1)[1]
UNITS = ("ssh.service", "sshd.service")
UNIT_DIRS = ("etc/systemd/system", "run/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")


def service_refusal(root: Path, effective: dict[str, str]) -> str | None:
    """Why sshd would not read /etc/pam.d/sshd (None: what sshd -T, the running sshd its pid file
    names and its systemd unit say all read it)."""
    if "pamservicename" in effective:  # OpenSSH 9.8+ says it itself
        name = effective["pamservicename"]
        if name == SERVICE:
            return None
        return f"sshd's PAMServiceName is {name}: it reads /{PAM_DIR}/{name}, not /{PAM_STACK}"
    found = [_running(root, effective.get("pidfile", "/run/sshd.pid"))]
    for where, name in filter(None, found + [_unit(root, unit) for unit in UNITS]):
        if name != SERVICE:
            return (
                f"{where}, and OpenSSH before 9.8 reads the PAM stack named after its program, "
                f"/{PAM_DIR}/{name}, not /{PAM_STACK}, which auth-time mode edits"
            )
    return None


def _unit(root: Path, name: str) -> tuple[str, str] | None:
    """The unit's ExecStart as systemd would run it: its file, then its drop-ins, the last
    ExecStart= winning and an empty one clearing those before."""
    unit = next((root / d / name for d in UNIT_DIRS if (root / d / name).is_file()), None)
    # A drop-in in a directory earlier in UNIT_DIRS hides one of the same name in a later one.
    dropins = {p.name: p for d in reversed(UNIT_DIRS) for p in (root / d / f"{name}.d").glob("*.conf")}
    command = None
    for path in ([unit] if unit else []) + [dropins[key] for key in sorted(dropins)]:
        for line in path.read_text(errors="replace").splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == "ExecStart":
                command = value.strip() or None
    if command is None:
        return None
    return f"the unit {name} starts sshd as {_argv0(command)} (ExecStart={command})", _argv0(command)


def _argv0(command: str) -> str:
    """The program name an ExecStart= gives its process: `@` names argv[0] apart from the path."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    prefix = words[0][: len(words[0]) - len(words[0].lstrip("@-:+!"))] if words else ""
    words[0] = words[0][len(prefix) :]
    argv0 = words[1] if "@" in prefix and len(words) > 1 else words[0]
    return os.path.basename(argv0)


def _running(root: Path, pidfile: str) -> tuple[str, str] | None:
    """The running sshd its pid file names, and the name it was started as: setproctitle() puts
    it first in the listener's title ("sshd: /usr/sbin/sshd -D [listener] ...")."""
    try:
        pid = int((read(root, pidfile.lstrip("/")) or b"").split()[0])
        exe = os.readlink(f"/proc/{pid}/exe")
        title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except (ValueError, IndexError, OSError):
        return None  # no pid file, or no such process: nothing running to ask
    if os.path.realpath(exe) != os.path.realpath(SSHD):
        return None  # a stale pid file naming some other process
    name = title.split(": ", 1)[0] if ": " in title else os.path.basename(title)
    return f"the running sshd (pid {pid}, in {pidfile}) was started as {name}", name
