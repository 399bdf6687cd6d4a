"""The emulator's routes: parse the request, call the model, render the answer. Nothing else."""

import socket
import time
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from flask import Flask, Response, current_app, g, jsonify, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from . import problems
from .control import Controls, Fault
from .models import Model
from .signing import Signer

API_ENDPOINTS = {"token", "create", "get", "patch", "redirect", "jwks"}


def create_app(
    model: Model,
    signer: Signer,
    controls: Controls,
    phone_page: bool = False,
    public_url: str | None = None,
) -> Flask:
    """The emulated PhoneCheck API, the simulated mobile network and the /_emulator/ controls.

    public_url: the base URL phones reach it by, when that is not the one clients call it by (in
    Docker Compose the service calls http://emulator:8081, a browser on the host 127.0.0.1:8081).
    """
    app = Flask(__name__)
    app.config["PUBLIC_URL"] = public_url
    app.url_map.merge_slashes = False  # the tutorial GETs checks//{id}; answer it, don't redirect

    @app.before_request
    def apply_faults():
        endpoint = request.endpoint
        if endpoint not in API_ENDPOINTS:
            return None
        fault = controls.record(endpoint)
        if endpoint != "jwks" and endpoint != "redirect":
            g.rate = model.count_request()
        return _apply(fault) if fault else None

    @app.after_request
    def rate_headers(response: Response) -> Response:
        if "rate" in g:
            limit, remaining, reset = g.rate
            response.headers["X-RateLimit-Limit"] = str(limit)
            response.headers["X-RateLimit-Remaining"] = str(max(0, remaining))
            response.headers["X-RateLimit-Reset"] = str(reset)
        return response

    @app.errorhandler(problems.Problem)
    def render_problem(error: problems.Problem):
        return error.to_response()

    @app.errorhandler(HTTPException)
    def render_http_error(error: HTTPException):
        problem = problems.Problem(error.description or error.name)
        problem.status, problem.title, problem.kind = error.code or 500, error.name, "http_error"
        return problem.to_response()

    @app.post("/oauth2/v1/token", endpoint="token")
    def token():
        auth = request.authorization
        if auth is None or auth.type != "basic":
            raise problems.Unauthorized("Basic client credentials are required")
        return jsonify(
            model.issue_token(
                auth.username or "",
                auth.password or "",
                request.form.get("grant_type", ""),
                request.form.get("scope", ""),
            )
        )

    @app.post("/phone_check/v0.2/checks", endpoint="create")
    def create():
        model.authorize(_bearer())
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise problems.BadRequest("body must be a JSON object")
        check = model.create_check(body.get("phone_number"), body.get("redirect_url"))
        return jsonify(check.to_json(_base(), model.balance)), 201

    @app.get("/phone_check/v0.2/checks/<check_id>", endpoint="get")
    @app.get("/phone_check/v0.2/checks//<check_id>", endpoint="get")
    def get(check_id):
        model.authorize(_bearer())
        return jsonify(model.get_check(check_id).to_json(_base(), model.balance))

    @app.patch("/phone_check/v0.2/checks/<check_id>", endpoint="patch")
    def patch(check_id):
        model.authorize(_bearer())
        if request.mimetype != "application/json-patch+json":
            raise problems.UnsupportedMediaType("Content-Type must be application/json-patch+json")
        check = model.patch_check(check_id, _code_from_patch(request.get_json(silent=True)))
        return jsonify(check.to_json(_base(), model.balance))

    @app.get("/phone_check/v0.2/checks/<check_id>/redirect", endpoint="redirect")
    def device_opens(check_id):
        sim = request.args.get("sim")
        if sim is None and phone_page:
            model.get_check(check_id)
            return redirect(f"/_emulator/phone/{check_id}", 302)
        return _device_redirect(check_id, sim, request.args.get("network_error"))

    @app.get("/.well-known/jwks.json", endpoint="jwks")
    def jwks():
        return jsonify(signer.jwks())

    # --- the simulated phone's page (a person picks the SIM) -----------------------------

    @app.get("/_emulator/phone/<check_id>")
    def phone_page_get(check_id):
        check = model.get_check(check_id)
        return render_template("phone.html", check=check)

    @app.post("/_emulator/phone/<check_id>")
    def phone_page_post(check_id):
        check = model.get_check(check_id)
        choice = request.form.get("sim")
        if choice not in ("this", "other", "wifi"):
            raise problems.BadRequest("pick 'this', 'other' or 'wifi'")
        if choice == "wifi":
            return _device_redirect(check_id, None, "not_mobile_ip")
        sim = check.phone_number if choice == "this" else "0" + check.phone_number
        return _device_redirect(check_id, sim, None)

    # --- controls -------------------------------------------------------------------------

    @app.get("/_emulator/stats")
    def stats():
        return jsonify(controls.stats())

    @app.post("/_emulator/faults")
    def add_fault():
        try:
            fault = Fault.from_json(request.get_json(silent=True))
        except ValueError as error:
            raise problems.BadRequest(str(error)) from None
        controls.add_fault(fault)
        return jsonify({"armed": fault.__dict__}), 201

    @app.post("/_emulator/reset")
    def reset():
        model.reset()
        controls.reset()
        return jsonify({"reset": True})

    @app.post("/_emulator/sign")
    def sign_any_url():
        """A redirect signed for any URL: what another customer gets if the API ever signs a
        query of their choosing (tests prove the webhook does not depend on it never doing so)."""
        body = request.get_json(silent=True) or {}
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise problems.BadRequest("url must be an absolute http(s) URL")
        parts = urlsplit(url)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        return jsonify({"location": signer.sign_redirect(base, params, model.clock())})

    @app.post("/_emulator/rotate-key")
    def rotate_key():
        return jsonify({"kid": signer.rotate()})

    @app.post("/_emulator/clock")
    def advance_clock():
        body = request.get_json(silent=True) or {}
        seconds = body.get("advance")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise problems.BadRequest("advance must be a non-negative number of seconds")
        model.clock.advance(seconds)
        return jsonify({"offset": model.clock.offset})

    def _device_redirect(check_id, sim, network_error):
        result = model.open_check(check_id, sim, network_error)
        target = result.check.redirect_url
        if not target:
            return jsonify({"check_id": check_id, "code": result.code, "error": result.error})
        if result.code:
            params = {"check_id": check_id, "code": result.code}
        else:
            params = {
                "check_id": check_id,
                "error": result.error,
                "error_description": result.description,
            }
        return redirect(signer.sign_redirect(target, params, model.clock()), 302)

    return app


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _base() -> str:
    return (current_app.config.get("PUBLIC_URL") or request.host_url).rstrip("/")


def _code_from_patch(body) -> str:
    if not isinstance(body, list):
        raise problems.BadRequest("body must be a JSON Patch array")
    for op in body:
        if isinstance(op, dict) and op.get("op") == "add" and op.get("path") == "/code":
            return op.get("value")
    raise problems.BadRequest('JSON Patch must contain {"op": "add", "path": "/code"}')


def _apply(fault: Fault):
    """Turn an armed fault into this request's answer (or a delay before the normal one)."""
    if fault.mode == "status":
        raise problems.InjectedFault(fault.status, fault.retry_after)
    if fault.mode == "timeout":
        time.sleep(fault.seconds)
        return None
    if fault.mode == "garbage":
        return Response("<html><body>502 upstream garbage", 200, mimetype="text/html")
    if fault.mode == "partial":
        return Response("{}", 200, mimetype="application/json")
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("emulator fault: connection closed")
