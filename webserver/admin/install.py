"""The install transaction: plan every file, write, prove, roll back on failure; and uninstall."""

import ipaddress
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import Settings, load_credentials
from ..errors import InstallError
from ..registry import RegistryError, check_username, normalise_phone, parse_entry
from .dropin import render_dropin, render_pam_dropin, split_at_match
from .exempt_networks import WHO, takes_in_server
from .layout import (
    BLOCK_BEGIN,
    BLOCK_END,
    CONFIG,
    CREDENTIALS,
    DROPIN,
    FORCECOMMAND,
    INCLUDES_DROPINS,
    MANIFEST,
    MATCH_BEGIN,
    MODES,
    OUR_BLOCKS,
    PAM,
    PAM_STACK,
    SERVICE_USER,
    SHIM,
    SSHD_CONFIG,
    TUTORIAL_DIR,
    UNIT,
)
from .pam_files import (
    UNREADABLE_ADVICE,
    installed_mode,
    pam_changes,
    stack_problem,
    stack_refusal,
)
from .pam_proof import stack_proof
from .pam_service import service_refusal
from .proof import BYPASS_ADVICE, PROBE_ADDRESSES, grace_refusal
from .root import Change, FileState, ServerRoot, diff, owner_ids, remove_if_empty
from .shim_build import archive as shim_archive
from .sshd import Sshd
from .system import (
    ensure_service_account,
    passwd_entry,
    refuse_lockout,
    refuse_pam_lockout,
    shim_python_check,
)
from .unit import render_unit

PAM_ROOT_SET = re.compile(r"(?m)^\s*pam_root\s*=")


@dataclass
class InstallOptions:
    root: str = "/"
    credentials: str | None = None
    config: str | None = None
    public_url: str | None = None
    admin: str | None = None  # NAME:PHONE, registered with the configuration
    exempt_networks: tuple[str, ...] = ()
    allow_forwarding: bool = False
    dry_run: bool = False
    force: bool = False
    mode: str | None = None  # forcecommand or pam; None: the mode installed now, else forcecommand
    pam_module: str | None = None  # a prebuilt module for pam mode (else it is built here)


class Installer(ServerRoot):
    """Install and validate against a root directory ('/' on a server)."""

    def __init__(self, root: str = "/", say=print):
        super().__init__(root, say)
        self.sshd = Sshd(self.root)
        self._effective: dict[str, dict[str, str]] = {}

    # --- planning ----------------------------------------------------------------------

    def plan(self, options: InstallOptions) -> list[Change]:
        """Every file install writes, as it should end up."""
        options = self._with_mode(options)
        config_text = self._config_text(options)
        # In auth-time mode the service refuses root at once unless sshd lets root use
        # keyboard-interactive at all (otherwise sshd refuses root after the phone approved).
        root_login = self.effective_for("root").get("permitrootlogin") if options.mode == PAM else None
        if root_login == "yes" and not PAM_ROOT_SET.search(config_text):
            config_text += "pam_root = check\n"
        settings = Settings.parse(config_text, "/" + CONFIG)
        changes = [Change(CONFIG, config_text.encode(), 0o640, "root", SERVICE_USER)]
        credentials = self._credentials(options)
        if credentials is not None:
            changes.append(Change(CREDENTIALS, credentials, 0o600, SERVICE_USER, SERVICE_USER))
        # The tutorial's files are world-readable: its secret and everyone's phone numbers.
        for leftover in (f"{TUTORIAL_DIR}/tru.json", f"{TUTORIAL_DIR}/tru-id-ssh-auth.conf"):
            if self.read(leftover) is not None:
                changes.append(Change(leftover, None))
        if options.mode == FORCECOMMAND:
            changes.append(Change(SHIM, shim_archive(), 0o644))
        elif self.read(SHIM) is not None:  # auth-time mode runs no shim
            changes.append(Change(SHIM, None))
        server = Path(sys.prefix) / "bin" / "ssh-auth-server"
        changes.append(Change(UNIT, render_unit(str(server)).encode(), 0o644))
        if options.mode == PAM:
            dropin = render_pam_dropin(settings.ttl, options.exempt_networks)
        else:
            dropin = render_dropin(
                "/" + SHIM, settings.socket, options.allow_forwarding, options.exempt_networks
            )
        changes += self._sshd_changes(dropin)
        return changes + pam_changes(self, options.mode, settings, options.pam_module)

    def effective_for(self, user: str) -> dict[str, str]:
        """sshd's effective settings for a plain login as `user` (asked once per user)."""
        if user not in self._effective:
            self._effective[user] = self.sshd.effective(PROBE_ADDRESSES[0], user)
        return self._effective[user]

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
        if options.admin:
            name, phone = self._admin(options.admin)
            text = text if text.endswith("\n") else text + "\n"
            if f"user={name}:{phone}\n" not in text:
                text += f"user={name}:{phone}\n"
        tutorial = self.read(f"{TUTORIAL_DIR}/tru-id-ssh-auth.conf")
        if tutorial is not None:
            for line in tutorial.decode(errors="replace").splitlines():
                entry = parse_entry(line)
                if entry and f"user={entry[0]}:" not in text:
                    text += f"user={entry[0]}:{entry[1]}\n"
        return text if text.endswith("\n") else text + "\n"

    def _admin(self, admin: str) -> tuple[str, str]:
        """NAME:PHONE for --admin: an account of this server and a number in E.164 form."""
        name, sep, phone = admin.partition(":")
        if not sep:
            raise InstallError(f"--admin {admin!r}: give NAME:PHONE, e.g. alice:+447700900123")
        try:
            name, phone = check_username(name.strip()), normalise_phone(phone)
        except RegistryError as error:
            raise InstallError(f"--admin: {error}") from None
        if passwd_entry(self.root, name) is None:
            raise InstallError(f"--admin: no such user on this machine: {name}")
        return name, phone

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
        settings, matches = split_at_match(dropin)
        if admins and not admins.endswith("\n"):
            admins += "\n"
        text = BLOCK_BEGIN + settings + BLOCK_END + admins
        if matches:
            text += MATCH_BEGIN + matches + BLOCK_END
        return [Change(SSHD_CONFIG, text.encode(), current.mode)]

    # --- install -----------------------------------------------------------------------

    def install(self, options: InstallOptions) -> bool:
        """Install; False when nothing changed. Validated, and rolled back on any failure."""
        options = self._with_mode(options)
        if not options.force:
            _refuse_exempting_the_server(options.exempt_networks)
        if options.mode == FORCECOMMAND:
            self._refuse_old_python()
        self._sshd_valid_before()
        if options.mode == PAM:
            refusal = service_refusal(self.root, self.effective_for("root"))
            if refusal:
                raise InstallError(
                    f"refusing to install --mode pam: {refusal} (start sshd as sshd, or use "
                    "--mode forcecommand)"
                )
        changes = self.plan(options)
        self._refuse_lockout(changes, options)
        todo = [c for c in changes if not self._is_right(c)]
        if not todo:  # proven again: a Match block added since may bypass what is installed
            self._validate(changes, options)
            self.say("ssh-auth is already installed as asked: nothing to change.")
            return False
        if options.dry_run:
            for change in todo:
                self.say(diff(change.path, self.read(change.path), change.data))
            return True
        created_user = passwd_entry(self.root, SERVICE_USER) is None
        uids = ensure_service_account(self.root, self.say)
        priors = {c.path: self.state(c.path) for c in todo}
        new_dirs = sorted({d for p in [*priors, MANIFEST] for d in self.missing_parents(p)})
        try:
            for change in todo:
                self.put(change.path, change.state(uids))
            self._validate(changes, options)
            self.record(priors, new_dirs, created_user)
        except BaseException:
            for relative, prior in priors.items():  # bytes, mode, owner and group, as they were
                self.put(relative, prior)
            self.say("restored every file to what it was before")
            for directory in sorted(new_dirs, key=len, reverse=True):
                remove_if_empty(self.path(directory))
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
        if options.mode == PAM:
            self.say(
                "auth-time mode: every login now needs a key, then the phone; keep this session "
                "open until a new login works"
            )
        return True

    def _with_mode(self, options: InstallOptions) -> InstallOptions:
        """The options with their mode settled: as asked, else as installed, else forcecommand."""
        mode = options.mode or installed_mode(self.root) or FORCECOMMAND
        if mode not in MODES:
            raise InstallError(f"--mode {mode}: give {' or '.join(MODES)}")
        if mode != PAM and options.pam_module:
            raise InstallError("--pam-module is for --mode pam (forcecommand mode runs no PAM module)")
        if mode == PAM and options.allow_forwarding:
            raise InstallError(
                "--allow-forwarding is for --mode forcecommand: auth-time mode leaves forwarding "
                "as your sshd configuration has it"
            )
        return replace(options, mode=mode)

    def _is_right(self, change: Change) -> bool:
        """The file already has the change's bytes, mode, owner and group."""
        current = self.state(change.path)
        if change.data is None or current is None:
            return change.data is None and current is None
        ids = owner_ids(change, passwd_entry(self.root, SERVICE_USER))
        return ids is not None and current == FileState(change.data, change.mode, *ids)

    def _refuse_old_python(self) -> None:
        ok, line = shim_python_check(str(self.root))
        if not ok:
            raise InstallError(line)

    def _refuse_lockout(self, changes: list[Change], options: InstallOptions) -> None:
        config_text = next(c for c in changes if c.path == CONFIG).data.decode()
        if options.force:
            return
        if options.mode == PAM:
            exempt = bool(options.exempt_networks)
            refuse_pam_lockout(self.root, config_text, self.effective_for, exempt)
        elif not options.exempt_networks:
            refuse_lockout(self.root, config_text)

    # --- validation --------------------------------------------------------------------

    def _sshd_valid_before(self) -> None:
        error = self.sshd.test()
        if error:
            raise InstallError(
                f"sshd's configuration is already invalid; fix it first, nothing was changed: {error}"
            )

    def _validate(self, changes: list[Change], options: InstallOptions) -> None:
        error = self.sshd.test()
        if error:
            raise InstallError(f"sshd -t refused the new configuration: {error}")
        settings = Settings.parse(next(c for c in changes if c.path == CONFIG).data.decode())
        verdicts, notes = self.sshd.prove(
            settings.socket, options.exempt_networks, options.allow_forwarding, options.mode
        )
        if notes and not options.force:  # a Match no probe login reaches could bypass the check
            raise InstallError(
                f"refusing to install: {'; '.join(notes)}, so what sshd gives such a login cannot "
                "be proven (change the Match line, or pass --force to install without that proof)"
            )
        for note in notes:
            self.say(f"note: {note}; not proven (--force)")
        for verdict in verdicts:
            refusal = verdict.refusal()
            if refusal:
                raise InstallError(refusal)
        if options.mode == PAM:
            grace = grace_refusal(verdicts[0].effective, settings.ttl)
            if grace:
                raise InstallError(f"refusing to install: {grace}{BYPASS_ADVICE}")
            stack = (self.read(PAM_STACK) or b"").decode(errors="surrogateescape")
            problem = stack_problem(self.root, stack)
            if problem:
                raise InstallError(f"refusing to install: {problem} {UNREADABLE_ADVICE}")
            refusal = stack_refusal(self.root, stack)
            if refusal:
                raise InstallError(
                    f"refusing to install: {refusal} (take them out of sshd's auth stack, "
                    "and install again)"
                )
            refusal = stack_proof(self.root)  # and what libpam itself does with it
            if refusal:
                raise InstallError(f"refusing to install: {refusal}")


def _refuse_exempting_the_server(networks: tuple[str, ...]) -> None:
    """An exempt network must not take in the server itself (unless --force)."""
    for network in networks:
        what = takes_in_server(network)
        if what:
            shown = ipaddress.ip_network(network, strict=False)
            raise InstallError(
                f"refusing to install: the exempt network {shown} takes in {what}: {WHO} would log "
                "in there without the phone. Leave it out, or pass --force."
            )
