"""ssh-auth-server: load settings, build client + broker + app, serve the webhook and the socket."""

import argparse
import dataclasses
import logging
import os
import resource
import signal
import sys
import threading

from .config import DEFAULT_CONFIG, Settings
from .errors import ExitCode, SshAuthError
from .tunnel import open_tunnel
from .wiring import build

# The webhook's waitress limits, chosen rather than inherited (waitress's defaults: 100
# connections, a silent connection dropped after 120 s, looked for every 30 s, and select(),
# which fails past 1024 descriptors). A connection, however slow, holds one of CONNECTION_LIMIT
# slots until it has been silent for CHANNEL_TIMEOUT, noticed within CLEANUP_INTERVAL;
# connections past the limit wait in the kernel's queue (BACKLOG) in arrival order. So 2 x
# CONNECTION_LIMIT half-sent requests delay every new one by about 2 x (CHANNEL_TIMEOUT +
# CLEANUP_INTERVAL), and since the timeout is one of inactivity, a client that trickles a byte
# every few seconds is never dropped: production puts nginx in front (docs/reverse-proxy.md).
WEBHOOK_THREADS = 16
CONNECTION_LIMIT = 200  # a phone needs one for about a second; bounds descriptors and buffers
CHANNEL_TIMEOUT = 10  # seconds of silence (no request running) before a connection is dropped
CLEANUP_INTERVAL = 1  # seconds between waitress's sweeps for silent connections
BACKLOG = 1024  # connections the kernel queues past CONNECTION_LIMIT (capped by somaxconn)
MAX_REQUEST_HEADER_SIZE = 16 * 1024  # the phone's signed redirect URL is under 4 KiB
MAX_REQUEST_BODY_SIZE = 64 * 1024  # the app refuses bodies past 16 KiB; never spool more
# A hub replica holds one verdict long-poll (a thread) per host it serves, besides the phones'
# requests: past about 200 hosts per replica, add replicas.
HUB_THREADS = 256
HUB_CONNECTION_LIMIT = 1000


def serve(settings: Settings, flow_class=None) -> None:
    """Run until SIGTERM/SIGINT: the broker in a thread, the webhook (waitress) in this one."""

    def stop(number, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    tunnel = open_tunnel(settings)
    try:
        if tunnel:
            settings = dataclasses.replace(settings, public_url=tunnel.public_url)
        _serve(settings, flow_class)
    finally:
        if tunnel:
            tunnel.close()


def _serve(settings: Settings, flow_class) -> None:
    if settings.role == "agent":
        return _serve_agent(settings)
    import waitress

    from .fleet.wiring import Parts, build_hub

    if settings.role == "hub":
        broker, (app, parts) = None, build_hub(settings)
    else:
        (broker, app), parts = build(settings, flow_class), Parts()
    if broker:
        broker.bind()  # before any thread starts: the socket's umask cannot race another file
    host, port = settings.listen
    hub = settings.role == "hub"
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=HUB_THREADS if hub else WEBHOOK_THREADS,
        connection_limit=HUB_CONNECTION_LIMIT if hub else CONNECTION_LIMIT,
        channel_timeout=CHANNEL_TIMEOUT,
        cleanup_interval=CLEANUP_INTERVAL,
        backlog=BACKLOG,
        max_request_header_size=MAX_REQUEST_HEADER_SIZE,
        max_request_body_size=MAX_REQUEST_BODY_SIZE,
        asyncore_use_poll=True,  # select() fails once a descriptor number passes 1024
        ident="ssh-auth",
    )
    parts.start()
    if broker:
        threading.Thread(target=broker.serve_forever, name="broker", daemon=True).start()

    log = logging.getLogger("ssh-auth")
    log.info(
        "%s listening on http://%s:%s, public URL %s",
        "hub" if hub else "webhook",
        host,
        server.effective_port,
        settings.public_url,
    )
    if broker:
        log.info("broker listening on %s", settings.socket)
    api = settings.api_base_url or "https://"
    if settings.insecure_api_base_url and not api.startswith("https://"):
        log.warning("insecure_api_base_url: the API is reached over plain HTTP (%s)", api)
    try:
        server.run()
    finally:
        if broker:
            broker.shutdown()
        server.close()
        parts.stop()
        if broker and os.path.exists(settings.socket):
            os.unlink(settings.socket)


def _serve_agent(settings: Settings) -> None:
    """A fleet host: the broker's socket only; the hub has the webhook, the API and the state."""
    from .fleet.wiring import build_agent

    broker, parts = build_agent(settings)
    broker.bind()
    parts.start()
    logging.getLogger("ssh-auth").info(
        "agent %s listening on %s, hub %s",
        settings.host_name,
        settings.socket,
        ", ".join(settings.hub_urls),
    )
    threading.Thread(target=broker.serve_forever, name="broker", daemon=True).start()
    try:
        while True:
            signal.pause()  # until SIGTERM or SIGINT ends the process
    finally:
        broker.shutdown()
        parts.stop()
        if os.path.exists(settings.socket):
            os.unlink(settings.socket)


def _raise_open_file_limit() -> None:
    """Up to the hard limit: 512 waiting logins hold two descriptors each, plus the webhook's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None, flow_class=None) -> int:
    """Entry point: our errors are one line and their exit code; anything else is a bug."""
    parser = argparse.ArgumentParser(prog="ssh-auth-server", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="path of ssh-auth.conf")
    args = parser.parse_args(argv)
    os.umask(0o077)  # files the service makes (audit log, balance, ngrok.yml) are its own
    _raise_open_file_limit()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        serve(Settings.load(args.config), flow_class)
    except SshAuthError as error:
        print(f"ssh-auth-server: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the system said no: an address in use, a directory missing
        print(f"ssh-auth-server: cannot start: {error}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        pass
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
