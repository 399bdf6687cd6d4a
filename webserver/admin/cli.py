"""The venv's `ssh-auth` command: create-check runs the shim; everything else is administration."""

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from ..config import DEFAULT_CONFIG
from ..errors import ExitCode, SshAuthError
from . import fleet, users
from .layout import MODES


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its options."""
    parser = argparse.ArgumentParser(prog="ssh-auth", description="SIM-check MFA for SSH")
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="install on this server (root)")
    install.add_argument("--root", default="/", help="install under another root (tests)")
    install.add_argument("--credentials", help="a tru.json from the tru.ID/IDlayr CLI")
    install.add_argument("--config", help="an ssh-auth.conf to install")
    install.add_argument("--public-url", help="the URL the phone reaches (when no --config)")
    install.add_argument(
        "--admin",
        metavar="NAME:PHONE",
        help="register this administrator's phone (E.164), so install can prove someone can log in",
    )
    install.add_argument(
        "--exempt-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="logins from here skip the phone check (decided by sshd)",
    )
    install.add_argument(
        "--allow-forwarding",
        action="store_true",
        help="keep port/agent forwarding (weakens the gate: see docs/security.md)",
    )
    install.add_argument(
        "--mode",
        choices=MODES,
        help="pam: the phone check inside SSH authentication (every channel gated, forwarding "
        "kept); forcecommand: before each session (default: the mode installed now, else "
        "forcecommand)",
    )
    install.add_argument(
        "--pam-module",
        metavar="FILE",
        help="with --mode pam: a prebuilt pam_ssh_auth.so (make pam) instead of building it here",
    )
    install.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    install.add_argument(
        "--force",
        action="store_true",
        help="install despite a lockout risk, an exempt network that takes in this server, or a "
        "Match line that cannot be proven (never despite a login sshd -T shows bypassing the check)",
    )
    uninstall = commands.add_parser("uninstall", help="remove what install added (root)")
    uninstall.add_argument("--root", default="/")
    for name, helptext in (
        ("register-user", "register USER's phone number"),
        ("unregister-user", "forget USER's phone number"),
        ("list-users", "show who is registered"),
        ("allow-once", "let USER in without the phone for a while"),
    ):
        command = commands.add_parser(name, help=helptext)
        command.add_argument("--config", default=DEFAULT_CONFIG)
        if name != "list-users":
            command.add_argument("user")
        if name == "register-user":
            command.add_argument("phone", help="E.164, e.g. +44 7700 900123")
            command.add_argument(
                "--verify",
                action="store_true",
                help="run a real phone check on the number before saving it",
            )
        if name == "allow-once":
            command.add_argument(
                "--for", dest="duration", required=True, help="how long, e.g. 30m, 1h, 2d"
            )
    config = commands.add_parser("config", help="change a setting in ssh-auth.conf (atomically)")
    config_commands = config.add_subparsers(dest="action", required=True)
    config_set = config_commands.add_parser("set", help="set KEY to VALUE (checked first)")
    config_set.add_argument("--config", default=DEFAULT_CONFIG)
    config_set.add_argument("key")
    config_set.add_argument("value")
    doctor = commands.add_parser("doctor", help="check the installation, one line each")
    doctor.add_argument("--config", default=DEFAULT_CONFIG)
    doctor.add_argument("--root", default="/")
    fleet.add_parsers(commands, DEFAULT_CONFIG)
    commands.add_parser("version", help="print the version")
    return parser


def main(argv=None) -> int:
    """Run one command: our errors are one line and their exit code; anything else is a bug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["create-check"]:  # the tutorial's muscle memory: the same shim code
        from sshshim.__main__ import main as shim_main

        return shim_main(argv)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SshAuthError as error:
        print(f"ssh-auth: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the system said no: permissions, a missing file, a full disk
        where = f": {error.filename}" if error.filename else ""
        print(f"ssh-auth: {error.strerror or error}{where}", file=sys.stderr)
        return ExitCode.CANNOT
    except Exception as error:  # noqa: BLE001 - anything else is a bug, and we say so
        print(
            f"ssh-auth: internal error (a bug; please report it): {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return ExitCode.BUG


def install(args) -> int:
    """Install the gate; the installer proves sshd's effective configuration or rolls back."""
    from .install import Installer, InstallOptions

    if args.allow_forwarding and args.mode != "pam":
        print(
            "warning: --allow-forwarding keeps port and agent forwarding: a user who passed "
            "SSH authentication can forward ports with ssh -N, which never runs the phone "
            "check.",
            file=sys.stderr,
        )
    options = InstallOptions(
        root=args.root,
        credentials=args.credentials,
        config=args.config,
        public_url=args.public_url,
        admin=args.admin,
        exempt_networks=tuple(args.exempt_network),
        allow_forwarding=args.allow_forwarding,
        dry_run=args.dry_run,
        force=args.force,
        mode=args.mode,
        pam_module=args.pam_module,
    )
    Installer(args.root).install(options)
    return ExitCode.OK


def uninstall(args) -> int:
    """Give every file back as it was before install, keeping a private backup."""
    from .uninstall import Uninstaller

    Uninstaller(args.root).uninstall()
    return ExitCode.OK


def doctor(args) -> int:
    """One line per check of the installation; non-zero if any check failed."""
    from .doctor import run_checks

    return run_checks(args.config, args.root)


def config(args) -> int:
    """`config set KEY VALUE`: one setting, checked, written atomically (comments kept)."""
    from .settings_file import set_setting

    changed = set_setting(args.config, args.key, args.value)
    print(f"{args.key} = {args.value}" if changed else f"{args.key} is already {args.value}")
    return ExitCode.OK


def show_version(args) -> int:
    """The installed package's version."""
    try:
        print(f"ssh-auth {version('ssh-auth')}")
    except PackageNotFoundError:
        print("ssh-auth (not installed as a package)")
    return ExitCode.OK


COMMANDS = {
    "install": install,
    "uninstall": uninstall,
    "register-user": users.register_user,
    "unregister-user": users.unregister_user,
    "list-users": users.list_users,
    "allow-once": users.allow_once,
    "config": config,
    "doctor": doctor,
    "fleet": fleet.run,
    "version": show_version,
}


if __name__ == "__main__":
    sys.exit(main())
