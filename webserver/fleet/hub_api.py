"""/fleet/v1/: what agents ask the hub, each request signed by the host's key (join aside, which
spends a one-time enrolment token). A host sees and affects only its own logins."""

import base64
import binascii
import functools
import logging
import time

from flask import Blueprint, current_app, g, request

from ..audit import SUPPRESSED, Decision, LogLimit, clean
from ..logins import OUTCOMES
from .database import DatabaseUnavailable
from .host_limits import HostLimits
from .hub import valid_login
from .signing import HOST, STALE_DATE, SignatureRefused, check

log = logging.getLogger("ssh-auth.hub")
bp = Blueprint("fleet", __name__, url_prefix="/fleet/v1")
limit = LogLimit()
LONG_POLL_MAX = 25.0  # seconds a verdict long-poll may wait (the agent's read timeout is longer)
MAX_IDS = 1024  # a host's broker has at most 512 logins waiting; 1024 ids fit in 64 KiB
MAX_DECISIONS = 100
limits = HostLimits()  # per replica: each process has its own


def _hub():
    return current_app.extensions["ssh-auth-hub"]


def _error(status: int, error: str):
    return {"error": error}, status


def _refuse(host: str, reason: str):
    """A refused request: logged (rate-limited: anyone can send them), 401. The answer says
    only "refused", or "clock" for a date outside the window (nothing secret: it was sent)."""
    skipped = limit("refused")
    if skipped is not None:
        more = f" ({skipped} more not logged)" if skipped else ""
        log.warning("refused a fleet request from host %s: %s%s", clean(host)[:64], reason, more)
    return _error(401, "clock" if reason == STALE_DATE else "refused")


def signed(view):
    """Only a request signed by an enrolled, unrevoked host, seen for the first time."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        hub, host_name = _hub(), request.headers.get(HOST, "")
        host = hub.hosts.get(host_name) if 0 < len(host_name) <= 64 else None
        if host is None or host.public_key is None:
            return _refuse(host_name, "unknown host")
        if host.revoked_at is not None:
            return _refuse(host_name, "revoked host")
        try:
            nonce = check(
                host.public_key, request.headers, request.method, request.path, request.get_data()
            )
        except SignatureRefused as error:
            return _refuse(host_name, str(error))
        if not limits.requests.take(host.name):
            return _busy(host.name, "requests")
        if not hub.hosts.first_use(host.name, nonce):
            return _refuse(host_name, "replayed request")
        g.host = host.name
        return view(*args, **kwargs)

    return checked


def _busy(host: str, what: str):
    """A host over one of its limits: 429, logged (rate-limited)."""
    skipped = limit("busy")
    if skipped is not None:
        more = f" ({skipped} more not logged)" if skipped else ""
        log.warning("host %s is over its limit of %s%s", host, what, more)
    return _error(429, "busy")


@bp.errorhandler(DatabaseUnavailable)
def database_down(error):
    skipped = limit("database")
    if skipped is not None:
        log.error("%s", error)
    return _error(503, "database_unavailable")


@bp.post("/join")
def join():
    """A host spends its enrolment token to register its public key; its name in the fleet."""
    body = request.get_json(silent=True) or {}
    token, key = body.get("token"), body.get("public_key")
    if not (isinstance(token, str) and isinstance(key, str) and len(token) < 100 and len(key) < 100):
        return _error(400, "token and public_key are required")
    try:
        public_key = base64.b64decode(key, validate=True)
    except binascii.Error:
        return _error(400, "public_key is not base64")
    name = _hub().hosts.join(token, public_key)
    if name is None:
        return _refuse("(join)", "unknown, used or expired enrolment token")
    log.info("host %s joined the fleet", name)
    return {"host": name}


@bp.post("/logins")
@signed
def create_login():
    """Start a login on the calling host: a verdict by policy, or the check's challenge."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not valid_login(body):
        return _error(400, "malformed login")
    return _hub().create_login(g.host, body)


@bp.post("/verdicts")
@signed
def verdicts():
    """The verdicts of these logins of the calling host: at once if any is decided, else after
    the host's next announcement or LONG_POLL_MAX. Subscribe first, then read: nothing missed."""
    body = request.get_json(silent=True) or {}
    ids, wait = body.get("ids"), body.get("wait", 0)
    if not (isinstance(ids, list) and len(ids) <= MAX_IDS and all(isinstance(i, str) for i in ids)):
        return _error(400, "ids must be a list of login ids")
    if not isinstance(wait, int | float) or isinstance(wait, bool):
        return _error(400, "wait must be a number of seconds")
    hub, held = _hub(), {"long_polls": g.host}
    if not limits.long_polls.admit(held):  # each holds a thread: a host gets a few at most
        return _busy(g.host, "long-polls at once")
    subscription = hub.listener.subscribe(g.host)
    try:
        decided, unknown = hub.logins.decided(g.host, ids)
        deadline = time.monotonic() + min(max(0.0, wait), LONG_POLL_MAX)
        if not decided and not unknown and ids and time.monotonic() < deadline:
            if subscription.wait(deadline - time.monotonic()):
                decided, unknown = hub.logins.decided(g.host, ids)
    finally:
        hub.listener.unsubscribe(g.host, subscription)
        limits.long_polls.release(held)
    return {"verdicts": decided, "unknown": unknown}


@bp.post("/logins/<check_id>/abandon")
@signed
def abandon(check_id: str):
    """The host's SSH client left: deny its login (only the host's own)."""
    return {"abandoned": _hub().abandon(g.host, check_id[:128])}


@bp.post("/audit")
@signed
def audit():
    """Decisions the host made itself (reuse on a live connection, refusals before any check)."""
    body = request.get_json(silent=True) or {}
    decisions = body.get("decisions")
    if not isinstance(decisions, list) or len(decisions) > MAX_DECISIONS:
        return _error(400, "decisions must be a list")
    if not limits.audit_items.take(g.host, len(decisions)):
        return _busy(g.host, "audit items")
    parsed = [_decision(item) for item in decisions]
    if None in parsed:
        return _error(400, "malformed decision")
    _hub().record(g.host, *parsed)
    return {"recorded": len(parsed)}


def _decision(item) -> Decision | None:
    if not isinstance(item, dict):
        return None
    fields = ("user", "uid", "client", "outcome", "reason", "duration")
    user, uid, client, outcome, reason, duration = (item.get(name) for name in fields)
    if not (
        isinstance(user, str)
        and isinstance(uid, int)
        and not isinstance(uid, bool)
        and 0 <= uid < 2**32
        and isinstance(client, str)
        and outcome in OUTCOMES | {SUPPRESSED}
        and isinstance(reason, str)
        and isinstance(duration, int | float)
    ):
        return None
    return Decision(user[:64], uid, client[:64], None, outcome, reason[:512], float(duration))
