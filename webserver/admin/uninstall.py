"""Uninstall: every file install touched back to its bytes, mode and owner, a private backup."""

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from ..files import atomic_write
from .layout import MANIFEST, SERVICE_USER, SSHD_CONFIG, TUTORIAL_BACKUP, TUTORIAL_FORCECOMMAND
from .root import FileState, ServerRoot, remove_if_empty
from .sshd import Sshd


class Uninstaller(ServerRoot):
    """Undo an install under a root, as its manifest recorded it."""

    def uninstall(self) -> None:
        """Return every file install touched to its bytes, mode and owner; keep a private backup."""
        manifest = self.manifest() or {}
        touched = dict(manifest.get("files", {}))
        backup = self._backup([*touched, TUTORIAL_BACKUP])
        for relative, recorded in touched.items():  # as recorded before the first install
            prior = None if recorded is None else FileState.from_record(recorded, self.state(relative))
            self.put(relative, prior)
        self._remove_tutorial_leftovers()
        self.path(MANIFEST).unlink(missing_ok=True)
        for directory in sorted(manifest.get("dirs", []), key=len, reverse=True):
            remove_if_empty(self.path(directory))
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
        error = Sshd(self.root).test()
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

    def _remove_tutorial_leftovers(self) -> None:
        sshd_config = self.state(SSHD_CONFIG)
        if sshd_config is not None:
            cleaned = TUTORIAL_FORCECOMMAND.sub("", sshd_config.data.decode()).encode()
            if cleaned != sshd_config.data:
                self.put(SSHD_CONFIG, replace(sshd_config, data=cleaned))
                self.say("removed the tutorial's ForceCommand from sshd_config")
        if self.read(TUTORIAL_BACKUP) is not None:
            self.path(TUTORIAL_BACKUP).unlink()
            self.say(f"removed the tutorial's backup /{TUTORIAL_BACKUP}")
