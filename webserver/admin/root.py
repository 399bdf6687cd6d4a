"""A server's files under a root ('/' on a server): read and written with their mode and owner,
the changes install plans to them, and the manifest of what it changed (for rollback and
uninstall)."""

import base64
import difflib
import json
import stat
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write
from .layout import MANIFEST, SERVICE_USER


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

    @classmethod
    def from_record(cls, recorded: dict | str, current: "FileState | None") -> "FileState":
        """A file as the manifest recorded it; from a bytes-only record, never widen access."""
        if isinstance(recorded, str):
            mode, uid, gid = (current.mode, current.uid, current.gid) if current else (0o600, 0, 0)
            return cls(base64.b64decode(recorded), mode, uid, gid)
        data = base64.b64decode(recorded["data"])
        return cls(data, int(recorded["mode"], 8), recorded["uid"], recorded["gid"])


@dataclass
class Change:
    """One file as install wants it: new bytes (None: remove), mode and owner."""

    path: str
    data: bytes | None
    mode: int = 0o644
    owner: str | int = "root"  # a name, or a uid kept from before (a file given back)
    group: str | int = "root"

    @classmethod
    def giving_back(cls, path: str, recorded: dict | str | None, current) -> "Change":
        """A file as the manifest recorded it before the first install (None: removed)."""
        if recorded is None:
            return cls(path, None)
        prior = FileState.from_record(recorded, current)
        return cls(path, prior.data, prior.mode, prior.uid, prior.gid)

    def state(self, service: tuple[int, int]) -> FileState | None:
        """The file as this change leaves it (None: removed), the service user's ids given."""
        if self.data is None:
            return None
        return FileState(self.data, self.mode, *owner_ids(self, service))


def owner_ids(change: Change, service: tuple[int, int] | None) -> tuple[int, int] | None:
    """The uid and gid a change asks for (None: the service user it names does not exist yet)."""
    ids = []
    for name, index in ((change.owner, 0), (change.group, 1)):
        if isinstance(name, int):
            ids.append(name)
        elif name != SERVICE_USER:
            ids.append(0)
        elif service is None:
            return None
        else:
            ids.append(service[index])
    return ids[0], ids[1]


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

    def put(self, relative: str, state: FileState | None) -> None:
        """The file exactly as `state` has it (bytes, mode, owner and group); None: removed."""
        target = self.path(relative)
        if state is None:
            target.unlink(missing_ok=True)
            return
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        atomic_write(str(target), state.data, state.mode, state.uid, state.gid)

    def missing_parents(self, relative: str) -> list[str]:
        """The directories above a file, under the root, that writing it would create."""
        return [
            str(d.relative_to(self.root))
            for d in self.path(relative).parents
            if d.is_relative_to(self.root) and d != self.root and not d.exists()
        ]

    def record(self, priors: dict[str, FileState | None], new_dirs: list[str], created_user: bool):
        """Remember what was there before the first install (and what it created), for uninstall."""
        manifest = self.manifest() or {"files": {}, "dirs": [], "created_user": False}
        for relative, prior in priors.items():
            manifest["files"].setdefault(relative, None if prior is None else prior.recorded())
        manifest["dirs"] = sorted(set(manifest["dirs"]) | set(new_dirs))
        manifest["created_user"] = manifest["created_user"] or created_user
        self.put(MANIFEST, FileState(json.dumps(manifest, indent=1).encode(), 0o600, 0, 0))


def remove_if_empty(directory: Path) -> None:
    """rmdir, if nothing is in it (what is left was not ours to remove)."""
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty, or gone: either way not ours to remove


def diff(relative: str, old: bytes | None, new: bytes | None) -> str:
    """What a dry run shows for one file: a unified diff, or a line for a binary file."""
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
