"""Install and uninstall: the drop-in from its one template, files, validation, rollback."""

import base64
import difflib
import io
import ipaddress
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .config import Settings, load_credentials
from .files import atomic_write
from .policy import is_exempt
from .registry import parse_entry

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
SSHD_CONFIG = "etc/ssh/sshd_config"
DROPIN = "etc/ssh/sshd_config.d/ssh-auth.conf"
MANIFEST = "var/lib/ssh-auth/install.json"
TUTORIAL_DIR = "usr/local/bin/tru-id-ssh-auth"
TUTORIAL_BACKUP = "etc/ssh/sshd_confige"
BLOCK_BEGIN = "# BEGIN ssh-auth (written by `ssh-auth install`; `ssh-auth uninstall` removes it)\n"
BLOCK_END = "# END ssh-auth\n"
INCLUDES_DROPINS = re.compile(r"(?im)^\s*Include\s+\S*sshd_config\.d/\*\.conf\s*$")
TUTORIAL_FORCECOMMAND = re.compile(r"(?im)^\s*ForceCommand\s+\S*tru-id-ssh-auth.*\n?")
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
Restart=on-failure
RestartSec=2
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
LockPersonality=yes
CapabilityBoundingSet=
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


class InstallError(Exception):
    """The install or uninstall cannot go ahead; the message says why and what to do."""


@dataclass
class Change:
    """One file as install wants it: new bytes (None: remove), mode and owner."""

    path: str
    data: bytes | None
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


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


def shim_archive() -> bytes:
    """The shim zipapp, byte-for-byte the same for the same code (fixed timestamps, order)."""
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/python3 -I\n")
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        entries = {"__main__.py": b"import sys\nfrom sshshim.__main__ import main\nsys.exit(main())\n"}
        for item in sorted(files("sshshim").iterdir(), key=lambda p: p.name):
            if item.name.endswith(".py"):
                entries[f"sshshim/{item.name}"] = item.read_bytes()
        for name, data in sorted(entries.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


class Installer:
    """Install, uninstall and validate against a root directory ('/' on a real server)."""

    def __init__(self, root: str = "/", say=print):
        self.root = Path(root)
        self.say = say

    def path(self, relative: str) -> Path:
        return self.root / relative

    def read(self, relative: str) -> bytes | None:
        try:
            return self.path(relative).read_bytes()
        except FileNotFoundError:
            return None

    # --- planning ----------------------------------------------------------------------

    def plan(self, options: InstallOptions) -> list[Change]:
        """Every file install writes, as it should end up."""
        config_text = self._config_text(options)
        settings = Settings.parse(config_text, "/" + CONFIG)
        changes = [Change(CONFIG, config_text.encode(), 0o640, "root", SERVICE_USER)]
        credentials = self._credentials(options)
        if credentials is not None:
            changes.append(Change(CREDENTIALS, credentials, 0o600, SERVICE_USER, SERVICE_USER))
        tutorial_secret = f"{TUTORIAL_DIR}/tru.json"
        if self.read(tutorial_secret) is not None:
            changes.append(Change(tutorial_secret, None))
        changes.append(Change(SHIM, shim_archive(), 0o644))
        server = Path(sys.prefix) / "bin" / "ssh-auth-server"
        changes.append(Change(UNIT, UNIT_TEMPLATE.format(server=server).encode(), 0o644))
        dropin = render_dropin(
            "/" + SHIM, settings.socket, options.allow_forwarding, options.exempt_networks
        )
        changes.append(self._sshd_change(dropin))
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

    def _sshd_change(self, dropin: str) -> Change:
        sshd_config = self.read(SSHD_CONFIG)
        if sshd_config is None:
            raise InstallError(f"{self.path(SSHD_CONFIG)} not found: is openssh-server installed?")
        text = sshd_config.decode()
        if INCLUDES_DROPINS.search(text):
            return Change(DROPIN, dropin.encode(), 0o644)
        # No Include of sshd_config.d: a marked block at the very top (the first value wins).
        return Change(
            SSHD_CONFIG, (BLOCK_BEGIN + dropin + BLOCK_END + _without_block(text)).encode(), 0o644
        )

    # --- install -----------------------------------------------------------------------

    def install(self, options: InstallOptions) -> bool:
        """Install; False when nothing changed. Validated, and rolled back on any failure."""
        self._sshd_valid_before()
        changes = self.plan(options)
        self._refuse_lockout(changes, options)
        todo = [c for c in changes if self.read(c.path) != c.data or not self._mode_right(c)]
        if not todo:
            self.say("ssh-auth is already installed as asked: nothing to change.")
            return False
        if options.dry_run:
            for change in todo:
                self.say(_diff(change.path, self.read(change.path), change.data))
            return True
        created_user = _passwd_entry(self.read("etc/passwd"), SERVICE_USER) is None
        uids = self._service_account()
        priors = {c.path: self.read(c.path) for c in todo}
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
        self.say(
            "next: systemctl daemon-reload && systemctl enable --now ssh-auth, "
            "then reload sshd (systemctl reload ssh)"
        )
        return True

    def _mode_right(self, change: Change) -> bool:
        if change.data is None:
            return True
        info = self.path(change.path).stat()
        return stat.S_IMODE(info.st_mode) == change.mode

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

    def _restore(self, priors: dict[str, bytes | None]) -> None:
        for relative, data in priors.items():
            target = self.path(relative)
            if data is None:
                target.unlink(missing_ok=True)
            else:
                mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644
                atomic_write(str(target), data, mode)
        if priors:
            self.say("restored every file to what it was before")

    def _record(self, priors: dict[str, bytes | None], new_dirs: list[str], created_user: bool) -> None:
        """Remember what was there before the first install, for uninstall."""
        manifest = self._manifest() or {"files": {}, "dirs": [], "created_user": False}
        for relative, data in priors.items():
            manifest["files"].setdefault(
                relative, None if data is None else base64.b64encode(data).decode()
            )
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
        forced = self.effective("192.0.2.10").get("forcecommand")
        if forced != forced_command(settings.socket):
            raise InstallError(
                f"sshd would not run the phone check (ForceCommand is {forced!r}"
                " for a login from 192.0.2.10): another ForceCommand comes first?"
            )
        for network in options.exempt_networks:
            host = str(
                next(
                    iter(ipaddress.ip_network(network, strict=False).hosts()),
                    ipaddress.ip_network(network, strict=False).network_address,
                )
            )
            if self.effective(host).get("forcecommand") != "none":
                raise InstallError(f"sshd would still run the phone check for {network}")

    def _sshd_config_for_test(self) -> str:
        """sshd_config with Include paths moved under the root (the file itself under /)."""
        text = self.path(SSHD_CONFIG).read_text()
        if str(self.root) != "/":
            text = re.sub(
                r"(?im)^(\s*Include\s+)(/\S+)", lambda m: m.group(1) + str(self.root) + m.group(2), text
            )
        handle = tempfile.NamedTemporaryFile("w", suffix=".sshd_config", delete=False)
        with handle:
            handle.write(text)
        return handle.name

    def _sshd_test(self) -> str | None:
        # sshd -t insists on its privilege separation directory, which only its own unit makes.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        config = self._sshd_config_for_test()
        try:
            result = subprocess.run(
                ["/usr/sbin/sshd", "-t", "-f", config], capture_output=True, text=True
            )
        finally:
            os.unlink(config)
        if result.returncode == 0:
            return None
        return result.stderr.strip() or f"exit {result.returncode}"

    def effective(self, address: str) -> dict[str, str]:
        """sshd's effective settings for a login from `address` (one `sshd -T -C` run)."""
        config = self._sshd_config_for_test()
        try:
            result = subprocess.run(
                [
                    "/usr/sbin/sshd",
                    "-T",
                    "-f",
                    config,
                    "-C",
                    f"user=nobody,host=client.example,addr={address}",
                ],
                capture_output=True,
                text=True,
            )
        finally:
            os.unlink(config)
        return dict(line.partition(" ")[::2] for line in result.stdout.splitlines())

    # --- uninstall ---------------------------------------------------------------------

    def uninstall(self) -> None:
        """Return every file install touched to its bytes from before; keep a backup."""
        manifest = self._manifest()
        backup = self.path(f"var/backups/ssh-auth-{time.strftime('%Y%m%d-%H%M%S')}")
        saved = False
        touched = dict((manifest or {}).get("files", {}))
        for relative in list(touched) + [TUTORIAL_BACKUP]:
            current = self.read(relative)
            if current is not None:
                (backup / relative).parent.mkdir(parents=True, exist_ok=True)
                (backup / relative).write_bytes(current)
                saved = True
        for relative, prior in touched.items():
            target = self.path(relative)
            if prior is None:
                target.unlink(missing_ok=True)
            else:
                mode = 0o600 if relative.endswith("tru.json") else 0o644
                atomic_write(str(target), base64.b64decode(prior), mode)
        self._remove_tutorial_leftovers()
        self.path(MANIFEST).unlink(missing_ok=True)
        for directory in sorted((manifest or {}).get("dirs", []), key=len, reverse=True):
            _remove_if_empty(self.path(directory))
        if (manifest or {}).get("created_user"):
            argv = ["userdel", SERVICE_USER]
            if str(self.root) != "/":
                argv[1:1] = ["--root", str(self.root)]
            subprocess.run(argv, capture_output=True)
            self.say(f"removed the system user {SERVICE_USER}")
        if not touched:
            self.say("no record of an ssh-auth install here; removed tutorial leftovers only")
        if saved:
            self.say(f"backup of the removed files: {backup}")
        error = self._sshd_test()
        self.say(f"sshd -t: {error}" if error else "sshd -t: configuration OK")
        self.say(
            "now reload sshd (systemctl reload ssh) and stop the service "
            "(systemctl disable --now ssh-auth)"
        )

    def _remove_tutorial_leftovers(self) -> None:
        sshd_config = self.read(SSHD_CONFIG)
        if sshd_config is not None:
            cleaned = TUTORIAL_FORCECOMMAND.sub("", sshd_config.decode())
            if cleaned.encode() != sshd_config:
                atomic_write(str(self.path(SSHD_CONFIG)), cleaned.encode(), 0o644)
                self.say("removed the tutorial's ForceCommand from sshd_config")
        if self.read(TUTORIAL_BACKUP) is not None:
            self.path(TUTORIAL_BACKUP).unlink()
            self.say(f"removed the tutorial's backup /{TUTORIAL_BACKUP}")


def forced_command(socket: str) -> str:
    """The ForceCommand the drop-in sets, as `sshd -T` reports it."""
    return f"{SHIM_PYTHON} -I /{SHIM} create-check --socket {socket}"


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty, or gone: either way not ours to remove


def _without_block(text: str) -> str:
    start = text.find(BLOCK_BEGIN)
    end = text.find(BLOCK_END)
    return text if start < 0 or end < 0 else text[:start] + text[end + len(BLOCK_END) :]


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
        or f"/{relative}: mode only"
    )
