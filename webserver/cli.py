"""The venv's `ssh-auth` command: create-check runs the shim; everything else is administration."""

import sys


def main(argv=None) -> int:
    """Dispatch `ssh-auth <command>`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["create-check"]:
        from sshshim.__main__ import main as shim_main

        return shim_main(argv)
    from .admin import main as admin_main

    return admin_main(argv)


if __name__ == "__main__":
    sys.exit(main())
