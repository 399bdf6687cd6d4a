"""create_app(settings, broker, ...): the Flask webhook, its blueprint, headers and error pages."""

import socket
from dataclasses import dataclass

from flask import Flask

from .config import Settings
from .logins import PendingLogins
from .phonecheck import PhoneCheckClient
from .signature import RedirectVerifier

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

    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def plain_error(error):
        return f"{error.code} {error.name}\n", error.code, {"Content-Type": "text/plain"}

    return app
