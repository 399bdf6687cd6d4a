"""`ssh-auth doctor` in a fleet: on a host, its key and its hub; on a hub, its database."""

import os
import stat

from ..config import Settings
from ..errors import SshAuthError


def check_agent(report, settings: Settings) -> None:
    """The host's key is its own and private, and a hub accepts a request signed with it."""
    from ..fleet.hub_client import HubClient, HubUnavailable, load_host_key

    path = settings.host_key
    try:
        info = os.stat(path)
        key = load_host_key(path)
    except (OSError, SshAuthError) as error:
        report.bad(f"host key: {error}", "run ssh-auth fleet join HUB_URL TOKEN (a token from the hub)")
        return
    report.ok(f"host key {path}: mode {stat.S_IMODE(info.st_mode):04o}")
    client = HubClient(settings.hub_urls, settings.host_name, key)
    try:
        client.post("/fleet/v1/verdicts", {"ids": [], "wait": 0}, timeout=10)
    except HubUnavailable as error:
        fixes = {
            "unreachable": "start the hub, or correct hub_urls (ssh-auth config set hub_urls URL)",
            "database": "start the hub's PostgreSQL (the hub answers, its database does not)",
            "refused": f"enrol again: on the hub, ssh-auth fleet add-host {settings.host_name}",
            "clock": "run NTP on this host and the hub: their clocks differ by over 5 minutes",
        }
        report.bad(f"the hub does not accept this host's requests: {error}", fixes[error.why])
        return
    report.ok(f"the hub accepts {settings.host_name}'s signed requests ({', '.join(settings.hub_urls)})")


def check_hub(report, settings: Settings) -> None:
    """The configuration keeps the database password private; the database answers, current."""
    from ..fleet.database import Database, DatabaseUnavailable
    from ..fleet.schema import LATEST, current

    mode = stat.S_IMODE(os.stat(settings.config_path).st_mode)
    if mode & 0o007:
        report.bad(
            f"{settings.config_path} holds database_url and others can read it (mode {mode:04o})",
            f"chmod 640 {settings.config_path}",
        )
    database = Database(settings.database_url, max_size=1)
    try:
        version = current(database)
    except DatabaseUnavailable as error:
        report.bad(f"database: {error}", "start PostgreSQL, or correct database_url")
        return
    finally:
        database.close()
    if version != LATEST:
        report.bad(
            f"database schema at version {version}, this hub needs {LATEST}", "ssh-auth fleet init-db"
        )
    else:
        report.ok(f"database answers, schema at version {version}")
