"""The venv's `ssh-auth` command: create-check runs the shim; version says which one this is."""

import sys
from importlib.metadata import PackageNotFoundError, version


def main(argv=None) -> int:
    """Dispatch `ssh-auth <command>`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["create-check"]:
        from sshshim.__main__ import main as shim_main

        return shim_main(argv)
    if argv[:1] == ["version"]:
        try:
            print(f"ssh-auth {version('ssh-auth')}")
        except PackageNotFoundError:
            print("ssh-auth (not installed)")
        return 0
    print("usage: ssh-auth {create-check [--socket PATH] | version}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
