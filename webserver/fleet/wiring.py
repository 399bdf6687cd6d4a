"""The service's parts in a fleet: a hub replica (webhook + /fleet/v1 + sweep + LISTEN) or a
host's agent (the broker, asking the hub)."""

import logging
import os

from ..config import ConfigError, Settings

log = logging.getLogger("ssh-auth")
HUB_POOL = 40  # database connections per replica (requests, long-poll reads, the sweep)


class Parts:
    """What a role runs besides its main server: started before it, stopped after it."""

    def __init__(self):
        self.starts, self.stops = [], []

    def add(self, start, stop) -> None:
        self.starts.append(start)
        self.stops.append(stop)

    def start(self) -> None:
        for start in self.starts:
            start()

    def stop(self) -> None:
        for stop in reversed(self.stops):
            try:
                stop()
            except Exception:
                log.exception("stopping a part of the service failed")


def build_hub(settings: Settings):
    """(the hub's Flask app, its parts): the webhook on the shared logins, and /fleet/v1."""
    from ..app import create_app
    from ..wiring import phone_side
    from .database import Database, DatabaseUnavailable
    from .hub import Hub
    from .hub_api import bp
    from .listener import VerdictListener

    if os.stat(settings.config_path).st_mode & 0o007:
        raise ConfigError(
            f"{settings.config_path} holds database_url (a password) and every user can read "
            f"it: chmod o-rwx {settings.config_path}"
        )
    client, audit, verifier = phone_side(settings)
    database = Database(settings.database_url, max_size=HUB_POOL)
    _check_schema(database)
    hub = Hub(settings, database, client, audit, VerdictListener(database))
    app = create_app(settings, hub.logins, client, verifier)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # a verdict long-poll names up to 1024 logins
    app.extensions["ssh-auth-hub"] = hub
    app.extensions["ssh-auth-health"] = hub.health
    app.register_blueprint(bp)
    app.register_error_handler(DatabaseUnavailable, _database_down_page)
    parts = Parts()
    parts.add(hub.listener.start, hub.listener.stop)
    parts.add(hub.start, hub.stop)
    parts.add(lambda: None, database.close)
    return app, parts


def build_agent(settings: Settings):
    """(the host's broker, its parts): the broker with the hub as its gatekeeper."""
    from ..broker import Broker
    from .agent import ForwardingAudit, HubGatekeeper, VerdictPoller
    from .hub_client import HubClient, load_host_key

    client = HubClient(settings.hub_urls, settings.host_name, load_host_key(settings.host_key))
    poller = VerdictPoller(HubClient(settings.hub_urls, settings.host_name, client.key))
    audit = ForwardingAudit(settings.audit_log, client)
    audit.check()
    broker = Broker(settings, audit, HubGatekeeper(client, poller))
    parts = Parts()
    parts.add(poller.start, poller.stop)
    parts.add(audit.start, lambda: None)
    return broker, parts


def _database_down_page(error):
    """A phone's request while the database is down: nothing is decided, the login waits."""
    log.error("%s", error)
    return (
        "The sign-in service is briefly unavailable. Try again in a moment.\n",
        503,
        {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "5"},
    )


def _check_schema(database) -> None:
    """Refuse to start on a database whose schema is missing or older than this code's; start
    anyway when the database cannot be reached (logins are denied until it can)."""
    from .database import DatabaseUnavailable
    from .schema import LATEST, current

    try:
        version = current(database)
    except DatabaseUnavailable as error:
        log.warning("starting without the database: %s", error)
        return
    if version != LATEST:
        database.close()
        raise ConfigError(
            f"the database schema is at version {version}, this hub needs {LATEST}: "
            "run `ssh-auth fleet init-db`"
        )
