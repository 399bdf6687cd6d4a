"""Who is registered: register-user (optionally verifying the phone first), unregister-user,
list-users, allow-once."""

import pwd
import re
import sys
import time

from sshshim.protocol import OP_VERIFY

from ..registry import RegistryError, check_username, entries, normalise_phone, set_line

DURATION = re.compile(r"(\d+)\s*([smhd])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register_user(args) -> int:
    """Check the name, the account and the number, then write the entry atomically."""
    user = check_username(args.user)
    phone = normalise_phone(args.phone)
    registry = _fleet_registry(args.config)
    if registry:
        if args.verify:
            raise RegistryError(
                "--verify runs through a server's own socket; a hub has none: register the "
                "number, then log in once to a host to check it"
            )
        changed = _on_hub(registry, lambda r: r.register(user, phone))
        print(
            f"registered {user} as +{phone} for the fleet" if changed else f"{user} is already +{phone}"
        )
        return 0
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

    from ..config import Settings

    try:
        ask(
            Settings.load(config).socket,
            Terminal.open(),
            {"op": OP_VERIFY, "user": user, "phone": phone, "command": None, "connection": None},
        )
    except Denied as denied:
        print(f"ssh-auth: {denied} Not registered.", file=sys.stderr)
        return False
    return True


def unregister_user(args) -> int:
    """Forget a user's number (their logins are then 'unregistered')."""
    user = check_username(args.user)
    registry = _fleet_registry(args.config)
    if registry and _on_hub(registry, lambda r: r.unregister(user)):
        print(f"unregistered {user} from the fleet")
        return 0
    if not registry and set_line(args.config, "user", user, None):
        print(f"unregistered {user}")
        return 0
    print(f"ssh-auth: {user} was not registered", file=sys.stderr)
    return 1


def list_users(args) -> int:
    """Every registered user and number, in file order; flags accounts that do not exist."""
    registry = _fleet_registry(args.config)
    if registry:
        for user, phone in _on_hub(registry, lambda r: r.entries()):
            print(f"{user}\t+{phone}")  # accounts live on the hosts, not on the hub
        return 0
    for user, phone in entries(args.config):
        missing = "" if exists(user) else "   (no such user on this machine)"
        print(f"{user}\t+{phone}{missing}")
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
    registry = _fleet_registry(args.config)
    if registry:
        if not _on_hub(registry, lambda r: r.allow_once(user, until)):
            raise RegistryError(f"{user} is not registered in the fleet")
    else:
        set_line(args.config, "allow_once", user, str(until))
    print(
        f"{user} may log in without the phone until "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(until))} (each login is logged)"
    )
    return 0


def exists(user: str) -> bool:
    """Whether the account is in the password database."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _fleet_registry(config: str):
    """The fleet's registry when this is a hub; None on a single server; an error on an agent."""
    from ..config import Settings

    if _role(config) == "standalone":
        return None  # a single server's registry is its own file, valid settings or not
    settings = Settings.load(config)
    if settings.role == "agent":
        raise RegistryError("this host is a fleet agent: register users on the hub")
    if settings.role != "hub":
        return None
    from ..fleet.database import Database
    from ..fleet.shared_policy import SharedRegistry

    return SharedRegistry(Database(settings.database_url, max_size=2))


def _on_hub(registry, action):
    """Run one registry action on the hub's database, then close it."""
    try:
        return action(registry)
    finally:
        registry.database.close()


def _role(config: str) -> str:
    """The file's `role` (standalone when none, or when the file does not exist yet)."""
    try:
        with open(config, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return "standalone"
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "role" and not line.lstrip().startswith("#"):
            return value.strip()
    return "standalone"
