"""/complete-check: GET verifies the phone's redirect and asks the person; POST approves or denies."""

import hmac
import logging

from flask import Blueprint, current_app, render_template, request

from .audit import clean
from .broker import Broker, Login, Reasons
from .phonecheck import PhoneCheckError
from .signature import SignatureError

log = logging.getLogger("ssh-auth.webhook")
bp = Blueprint("webhook", __name__)


def _ctx():
    return current_app.extensions["ssh-auth"]


def _page(title: str, message: str, status: int, ok: bool = False, advice: str = ""):
    return render_template("result.html", title=title, message=message, advice=advice, ok=ok), status


@bp.get("/healthz")
def healthz():
    return {"ok": True}


@bp.get("/complete-check")
def phone_arrives():
    """The phone's final redirect from the mobile network."""
    ctx, args = _ctx(), request.args
    if args.get("error"):
        return _network_failed(ctx.broker, args)
    if not args.get("check_id") or not args.get("code"):
        return "missing check_id or code\n", 400, {"Content-Type": "text/plain; charset=utf-8"}
    check_id, code = args["check_id"], args["code"]
    if ctx.settings.require_signature or "redirect_url" in args:
        try:
            verified = ctx.verifier.verify(args)
        except SignatureError as error:
            log.warning("refused a redirect for %s: %s", clean(check_id)[:64], error)
            return _page(
                "This link could not be verified",
                f"The sign-in link was refused: {error}.",
                403,
                advice="Scan the QR code in your terminal again.",
            )
        check_id, code = verified.check_id, verified.code
    login = ctx.broker.pending(check_id)
    if login is None:  # never created here, or already finished: no API call for it
        return _page(
            "This login has ended",
            "This sign-in is unknown here or already finished.",
            404,
            advice="If you are still logging in, scan the newest QR code.",
        )
    login.code = code
    if not ctx.settings.confirm_on_phone:
        return _complete(ctx, login)
    return render_template(
        "confirm.html", login=login, host=ctx.broker.hostname, number_match=ctx.settings.number_match
    )


@bp.post("/complete-check")
def person_answers():
    """Approve (or pick a number) or Deny, with the page's one-time token."""
    ctx, form = _ctx(), request.form
    login = ctx.broker.pending(form.get("check_id", ""))
    if login is None:
        return _page("Already used", "This login was already approved, denied or has ended.", 409)
    if login.code is None or not hmac.compare_digest(
        form.get("token", "").encode(), login.page_token.encode()
    ):
        log.warning("refused a POST for %s without the page's token", login.check_id)
        return _page(
            "Not accepted",
            "This confirmation is not valid for this login.",
            403,
            advice="Scan the QR code in your terminal again.",
        )
    if form.get("action") == "deny":
        return _finish_without_patch(
            ctx.broker,
            login,
            Reasons.DENIED_ON_PHONE,
            "Login denied",
            "Nobody gets in with this sign-in.",
        )
    if ctx.settings.number_match:
        if form.get("pick") is None:
            return _page("Pick a number", "Pick the number shown in your terminal.", 400)
        if not hmac.compare_digest(form["pick"].encode(), (login.number or "").encode()):
            return _finish_without_patch(
                ctx.broker,
                login,
                Reasons.WRONG_PICK,
                "Wrong number",
                "That is not the number in the terminal: the login was denied.",
            )
    elif form.get("action") != "approve":
        return _page("Not understood", "Press Approve or Deny.", 400)
    return _complete(ctx, login)


def _complete(ctx, login: Login):
    """Claim the check (only once), PATCH the code, and hand the verdict to the login at once."""
    if ctx.broker.claim(login.check_id) is None:
        return _page("Already used", "This login was already approved, denied or has ended.", 409)
    try:
        check = ctx.client.patch_check(login.check_id, login.code)
    except PhoneCheckError as error:
        log.error("PATCH of %s failed: %s", login.check_id, error)
        ctx.broker.finish(
            login.check_id,
            False,
            "error",
            Reasons.PATCH_FAILED.format(detail=error.status or "no answer"),
        )
        return _page(
            "Could not complete",
            "The phone check could not be completed.",
            502,
            advice="Try logging in again.",
        )
    if check.check_id == login.check_id and check.status == "COMPLETED" and check.match is True:
        ctx.broker.finish(login.check_id, True, "allowed", Reasons.APPROVED)
        return _page(
            "Approved",
            f"{login.user} is signing in to {ctx.broker.hostname}.",
            200,
            ok=True,
            advice="You can close this page.",
        )
    ctx.broker.finish(login.check_id, False, "denied", Reasons.NO_MATCH)
    return _page(
        "No match",
        "This phone's SIM is not the number registered for this login.",
        403,
        advice="Use the phone with the registered SIM, on mobile data.",
    )


def _finish_without_patch(broker: Broker, login: Login, reason: str, title: str, message: str):
    if broker.claim(login.check_id) is None:
        return _page("Already used", "This login was already approved, denied or has ended.", 409)
    broker.finish(login.check_id, False, "denied", reason)
    return _page(title, message, 200)


def _network_failed(broker: Broker, args):
    """The network's failure redirect ends the waiting login with its reason."""
    detail = clean(args.get("error_description") or args["error"])[:200]
    login = broker.pending(args.get("check_id", ""))
    if login and broker.claim(login.check_id):
        broker.finish(login.check_id, False, "denied", Reasons.NETWORK.format(detail=detail))
    return _page(
        "The network could not confirm your SIM",
        detail + ".",
        200,
        advice="Turn off Wi-Fi so the phone uses mobile data, then scan again.",
    )
