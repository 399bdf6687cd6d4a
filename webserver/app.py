"""create_app(settings, broker, ...): the Flask webhook, its blueprint, headers and error pages."""

import logging
import socket
from dataclasses import dataclass

from flask import Flask
from werkzeug.exceptions import HTTPException

from .audit import LogLimit
from .config import Settings
from .logins import PendingLogins
from .phonecheck import PhoneCheckClient
from .signature import RedirectVerifier

log = logging.getLogger("ssh-auth.webhook")
limit = LogLimit(per_minute=10)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the URL holds the check's code
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


@dataclass(frozen=True)
class WebhookContext:
    """What the webhook's views need, built once by the process."""

    settings: Settings
    logins: PendingLogins
    client: PhoneCheckClient
    verifier: RedirectVerifier
    hostname: str


def create_app(
    settings: Settings,
    logins: PendingLogins,
    client: PhoneCheckClient,
    verifier: RedirectVerifier,
    hostname: str | None = None,
) -> Flask:
    """The webhook application; nothing is built at import time."""
    from .webhook import bp

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    app.extensions["ssh-auth"] = WebhookContext(
        settings, logins, client, verifier, hostname or socket.gethostname()
    )
    app.register_blueprint(bp)

    @app.after_request
    def harden(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.errorhandler(HTTPException)
    def plain_error(error):
        return f"{error.code} {error.name}\n", error.code, {"Content-Type": "text/plain"}

    @app.errorhandler(Exception)
    def internal_error(error):
        skipped = limit("exception")  # anyone on the internet could repeat a request that fails
        if skipped is not None:
            log.exception("webhook request failed (%d more not logged)", skipped)
        return "500 Internal Server Error\n", 500, {"Content-Type": "text/plain"}

    return app
