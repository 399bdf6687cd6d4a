"""The shim's entry (zipapp and `ssh-auth create-check`): parse argv, gate the login, exit."""

from __future__ import annotations

import argparse
import sys

from .protocol import DEFAULT_SOCKET


def main(argv=None) -> int:
    """`create-check [--socket PATH]`: the socket path comes from argv only, never the environment."""
    parser = argparse.ArgumentParser(prog="ssh-auth", description="SSH login gated by a phone check")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-check", help="gate this login with a phone check")
    create.add_argument("--socket", default=DEFAULT_SOCKET, help="the ssh-auth service's socket")
    args = parser.parse_args(argv)
    from .login import run

    return run(args.socket)


if __name__ == "__main__":
    sys.exit(main())
