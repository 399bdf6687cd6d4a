"""create_app(settings, broker, ...): the Flask webhook, its blueprint, headers and error pages."""

from dataclasses import dataclass

from flask import Flask

from .broker import Broker
from .config import Settings
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
    broker: Broker
    client: PhoneCheckClient
    verifier: RedirectVerifier


def create_app(
    settings: Settings, broker: Broker, client: PhoneCheckClient, verifier: RedirectVerifier
) -> Flask:
    """The webhook application; nothing is built at import time."""
    from .webhook import bp

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    app.extensions["ssh-auth"] = WebhookContext(settings, broker, client, verifier)
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
