"""Install and uninstall: the drop-in from its one template, files, validation, rollback."""

import base64
import difflib
import ipaddress
import json
import os
import re
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .config import Settings, load_credentials
from .errors import InstallError
from .files import atomic_write
from .policy import is_exempt
from .registry import parse_entry
from .shim_build import archive as shim_archive
from .sshd_proof import (
    DROPIN,
    MATCH_LINE,
    OUR_BLOCKS,
    SSHD_CONFIG,
    Context,
    SshdConfigCopy,
    Verdict,
    exempt_by,
    probe_contexts,
    sshd_settings,
)

DEFAULT_SHIM = "/usr/local/lib/ssh-auth/shim.pyz"
SHIM_PYTHON = "/usr/bin/python3"  # the system interpreter every login user can run
FORWARDING_OFF = "DisableForwarding yes\n"
EXEMPT_BLOCK = """
# Logins from these networks skip the phone check (decided by sshd, not by what a client says).
Match Address {networks}
    ForceCommand none
"""


def render_dropin(
    shim: str = DEFAULT_SHIM,
    socket: str = "/run/ssh-auth/ssh-auth.sock",
    allow_forwarding: bool = False,
    exempt_networks: tuple[str, ...] = (),
    python: str = SHIM_PYTHON,
) -> str:
    """The drop-in's text: the ForceCommand, what stops it being bypassed, exempt networks."""
    for name, value in (("shim", shim), ("socket", socket), ("python", python)):
        if not value.startswith("/") or any(c.isspace() or c in "\"'\\" for c in value):
            raise ValueError(f"{name} path must be absolute, without spaces or quotes: {value!r}")
    networks = []
    for network in exempt_networks:
        try:
            networks.append(str(ipaddress.ip_network(network, strict=False)))
        except ValueError:
            raise ValueError(f"not a network address: {network!r} (e.g. 10.0.0.0/8)") from None
    template = files("webserver").joinpath("sshd_dropin.conf").read_text(encoding="utf-8")
    text = template.format(
        python=python, shim=shim, socket=socket, forwarding="" if allow_forwarding else FORWARDING_OFF
    )
    if networks:
        text += EXEMPT_BLOCK.format(networks=",".join(networks))
    return text


# --- install / uninstall ----------------------------------------------------------------------

SERVICE_USER = "ssh-auth"
ADMIN_GROUPS = ("sudo", "wheel", "admin")
CONFIG = "etc/ssh-auth/ssh-auth.conf"
CREDENTIALS = "etc/ssh-auth/tru.json"
SHIM = "usr/local/lib/ssh-auth/shim.pyz"
UNIT = "etc/systemd/system/ssh-auth.service"
MANIFEST = "var/lib/ssh-auth/install.json"
TUTORIAL_DIR = "usr/local/bin/tru-id-ssh-auth"
TUTORIAL_BACKUP = "etc/ssh/sshd_confige"
BLOCK_BEGIN = "# BEGIN ssh-auth (written by `ssh-auth install`; `ssh-auth uninstall` removes it)\n"
MATCH_BEGIN = (
    "# BEGIN ssh-auth Match blocks (written by `ssh-auth install`, last: a Match runs to the "
    "end of the file)\n"
)
BLOCK_END = "# END ssh-auth\n"
INCLUDES_DROPINS = re.compile(r"(?im)^\s*Include\s+\S*sshd_config\.d/\*\.conf\s*$")
TUTORIAL_FORCECOMMAND = re.compile(r"(?im)^\s*ForceCommand\s+\S*tru-id-ssh-auth.*\n?")
SHIM_PYTHON_MIN = (3, 9)
SHIM_PYTHON_CLAIM = "Debian 11+, Ubuntu 22.04+, RHEL 9+"
# Never ProtectProc= or ProcSubset=: the service finds each login's sshd session process in /proc
# (DESIGN §5), and either would hide it.
UNIT_TEMPLATE = """[Unit]
Description=ssh-auth: SIM-check multi-factor authentication for SSH (broker and webhook)
After=network-online.target
Wants=network-online.target

[Service]
User=ssh-auth
Group=ssh-auth
ExecStart={server} --config /etc/ssh-auth/ssh-auth.conf
RuntimeDirectory=ssh-auth
RuntimeDirectoryMode=0755
LogsDirectory=ssh-auth
UMask=0077
# 512 waiting logins hold two descriptors each, and the webhook up to 200 connections.
LimitNOFILE=16384
Restart=on-failure
RestartSec=2
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
SystemCallArchitectures=native
SystemCallFilter=@system-service
# Never ProtectProc= or ProcSubset=: the service finds each login's sshd processes in /proc.

[Install]
WantedBy=multi-user.target
"""


@dataclass
class Change:
    """One file as install wants it: new bytes (None: remove), mode and owner."""

    path: str
    data: bytes | None
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True)
class FileState:
    """One file as it is: bytes, mode, owner and group (what a restore must give back)."""

    data: bytes
    mode: int
    uid: int
    gid: int

    def recorded(self) -> dict:
        """The manifest's form (a manifest of the first release held only the bytes)."""
        data = base64.b64encode(self.data).decode()
        return {"data": data, "mode": f"{self.mode:04o}", "uid": self.uid, "gid": self.gid}


@dataclass
class InstallOptions:
    root: str = "/"
    credentials: str | None = None
    config: str | None = None
    public_url: str | None = None
    exempt_networks: tuple[str, ...] = ()
    allow_forwarding: bool = False
    dry_run: bool = False
    force: bool = False


class Installer:
    """Install, uninstall and validate against a root directory ('/' on a real server)."""

    def __init__(self, root: str = "/", say=print):
        self.root = Path(root)
        self.say = say

    def path(self, relative: str) -> Path:
        """Where a server path (relative, without the leading /) is under the root."""
        return self.root / relative

    def read(self, relative: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        try:
            return self.path(relative).read_bytes()
        except FileNotFoundError:
            return None

    def state(self, relative: str) -> FileState | None:
        """The file's bytes, mode and owner, or None if there is no such file."""
        data = self.read(relative)
        if data is None:
            return None
        info = self.path(relative).stat()
        return FileState(data, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)

    # --- planning ----------------------------------------------------------------------

    def plan(self, options: InstallOptions) -> list[Change]:
        """Every file install writes, as it should end up."""
        config_text = self._config_text(options)
        settings = Settings.parse(config_text, "/" + CONFIG)
        changes = [Change(CONFIG, config_text.encode(), 0o640, "root", SERVICE_USER)]
        credentials = self._credentials(options)
        if credentials is not None:
            changes.append(Change(CREDENTIALS, credentials, 0o600, SERVICE_USER, SERVICE_USER))
        # The tutorial's files are world-readable: its secret and everyone's phone numbers.
        for leftover in (f"{TUTORIAL_DIR}/tru.json", f"{TUTORIAL_DIR}/tru-id-ssh-auth.conf"):
            if self.read(leftover) is not None:
                changes.append(Change(leftover, None))
        changes.append(Change(SHIM, shim_archive(), 0o644))
        server = Path(sys.prefix) / "bin" / "ssh-auth-server"
        changes.append(Change(UNIT, UNIT_TEMPLATE.format(server=server).encode(), 0o644))
        dropin = render_dropin(
            "/" + SHIM, settings.socket, options.allow_forwarding, options.exempt_networks
        )
        changes += self._sshd_changes(dropin)
        return changes

    def _config_text(self, options: InstallOptions) -> str:
        existing = self.read(CONFIG)
        if options.config:
            text = Path(options.config).read_text(encoding="utf-8")
        elif existing is not None:
            text = existing.decode()
        elif options.public_url:
            text = (
                f"# ssh-auth settings: see README. Users: ssh-auth register-user NAME PHONE\n"
                f"public_url = {options.public_url}\n"
            )
        else:
            raise InstallError(
                "no configuration yet: give --config FILE or --public-url URL "
                "(the address the phone reaches, in front of the webhook)"
            )
        if options.public_url and "public_url" not in text:
            text += f"public_url = {options.public_url}\n"
        tutorial = self.read(f"{TUTORIAL_DIR}/tru-id-ssh-auth.conf")
        if tutorial is not None:
            for line in tutorial.decode(errors="replace").splitlines():
                entry = parse_entry(line)
                if entry and f"user={entry[0]}:" not in text:
                    text += f"user={entry[0]}:{entry[1]}\n"
        return text if text.endswith("\n") else text + "\n"

    def _credentials(self, options: InstallOptions) -> bytes | None:
        source = options.credentials
        if source is None and self.read(f"{TUTORIAL_DIR}/tru.json") is not None:
            source = str(self.path(f"{TUTORIAL_DIR}/tru.json"))
        if source is None:
            return self.read(CREDENTIALS)
        load_credentials(source, require_private=False)  # refuse a malformed file now
        return Path(source).read_bytes()

    def _sshd_changes(self, dropin: str) -> list[Change]:
        """The drop-in where sshd_config includes sshd_config.d, else marked blocks in it."""
        current = self.state(SSHD_CONFIG)
        if current is None:
            raise InstallError(f"{self.path(SSHD_CONFIG)} not found: is openssh-server installed?")
        text = current.data.decode()
        admins = OUR_BLOCKS.sub("", text)
        if INCLUDES_DROPINS.search(text):
            changes = [Change(DROPIN, dropin.encode(), 0o644)]
            if admins != text:  # an earlier install's blocks: the drop-in replaces them
                changes.append(Change(SSHD_CONFIG, admins.encode(), current.mode))
            return changes
        # Settings in a block at the very top (sshd takes the first value); a Match block in a
        # second block at the very end, since a Match runs to the next Match or the end of file.
        settings, matches = _split_at_match(dropin)
        if admins and not admins.endswith("\n"):
            admins += "\n"
        text = BLOCK_BEGIN + settings + BLOCK_END + admins
        if matches:
            text += MATCH_BEGIN + matches + BLOCK_END
        return [Change(SSHD_CONFIG, text.encode(), current.mode)]

    # --- install -----------------------------------------------------------------------

    def install(self, options: InstallOptions) -> bool:
        """Install; False when nothing changed. Validated, and rolled back on any failure."""
        self._refuse_old_python()
        self._sshd_valid_before()
        changes = self.plan(options)
        self._refuse_lockout(changes, options)
        todo = [c for c in changes if not self._is_right(c)]
        if not todo:
            self.say("ssh-auth is already installed as asked: nothing to change.")
            return False
        if options.dry_run:
            for change in todo:
                self.say(_diff(change.path, self.read(change.path), change.data))
            return True
        created_user = _passwd_entry(self.read("etc/passwd"), SERVICE_USER) is None
        uids = self._service_account()
        priors = {c.path: self.state(c.path) for c in todo}
        new_dirs = sorted(
            {
                str(d.relative_to(self.root))
                for c in todo
                for d in self.path(c.path).parents
                if d.is_relative_to(self.root) and d != self.root and not d.exists()
            }
        )
        try:
            for change in todo:
                self._apply(change, uids)
            self._validate(changes, options)
            self._record(priors, new_dirs, created_user)
        except BaseException:
            self._restore(priors)
            for directory in sorted(new_dirs, key=len, reverse=True):
                _remove_if_empty(self.path(directory))
            raise
        for change in todo:
            self.say(f"{'removed' if change.data is None else 'wrote'} /{change.path}")
        if any(c.path == f"{TUTORIAL_DIR}/tru.json" for c in todo):
            self.say(
                f"moved the API credentials out of /{TUTORIAL_DIR}/tru.json (readable by "
                f"every user) to /{CREDENTIALS} (mode 0600, owner {SERVICE_USER})"
            )
        if any(c.path == f"{TUTORIAL_DIR}/tru-id-ssh-auth.conf" for c in todo):
            self.say(
                f"moved the phone numbers out of /{TUTORIAL_DIR}/tru-id-ssh-auth.conf (readable "
                f"by every user) to /{CONFIG} (mode 0640, group {SERVICE_USER})"
            )
        self.say(
            "next: systemctl daemon-reload && systemctl enable --now ssh-auth, "
            "then reload sshd (systemctl reload ssh)"
        )
        return True

    def _is_right(self, change: Change) -> bool:
        """The file already has the change's bytes, mode, owner and group."""
        current = self.state(change.path)
        if change.data is None or current is None:
            return change.data is None and current is None
        service = _passwd_entry(self.read("etc/passwd"), SERVICE_USER)
        if service is None and SERVICE_USER in (change.owner, change.group):
            return False
        uid = service[0] if change.owner == SERVICE_USER else 0
        gid = service[1] if change.group == SERVICE_USER else 0
        return current == FileState(change.data, change.mode, uid, gid)

    def _refuse_old_python(self) -> None:
        ok, line = shim_python_check(str(self.root))
        if not ok:
            raise InstallError(line)

    def _refuse_lockout(self, changes: list[Change], options: InstallOptions) -> None:
        if options.force or options.exempt_networks:
            return
        config = next(c for c in changes if c.path == CONFIG).data.decode()
        settings = Settings.parse(config, "/" + CONFIG)
        registered = {entry[0] for line in config.splitlines() if (entry := parse_entry(line))}
        groups = self._groups()
        admins = {m for g in ADMIN_GROUPS for m in groups.get(g, ())} or {"root"}
        for admin in sorted(admins):
            member_of = [g for g, members in groups.items() if admin in members]
            if admin in registered or is_exempt(
                admin, member_of, settings.exempt_users, settings.exempt_groups
            ):
                return
        raise InstallError(
            f"refusing to install: no administrator ({', '.join(sorted(admins))}) is registered "
            "or exempt, so nobody could log in to fix a problem. Register one first "
            "(ssh-auth register-user NAME PHONE), exempt one (exempt_users), add "
            "--exempt-network CIDR, or pass --force."
        )

    def _groups(self) -> dict[str, set[str]]:
        groups: dict[str, set[str]] = {}
        text = (self.read("etc/group") or b"").decode(errors="replace")
        for line in text.splitlines():
            parts = line.split(":")
            if len(parts) >= 4:
                groups[parts[0]] = {m for m in parts[3].split(",") if m}
        return groups

    def members(self) -> dict[str, list[str]]:
        """Each group of the root's etc/group with its members, primary-group users included."""
        gids: dict[str, str] = {}
        for line in (self.read("etc/group") or b"").decode(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) >= 4:
                gids[parts[0]] = parts[2]
        primary: dict[str, set[str]] = {}
        for line in (self.read("etc/passwd") or b"").decode(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) >= 4:
                primary.setdefault(parts[3], set()).add(parts[0])
        groups = self._groups()
        return {g: sorted(groups[g] | primary.get(gid, set())) for g, gid in gids.items()}

    def _service_account(self) -> tuple[int, int]:
        """The service user's uid and gid, creating the account if needed."""
        found = _passwd_entry(self.read("etc/passwd"), SERVICE_USER)
        if found is None:
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
            if str(self.root) != "/":
                argv[1:1] = ["--root", str(self.root)]
            result = subprocess.run(argv, capture_output=True, text=True)
            if result.returncode:
                raise InstallError(f"cannot create the user {SERVICE_USER}: {result.stderr.strip()}")
            self.say(f"created the system user {SERVICE_USER}")
            found = _passwd_entry(self.read("etc/passwd"), SERVICE_USER)
        return found

    def _apply(self, change: Change, uids: tuple[int, int]) -> None:
        target = self.path(change.path)
        if change.data is None:
            target.unlink(missing_ok=True)
            return
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        uid = uids[0] if change.owner == SERVICE_USER else 0
        gid = uids[1] if change.group == SERVICE_USER else 0
        atomic_write(str(target), change.data, change.mode, uid, gid)

    def _restore(self, priors: dict[str, FileState | None]) -> None:
        """Every file exactly as it was: bytes, mode, owner and group (the service reads some)."""
        for relative, prior in priors.items():
            target = self.path(relative)
            if prior is None:
                target.unlink(missing_ok=True)
            else:
                atomic_write(str(target), prior.data, prior.mode, prior.uid, prior.gid)
        if priors:
            self.say("restored every file to what it was before")

    def _record(
        self, priors: dict[str, FileState | None], new_dirs: list[str], created_user: bool
    ) -> None:
        """Remember what was there before the first install, for uninstall."""
        manifest = self._manifest() or {"files": {}, "dirs": [], "created_user": False}
        for relative, prior in priors.items():
            manifest["files"].setdefault(relative, None if prior is None else prior.recorded())
        target = self.path(MANIFEST)
        for directory in [
            str(d.relative_to(self.root))
            for d in target.parents
            if d.is_relative_to(self.root) and d != self.root and not d.exists()
        ]:
            new_dirs.append(directory)
        manifest["dirs"] = sorted(set(manifest["dirs"]) | set(new_dirs))
        manifest["created_user"] = manifest["created_user"] or created_user
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        atomic_write(str(target), json.dumps(manifest, indent=1).encode(), 0o600)

    def _manifest(self) -> dict | None:
        data = self.read(MANIFEST)
        return json.loads(data) if data else None

    # --- validation --------------------------------------------------------------------

    def _sshd_valid_before(self) -> None:
        error = self._sshd_test()
        if error:
            raise InstallError(
                f"sshd's configuration is already invalid; fix it first, nothing was changed: {error}"
            )

    def _validate(self, changes: list[Change], options: InstallOptions) -> None:
        error = self._sshd_test()
        if error:
            raise InstallError(f"sshd -t refused the new configuration: {error}")
        settings = Settings.parse(next(c for c in changes if c.path == CONFIG).data.decode())
        verdicts, notes = self.prove(settings.socket, options.exempt_networks, options.allow_forwarding)
        for note in notes:
            self.say(f"note: {note}")
        for verdict in verdicts:
            refusal = verdict.refusal()
            if refusal:
                raise InstallError(refusal)

    def _sshd_test(self) -> str | None:
        # sshd -t insists on its privilege separation directory, which only its own unit makes.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with SshdConfigCopy(self.root, ours=True) as copy:
            result = subprocess.run(
                ["/usr/sbin/sshd", "-t", "-f", copy.top], capture_output=True, text=True
            )
        if result.returncode == 0:
            return None
        return result.stderr.strip() or f"exit {result.returncode}"

    def effective(self, address: str) -> dict[str, str]:
        """sshd's effective settings for a login from `address` (one `sshd -T -C` run)."""
        with SshdConfigCopy(self.root, ours=True) as copy:
            return sshd_settings(copy.top, Context(f"a login from {address}", addr=address))

    def prove(
        self, socket: str, exempt_networks=(), allow_forwarding: bool = False
    ) -> tuple[list["Verdict"], list[str]]:
        """sshd's effective settings without and with our lines, for every login that matters."""
        exempt = [ipaddress.ip_network(n, strict=False) for n in exempt_networks]
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with SshdConfigCopy(self.root, False) as admins, SshdConfigCopy(self.root, True) as ours:
            contexts, notes = probe_contexts(ours.matches, exempt, self.members())
            verdicts = [
                Verdict.judge(
                    context,
                    sshd_settings(admins.top, context),
                    sshd_settings(ours.top, context),
                    forced_command(socket),
                    exempt_by(context.addr, exempt),
                    allow_forwarding,
                )
                for context in contexts
            ]
        return verdicts, notes

    def installed_exempt_networks(self) -> tuple[str, ...]:
        """The networks our own lines exempt (the drop-in, or the blocks in sshd_config)."""
        ours = (self.read(DROPIN) or b"").decode(errors="replace")
        ours += "".join(OUR_BLOCKS.findall((self.read(SSHD_CONFIG) or b"").decode(errors="replace")))
        found = re.findall(r"(?im)^\s*Match\s+Address\s+(\S+)", ours)
        return tuple(network for line in found for network in line.split(","))

    # --- uninstall ---------------------------------------------------------------------

    def uninstall(self) -> None:
        """Return every file install touched to its bytes, mode and owner; keep a private backup."""
        manifest = self._manifest() or {}
        touched = dict(manifest.get("files", {}))
        backup = self._backup([*touched, TUTORIAL_BACKUP])
        for relative, recorded in touched.items():
            self._give_back(relative, recorded)
        self._remove_tutorial_leftovers()
        self.path(MANIFEST).unlink(missing_ok=True)
        for directory in sorted(manifest.get("dirs", []), key=len, reverse=True):
            _remove_if_empty(self.path(directory))
        if manifest.get("created_user"):
            argv = ["userdel", SERVICE_USER]
            if str(self.root) != "/":
                argv[1:1] = ["--root", str(self.root)]
            subprocess.run(argv, capture_output=True)
            self.say(f"removed the system user {SERVICE_USER}")
        if not touched:
            self.say("no record of an ssh-auth install here; removed tutorial leftovers only")
        if backup:
            self.say(f"backup of the removed files: {backup}")
        error = self._sshd_test()
        self.say(f"sshd -t: {error}" if error else "sshd -t: configuration OK")
        self.say(
            "now reload sshd (systemctl reload ssh) and stop the service "
            "(systemctl disable --now ssh-auth)"
        )

    def _backup(self, relatives: list[str]) -> Path | None:
        """Copy each file that exists into a 0700 directory, keeping its mode and owner."""
        backup = self.path(f"var/backups/ssh-auth-{time.strftime('%Y%m%d-%H%M%S')}")
        saved = False
        for relative in relatives:
            current = self.state(relative)
            if current is None:
                continue
            if not saved:  # the secrets inside are only as private as this directory
                backup.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                backup.mkdir(mode=0o700, exist_ok=True)
                os.chmod(backup, 0o700)
                saved = True
            (backup / relative).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(str(backup / relative), current.data, current.mode, current.uid, current.gid)
        return backup if saved else None

    def _give_back(self, relative: str, recorded: dict | str | None) -> None:
        """One file as the manifest recorded it before the first install (or remove it)."""
        target = self.path(relative)
        if recorded is None:
            target.unlink(missing_ok=True)
            return
        if isinstance(recorded, str):  # the first release recorded bytes only: never widen access
            current = self.state(relative)
            prior = FileState(
                base64.b64decode(recorded),
                current.mode if current else 0o600,
                current.uid if current else 0,
                current.gid if current else 0,
            )
        else:
            prior = FileState(
                base64.b64decode(recorded["data"]),
                int(recorded["mode"], 8),
                recorded["uid"],
                recorded["gid"],
            )
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        atomic_write(str(target), prior.data, prior.mode, prior.uid, prior.gid)

    def _remove_tutorial_leftovers(self) -> None:
        sshd_config = self.state(SSHD_CONFIG)
        if sshd_config is not None:
            cleaned = TUTORIAL_FORCECOMMAND.sub("", sshd_config.data.decode()).encode()
            if cleaned != sshd_config.data:
                atomic_write(
                    str(self.path(SSHD_CONFIG)),
                    cleaned,
                    sshd_config.mode,
                    sshd_config.uid,
                    sshd_config.gid,
                )
                self.say("removed the tutorial's ForceCommand from sshd_config")
        if self.read(TUTORIAL_BACKUP) is not None:
            self.path(TUTORIAL_BACKUP).unlink()
            self.say(f"removed the tutorial's backup /{TUTORIAL_BACKUP}")


def forced_command(socket: str) -> str:
    """The ForceCommand the drop-in sets, as `sshd -T` reports it."""
    return f"{SHIM_PYTHON} -I /{SHIM} create-check --socket {socket}"


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


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty, or gone: either way not ours to remove


def _split_at_match(text: str) -> tuple[str, str]:
    """(the settings, the first Match line onwards with the comments just above it)."""
    lines = text.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if MATCH_LINE.match(line)), None)
    if first is None:
        return text, ""
    while first > 0 and (not lines[first - 1].strip() or lines[first - 1].lstrip().startswith("#")):
        first -= 1
    return "".join(lines[:first]), "".join(lines[first:])


def _passwd_entry(passwd: bytes | None, name: str) -> tuple[int, int] | None:
    for line in (passwd or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == name:
            return int(parts[2]), int(parts[3])
    return None


def _diff(relative: str, old: bytes | None, new: bytes | None) -> str:
    if b"\0" in (old or b"") + (new or b"") or relative.endswith(".pyz"):
        action = "would be removed" if new is None else f"would be written ({len(new)} bytes)"
        return f"/{relative}: {action}"
    return (
        "".join(
            difflib.unified_diff(
                (old or b"").decode().splitlines(keepends=True),
                (new or b"").decode().splitlines(keepends=True),
                fromfile=f"/{relative}" if old is not None else "/dev/null",
                tofile=f"/{relative}" if new is not None else "/dev/null",
            )
        )
        or f"/{relative}: mode or owner only"
    )
