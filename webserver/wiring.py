"""A single server's parts, wired from one Settings object; and the phone's side of them, which a
fleet's hub replica shares (fleet/wiring.py)."""

from .config import ConfigError, Settings, load_credentials


def phone_side(settings: Settings):
    """(API client, audit, redirect verifier): what a single server and a hub replica share."""
    from .audit import Audit
    from .phonecheck import PhoneCheckClient, base_url_for
    from .signature import JwksCache, RedirectVerifier

    credentials = load_credentials(settings.credentials)
    residency = settings.data_residency or credentials.data_residency or "eu"
    try:
        base_url = settings.api_base_url or base_url_for(residency)
    except ValueError as error:
        raise ConfigError(f"{settings.credentials}: data_residency {error}") from None
    client = PhoneCheckClient(credentials, base_url)
    audit = Audit(settings.audit_log)
    audit.check()
    return client, audit, RedirectVerifier(JwksCache(client.jwks), settings.webhook_url)


def build(settings: Settings, flow_class=None):
    """Every part of the service, wired from one Settings object (flow_class: how checks run)."""
    from .app import create_app
    from .broker import Broker
    from .flow import CheckFlow
    from .gatekeeper import LocalGatekeeper
    from .logins import PendingLogins
    from .registry import Registry

    client, audit, verifier = phone_side(settings)
    logins = PendingLogins()
    registry = Registry(settings.config_path)
    flow = (flow_class or CheckFlow)(settings, client, logins)
    broker = Broker(settings, audit, LocalGatekeeper(settings, registry, flow))
    return broker, create_app(settings, logins, client, verifier)
