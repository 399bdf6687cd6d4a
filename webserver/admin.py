"""The venv's `ssh-auth` admin commands: install, uninstall, users, allow-once, doctor, version."""

import argparse
import pwd
import re
import sys
import time
from importlib.metadata import PackageNotFoundError, version

from .config import DEFAULT_CONFIG, ConfigError
from .registry import RegistryError, check_username, entries, normalise_phone, set_line

DURATION = re.compile(r"(\d+)\s*([smhd])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssh-auth", description="SIM-check MFA for SSH")
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="install on this server (root)")
    install.add_argument("--root", default="/", help="install under another root (tests)")
    install.add_argument("--credentials", help="a tru.json from the tru.ID/IDlayr CLI")
    install.add_argument("--config", help="an ssh-auth.conf to install")
    install.add_argument("--public-url", help="the URL the phone reaches (when no --config)")
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
        help="keep port/agent forwarding (weakens the gate: see README)",
    )
    install.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    install.add_argument(
        "--force",
        action="store_true",
        help="install despite a lockout risk (never despite a login sshd -T shows bypassing the check)",
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
    doctor = commands.add_parser("doctor", help="check the installation, one line each")
    doctor.add_argument("--config", default=DEFAULT_CONFIG)
    doctor.add_argument("--root", default="/")
    commands.add_parser("version", help="print the version")
    return parser


def main(argv=None) -> int:
    """Run one admin command; errors are one line on stderr and a non-zero exit."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, RegistryError, OSError) as error:
        print(f"ssh-auth: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # InstallError and friends: one line, no traceback
        if type(error).__name__.endswith("Error") and type(error).__module__.startswith("webserver"):
            print(f"ssh-auth: {error}", file=sys.stderr)
            return 1
        raise


def register_user(args) -> int:
    """Check the name, the account and the number, then write the entry atomically."""
    user = check_username(args.user)
    phone = normalise_phone(args.phone)
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise RegistryError(f"no such user on this machine: {user}") from None
    if args.verify and not _verified(args.config, user, phone):
        return 1
    changed = set_line(args.config, "user", user, phone)
    print(f"registered {user} as +{phone}" if changed else f"{user} is already +{phone}")
    return 0


def _verified(config: str, user: str, phone: str) -> bool:
    """A full phone check on the number through the running service (QR, page, verdict)."""
    from sshshim.login import Denied, ask
    from sshshim.terminal import Terminal

    from .config import Settings

    try:
        ask(
            Settings.load(config).socket,
            Terminal.open(),
            {"op": "verify", "user": user, "phone": phone, "command": None, "connection": None},
        )
    except Denied as denied:
        print(f"ssh-auth: {denied} Not registered.", file=sys.stderr)
        return False
    return True


def unregister_user(args) -> int:
    user = check_username(args.user)
    if set_line(args.config, "user", user, None):
        print(f"unregistered {user}")
        return 0
    print(f"ssh-auth: {user} was not registered", file=sys.stderr)
    return 1


def list_users(args) -> int:
    for user, phone in entries(args.config):
        exists = "" if _exists(user) else "   (no such user on this machine)"
        print(f"{user}\t+{phone}{exists}")
    return 0


def allow_once(args) -> int:
    """A logged, expiring exemption, for a user who is roaming or has only Wi-Fi."""
    user = check_username(args.user)
    found = DURATION.fullmatch(args.duration.strip())
    if not found or int(found.group(1)) == 0:
        raise RegistryError(f"--for {args.duration!r}: give a duration such as 30m, 1h or 2d")
    seconds = int(found.group(1)) * SECONDS[found.group(2)]
    if seconds > 7 * 86400:
        raise RegistryError("--for: at most 7d; exempt the user in exempt_users instead")
    until = int(time.time()) + seconds
    set_line(args.config, "allow_once", user, str(until))
    print(
        f"{user} may log in without the phone until "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(until))} (each login is logged)"
    )
    return 0


def install(args) -> int:
    """Install the gate; the installer proves sshd's effective configuration or rolls back."""
    from .sshd_install import Installer, InstallOptions

    if args.allow_forwarding:
        print(
            "warning: --allow-forwarding keeps port and agent forwarding: a user who passed "
            "SSH authentication can forward ports with ssh -N, which never runs the phone "
            "check.",
            file=sys.stderr,
        )
    options = InstallOptions(
        args.root,
        args.credentials,
        args.config,
        args.public_url,
        tuple(args.exempt_network),
        args.allow_forwarding,
        args.dry_run,
        args.force,
    )
    Installer(args.root).install(options)
    return 0


def uninstall(args) -> int:
    """Give every file back as it was before install, keeping a private backup."""
    from .sshd_install import Installer

    Installer(args.root).uninstall()
    return 0


def doctor(args) -> int:
    """One line per check of the installation; non-zero if any check failed."""
    from .doctor import run_checks

    return run_checks(args.config, args.root)


def show_version(args) -> int:
    try:
        print(f"ssh-auth {version('ssh-auth')}")
    except PackageNotFoundError:
        print("ssh-auth (not installed as a package)")
    return 0


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


COMMANDS = {
    "install": install,
    "uninstall": uninstall,
    "register-user": register_user,
    "unregister-user": unregister_user,
    "list-users": list_users,
    "allow-once": allow_once,
    "doctor": doctor,
    "version": show_version,
}
