"""phonecheck-emulator: serve the emulated API, or play a phone against a check URL."""

import argparse
import ssl
import sys

DEFAULT_CLIENT_ID = "emulator-client-id"
DEFAULT_CLIENT_SECRET = "emulator-client-secret"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phonecheck-emulator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the emulated PhoneCheck API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    serve.add_argument("--ttl", type=int, default=120, help="seconds a check lives")
    serve.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    serve.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    serve.add_argument("--rate-limit", type=int, default=6000, help="API calls per minute")
    serve.add_argument(
        "--public-url",
        help="the base URL phones reach the emulator by, in the check URLs it hands out "
        "(default: the one each request came to)",
    )
    serve.add_argument("--certfile", help="serve HTTPS with this certificate (PEM), as the API does")
    serve.add_argument("--keyfile", help="the certificate's private key (PEM)")
    serve.add_argument(
        "--phone-page",
        action="store_true",
        help="let a person pick the SIM on a page instead of the sandbox rule",
    )
    phone = commands.add_parser("phone", help="open a check URL like a phone on mobile data")
    phone.add_argument("check_url")
    phone.add_argument("--sim", help="the SIM's number (default: the network's sandbox rule)")
    phone.add_argument("--network-error", help="make the network fail with this error_code")
    answer = phone.add_mutually_exclusive_group()
    answer.add_argument("--approve", action="store_true", help="press Approve on the page")
    answer.add_argument("--deny", action="store_true", help="press Deny on the page")
    phone.add_argument("--pick", help="the number to pick when the page asks (number_match)")
    return parser


def serve(args) -> int:
    """Run the emulator until interrupted; prints its URL once it is listening."""
    from werkzeug.serving import make_server

    from .app import create_app
    from .control import Controls
    from .models import Model
    from .signing import Signer

    model = Model(args.client_id, args.client_secret, ttl=args.ttl, rate_limit=args.rate_limit)
    app = create_app(model, Signer(), Controls(), args.phone_page, args.public_url)
    tls = None
    if args.certfile:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.certfile, args.keyfile)
    server = make_server(args.host, args.port, app, threaded=True, ssl_context=tls)
    scheme = "https" if tls else "http"
    print(f"phonecheck-emulator listening on {scheme}://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def phone(args) -> int:
    """Play a phone (and, with --approve/--deny, the person answering the page)."""
    import requests

    from .phone import Phone, PhoneError

    device = Phone(say=lambda line: print(line, flush=True))
    try:
        page = device.scan(args.check_url, sim=args.sim, network_error=args.network_error)
        if args.approve or args.deny:
            page = device.answer(page, "approve" if args.approve else "deny", args.pick)
    except (PhoneError, requests.RequestException) as error:
        print(f"phonecheck-emulator: {error}", file=sys.stderr)
        return 1
    return 0 if page.status_code < 400 else 1


def main(argv=None) -> int:
    """Entry point of the phonecheck-emulator command."""
    args = build_parser().parse_args(argv)
    return serve(args) if args.command == "serve" else phone(args)


if __name__ == "__main__":
    sys.exit(main())
