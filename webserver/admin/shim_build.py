"""The one builder of the shim zipapp (make shim, the installer and the tests all use it)."""

import io
import os
import sys
import tempfile
import zipfile
from importlib.resources import files

SHEBANG = b"#!/usr/bin/python3 -I\n"

# The archive's entry. It runs before any sshshim module is parsed, so it is written in syntax every
# Python 3 reads: an older system Python gets one line and a deny (exit 1), never a traceback. It
# exits with main()'s status itself (zipapp -m would drop it: a deny must exit 1).
STUB = """\
import sys

if sys.version_info < (3, 9):
    sys.stderr.write(
        "ssh-auth: this server's Python is %d.%d; the phone check needs Python 3.9 or later."
        " Access denied.\\n" % tuple(sys.version_info[:2])
    )
    sys.exit(1)

from sshshim.__main__ import main

sys.exit(main())
"""


def archive() -> bytes:
    """The shim zipapp, byte-for-byte the same for the same code (fixed timestamps and order)."""
    entries = {"__main__.py": STUB.encode()}
    for item in files("sshshim").iterdir():
        if item.name.endswith(".py"):
            entries[f"sshshim/{item.name}"] = item.read_bytes()
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in sorted(entries.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zipped.writestr(info, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def write(path: str) -> None:
    """Write the archive to path atomically (mode 0644), so a concurrent reader never sees half."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".shim-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(archive())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv=None) -> int:
    """`python -m webserver.admin.shim_build OUT`: the Makefile's shim rule."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m webserver.admin.shim_build OUT\n")
        return 2
    write(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
