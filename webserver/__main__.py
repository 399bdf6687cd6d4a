"""ssh-auth-server: load settings, build client + broker + app, serve the webhook and the socket."""

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading

from .config import DEFAULT_CONFIG, ConfigError, Settings, load_credentials
from .tunnel import open_public_url


def build(settings: Settings, poll_only: bool = False):
    """Every part of the service, wired from one Settings object."""
    from .app import create_app
    from .audit import Audit
    from .broker import Broker
    from .phonecheck import PhoneCheckClient, base_url_for
    from .registry import Registry
    from .signature import JwksCache, RedirectVerifier

    credentials = load_credentials(settings.credentials)
    residency = settings.data_residency or credentials.data_residency or "eu"
    try:
        base_url = settings.api_base_url or base_url_for(residency)
    except ValueError as error:
        raise ConfigError(f"{settings.credentials}: data_residency {error}") from None
    client = PhoneCheckClient(credentials, base_url)
    broker = Broker(
        settings, client, Registry(settings.config_path), Audit(settings.audit_log), poll_only=poll_only
    )
    verifier = RedirectVerifier(JwksCache(client.jwks), settings.webhook_url)
    return broker, create_app(settings, broker, client, verifier)


def serve(settings: Settings, poll_only: bool = False) -> None:
    """Run until SIGTERM/SIGINT: the broker in a thread, the webhook (waitress) in this one."""
    import waitress

    settings = dataclasses.replace(settings, public_url=open_public_url(settings))
    broker, app = build(settings, poll_only)
    host, port = settings.listen
    server = waitress.create_server(app, host=host, port=port, threads=16, ident="ssh-auth")
    broker_thread = threading.Thread(target=broker.serve_forever, name="broker", daemon=True)
    broker_thread.start()

    def stop(number, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log = logging.getLogger("ssh-auth")
    log.info(
        "webhook listening on http://%s:%s, public URL %s",
        host,
        server.effective_port,
        settings.public_url,
    )
    log.info("broker listening on %s", settings.socket)
    try:
        server.run()
    finally:
        broker.shutdown()
        server.close()
        if os.path.exists(settings.socket):
            os.unlink(settings.socket)


def main(argv=None, poll_only: bool = False) -> int:
    """Entry point: one clear line and exit 2 for a configuration problem, never a traceback."""
    parser = argparse.ArgumentParser(prog="ssh-auth-server", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="path of ssh-auth.conf")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        serve(Settings.load(args.config), poll_only)
    except ConfigError as error:
        print(f"ssh-auth-server: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"ssh-auth-server: cannot start: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
