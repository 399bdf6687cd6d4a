"""A server's files under a root ('/' on a server): read with their mode and owner, and the
manifest of what install changed (for rollback and uninstall)."""

import base64
import json
import stat
from dataclasses import dataclass
from pathlib import Path

from .layout import MANIFEST


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


class ServerRoot:
    """Files under a root, as install and uninstall read them."""

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

    def manifest(self) -> dict | None:
        """What install recorded before its first change, or None."""
        data = self.read(MANIFEST)
        return json.loads(data) if data else None
