"""`ssh-auth fleet ...`: the hub's database and hosts (init-db, add-host, revoke-host, list-hosts)
on a hub; `join` on a host, which makes the host's key and turns its service into an agent."""

import base64
import getpass
import os
import pwd
import sys
from contextlib import closing

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..config import HOST_NAME, PARSERS, ConfigError, Settings
from ..errors import SshAuthError
from ..files import atomic_write
from .layout import SERVICE_USER
from .settings_file import set_settings


def hub_settings(config: str) -> Settings:
    """The settings of a hub (role = hub, with its database_url)."""
    settings = Settings.load(config)
    if settings.role != "hub":
        raise ConfigError(f"{config}: this is not a hub (role = {settings.role}); see docs/fleet.md")
    return settings


def database(settings: Settings):
    """The hub's database, from its settings (closed by the caller)."""
    from ..fleet.database import Database

    return Database(settings.database_url, max_size=2)


def init_db(args) -> int:
    """Create or migrate the schema; running it again changes nothing."""
    from ..fleet.schema import LATEST, migrate

    with closing(database(hub_settings(args.config))) as db:
        applied = migrate(db)
    if applied:
        print(f"database schema at version {LATEST} (applied {', '.join(map(str, applied))})")
    else:
        print(f"database schema already at version {LATEST}")
    return 0


def add_host(args) -> int:
    """Invite a host; print its one-time enrolment token and the command to run on it."""
    from ..fleet.hosts import ENROL_HOURS, Hosts

    if not HOST_NAME.fullmatch(args.name):
        raise ConfigError(f"host name {args.name!r}: use 1-63 letters, digits, '.', '_' or '-'")
    settings = hub_settings(args.config)
    with closing(database(settings)) as db:
        token = Hosts(db).add(args.name)
    print(f"invited {args.name}; its one-time enrolment token (valid {ENROL_HOURS} h):")
    print(f"  {token}")
    print(f"on that host, run `ssh-auth fleet join {settings.public_url or 'HUB_URL'}` and paste it")
    print("(not as an argument: every local user can read a command line)")
    return 0


def revoke_host(args) -> int:
    """Stop the host's next request; its waiting logins are denied now."""
    from ..audit import Audit
    from ..fleet.hub import Hub

    settings = hub_settings(args.config)
    with closing(database(settings)) as db:
        denied = Hub(settings, db, None, Audit()).revoke(args.name)  # no API call, no sweep
    print(f"revoked {args.name}" + (f"; denied its {denied} waiting logins" if denied else ""))
    return 0


def list_hosts(args) -> int:
    """Every host and its state: invited, joined or revoked."""
    from ..fleet.hosts import Hosts

    with closing(database(hub_settings(args.config))) as db:
        hosts = Hosts(db).all()
    for host in hosts:
        since = host.revoked_at or host.joined_at or host.created_at
        print(f"{host.name}\t{host.state}\tsince {since:%Y-%m-%d %H:%M}")
    return 0


class JoinError(SshAuthError):
    """The hub did not accept this host's enrolment."""


def join(args) -> int:
    """Make the host's key (or keep the one it has), register it with the token, become an agent."""
    try:
        (hub_url,) = PARSERS["hub_urls"](args.hub_url)
    except ValueError as error:
        raise ConfigError(f"{args.hub_url}: {error}") from None
    settings = Settings.load(args.config)  # a valid configuration before it is changed
    token = args.token or _read_token()
    key_path = args.host_key or settings.host_key
    key = _host_key(key_path)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        response = requests.post(
            f"{hub_url}/fleet/v1/join",
            json={"token": token, "public_key": base64.b64encode(public).decode()},
            timeout=10,
        )
    except requests.RequestException as error:
        raise JoinError(f"cannot reach the hub at {hub_url}: {type(error).__name__}") from None
    if response.status_code != 200:
        raise JoinError(
            f"the hub refused the enrolment (HTTP {response.status_code}): the token is unknown, "
            "used or expired; ask for a new one (ssh-auth fleet add-host on the hub)"
        )
    name = response.json().get("host", "")
    if not HOST_NAME.fullmatch(name):
        raise JoinError("the hub's answer names no valid host")
    set_settings(
        args.config,
        {"host_name": name, "hub_urls": hub_url, "host_key": key_path, "role": "agent"},
    )
    print(f"joined the fleet as {name}; restart ssh-auth-server (systemctl restart ssh-auth)")
    return 0


def _read_token() -> str:
    """The enrolment token from the terminal (not echoed) or from standard input."""
    if sys.stdin.isatty():
        token = getpass.getpass("enrolment token (from ssh-auth fleet add-host on the hub): ")
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise JoinError("no enrolment token given (paste the one ssh-auth fleet add-host printed)")
    return token


def _host_key(path: str) -> Ed25519PrivateKey:
    """The host's Ed25519 key: the existing one, else a new one readable by the service only."""
    from ..fleet.hub_client import load_host_key

    if os.path.exists(path):
        return load_host_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        owner = pwd.getpwnam(SERVICE_USER)
        uid, gid = owner.pw_uid, owner.pw_gid
    except KeyError:
        uid, gid = os.getuid(), os.getgid()
        print(f"note: no {SERVICE_USER} account: {path} is owned by the current user", file=sys.stderr)
    atomic_write(path, pem, 0o600, uid, gid)
    return key


def add_parsers(commands, default_config: str) -> None:
    """`ssh-auth fleet ...` and its subcommands."""
    fleet = commands.add_parser("fleet", help="fleet mode: the hub's database and hosts")
    actions = fleet.add_subparsers(dest="action", required=True)
    for name, helptext in (
        ("init-db", "create or migrate the hub's database schema (on the hub)"),
        ("add-host", "invite a host; prints its one-time enrolment token (on the hub)"),
        ("revoke-host", "stop a host's logins (on the hub)"),
        ("list-hosts", "every host and its state (on the hub)"),
        ("join", "enrol this host with the hub's token; this server becomes an agent"),
    ):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("--config", default=default_config)
        if name in ("add-host", "revoke-host"):
            action.add_argument("name")
        if name == "join":
            action.add_argument("hub_url", help="the hub's URL (https, or http on loopback)")
            action.add_argument(
                "token",
                nargs="?",
                help="the token `fleet add-host` printed (asked for, or read from standard input, "
                "when not given: an argument shows in the process list)",
            )
            action.add_argument("--host-key", help="where to keep the host's key (host_key)")


ACTIONS = {
    "init-db": init_db,
    "add-host": add_host,
    "revoke-host": revoke_host,
    "list-hosts": list_hosts,
    "join": join,
}


def run(args) -> int:
    return ACTIONS[args.action](args)
