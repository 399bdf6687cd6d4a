"""/complete-check: GET verifies the phone's redirect and asks the person; POST approves or denies.
/q/<token>: a login's short URL (auth-time mode's QR) redirects the phone to its check URL."""

import hmac
import logging
import re
import secrets
import unicodedata

from flask import Blueprint, current_app, make_response, redirect, render_template, request

from sshshim.protocol import UNSAFE_CATEGORIES

from . import reasons
from .audit import LogLimit, clean
from .logins import Login, Verdict, deny, device_hash
from .phonecheck import PhoneCheckError
from .signature import REDIRECT_PARAMETERS, SignatureError, VerifiedRedirect

log = logging.getLogger("ssh-auth.webhook")
bp = Blueprint("webhook", __name__)
limit = LogLimit()  # every line here can be caused by anyone on the internet


def _warn(kind: str, message: str, *args) -> None:
    """A warning, at most LogLimit's lines of this kind a minute (the rest counted)."""
    skipped = limit(kind)
    if skipped is not None:
        suffix = f" ({skipped} more like it not logged)" if skipped else ""
        log.warning(message + suffix, *args)


# The browser that first opens a confirmation page gets this cookie; only it may answer the page
# (a second viewer of the same URL, e.g. someone shoulder-surfing a shared link, cannot).
DEVICE_COOKIE = "ssh_auth_device"
FORM_FIELDS = ("check_id", "token", "action", "pick")
SHORT_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")
SPACE_RUN = re.compile(r" {4,}")  # shown as a count: a wide gap could push a payload off screen
CONNECTION_WIDE = "the whole SSH connection: its shell, commands and forwarding"
ENDED = (
    "This login has ended",
    "It was already approved or denied, it expired, or the SSH client left.",
)


def _ctx():
    return current_app.extensions["ssh-auth"]


def _page(title: str, message: str, status: int, ok: bool = False, advice: str = ""):
    return render_template("result.html", title=title, message=message, advice=advice, ok=ok), status


def shown_command(command: str | None) -> str:
    """The command as it will run, every character visible: invisible ones as escapes (\\x1b,
    \\n, \\u202e), runs of spaces counted, so that nothing can hide behind what is shown."""
    if command is None:
        return "interactive shell"
    text = "".join(
        c
        if c == " " or (c.isprintable() and unicodedata.category(c) not in UNSAFE_CATEGORIES)
        else c.encode("unicode_escape").decode("ascii")
        for c in command
    )
    return SPACE_RUN.sub(lambda run: f" ⟨{len(run.group(0))} spaces⟩ ", text)


def _refused(reason: str):
    """The page for a refused redirect: a fixed sentence, never words from the request."""
    sentence = reasons.SIGNATURE_REFUSALS.get(reason, "it could not be verified")
    return _page(
        "This link could not be verified",
        f"The sign-in link was refused: {sentence}.",
        403,
        advice="Scan the QR code in your terminal again.",
    )


def _plain(text: str, status: int):
    return text + "\n", status, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/healthz")
def healthz():
    """ok, for a load balancer's health check; a fleet's hub also asks its database."""
    problem = current_app.extensions.get("ssh-auth-health", lambda: None)()
    if problem:
        return {"ok": False, "problem": problem}, 503
    return {"ok": True}


@bp.get("/q/<token>")
def short_url(token: str):
    """The phone scanned an auth-time QR: on to the check URL, while its login is waiting."""
    login = _ctx().logins.by_short_token(token) if SHORT_TOKEN.fullmatch(token) else None
    if login is None:
        return _page(*ENDED, 404, advice="If you are still logging in, scan the newest QR code.")
    return redirect(login.check_url, 302)


@bp.get("/complete-check")
def phone_arrives():
    """The phone's final redirect from the mobile network: a code, or the network's error."""
    ctx, args = _ctx(), request.args
    duplicated = [n for n in (*REDIRECT_PARAMETERS, "redirect_url") if len(args.getlist(n)) > 1]
    if duplicated:
        return _plain(f"{duplicated[0]} given more than once", 400)
    if not args.get("check_id") or not (args.get("code") or args.get("error")):
        return _plain("missing check_id or code", 400)
    if ctx.settings.require_signature or "redirect_url" in args:
        try:
            redirect = ctx.verifier.verify(args)
        except SignatureError as error:
            _warn("refused", "refused a redirect for %s: %s", clean(args["check_id"])[:64], error)
            return _refused(error.reason)
    else:
        redirect = VerifiedRedirect(
            args["check_id"], args.get("code"), args.get("error"), args.get("login")
        )
    login = ctx.logins.pending(redirect.check_id)
    if login and not hmac.compare_digest(redirect.login or "", login.nonce):
        # Signed by the API, but not for the redirect_url this login was created with.
        _warn("refused", "refused a redirect for %s: not made for this login", login.check_id)
        return _refused("not_this_login")
    if redirect.error:
        return _network_failed(ctx, login, redirect.error)
    if login is None:  # never created here, or already finished: no API call for it
        return _page(
            "This login has ended",
            "This sign-in is unknown here or already finished.",
            404,
            advice="If you are still logging in, scan the newest QR code.",
        )
    ctx.logins.remember_code(login, redirect.code)
    if not ctx.settings.confirm_on_phone:
        return _complete(ctx, login)
    device = request.cookies.get(DEVICE_COOKIE) or secrets.token_urlsafe(32)
    if not ctx.logins.bind_device(login, device):
        _warn("second device", "check %s was opened on a second device", login.check_id)
        return _page(
            "Opened on another device",
            "This sign-in was already opened on another device; only that one can answer it.",
            403,
            advice="If that was not you, do not approve anything and tell your administrator.",
        )
    page = make_response(
        render_template(
            "confirm.html",
            login=login,
            command=CONNECTION_WIDE if login.whole_connection else shown_command(login.command),
            host=login.host or ctx.hostname,
            number_match=ctx.settings.number_match,
        )
    )
    page.set_cookie(
        DEVICE_COOKIE,
        device,
        path="/complete-check",
        httponly=True,
        samesite="Lax",
        secure=(ctx.settings.public_url or "").startswith("https://"),
    )
    return page


@bp.post("/complete-check")
def person_answers():
    """Approve (or pick a number) or Deny, from the device that opened the page, with its token."""
    ctx, form = _ctx(), request.form
    if any(len(form.getlist(name)) > 1 for name in FORM_FIELDS):
        return _plain("a field was given more than once", 400)
    login = ctx.logins.pending(form.get("check_id", ""))
    if login is None:
        return _page(*ENDED, 409)
    cookie = request.cookies.get(DEVICE_COOKIE, "")
    same_device = login.device is not None and hmac.compare_digest(login.device, device_hash(cookie))
    token_ok = hmac.compare_digest(form.get("token", "").encode(), login.page_token.encode())
    if login.code is None or not (same_device and token_ok):
        _warn("post", "refused a POST for %s without the page's token and device", login.check_id)
        return _page(
            "Not accepted",
            "This confirmation is not valid for this login.",
            403,
            advice="Scan the QR code in your terminal again.",
        )
    if form.get("action") == "deny":
        return _finish_without_patch(
            ctx, login, reasons.DENIED_ON_PHONE, "Login denied", "Nobody gets in with this sign-in."
        )
    if ctx.settings.number_match:
        if form.get("pick") is None:
            return _page("Pick a number", "Pick the number shown in your terminal.", 400)
        if not hmac.compare_digest(form["pick"].encode(), (login.number or "").encode()):
            return _finish_without_patch(
                ctx,
                login,
                reasons.WRONG_PICK,
                "Wrong number",
                "That is not the number in the terminal: the login was denied.",
            )
    elif form.get("action") != "approve":
        return _page("Not understood", "Press Approve or Deny.", 400)
    return _complete(ctx, login)


def _complete(ctx, login: Login):
    """Claim the check (only once), PATCH the code, and hand the verdict to the login at once."""
    if ctx.logins.claim(login.check_id) is None:
        return _page(*ENDED, 409)
    try:
        check = ctx.client.patch_check(login.check_id, login.code)
    except PhoneCheckError as error:
        log.error("PATCH of %s failed: %s", login.check_id, error)
        detail = error.status or "no answer"
        ctx.logins.finish(login.check_id, deny(reasons.PATCH_FAILED.format(detail=detail), "error"))
        return _page(
            "Could not complete",
            "The phone check could not be completed.",
            502,
            advice="Try logging in again.",
        )
    if check.check_id == login.check_id and check.status == "COMPLETED" and check.match is True:
        if not ctx.logins.finish(login.check_id, Verdict(True, "allowed", reasons.APPROVED)):
            return _page(*ENDED, 409)  # the SSH client left while the API answered
        return _page(
            "Approved",
            f"{login.user} is signing in to {login.host or ctx.hostname}.",
            200,
            ok=True,
            advice="You can close this page.",
        )
    ctx.logins.finish(login.check_id, deny(reasons.NO_MATCH))
    return _page(
        "No match",
        "This phone's SIM is not the number registered for this login.",
        403,
        advice="Use the phone with the registered SIM, on mobile data.",
    )


def _finish_without_patch(ctx, login: Login, reason: str, title: str, message: str):
    if ctx.logins.claim(login.check_id) is None:
        return _page(*ENDED, 409)
    ctx.logins.finish(login.check_id, deny(reason))
    return _page(title, message, 200)


def _network_failed(ctx, login: Login | None, code: str):
    """The network's failure redirect ends the waiting login with the fixed line for its code."""
    if limit("network error") is not None:
        log.info("network error %s for check %s", clean(code)[:64], login.check_id if login else "-")
    if login and ctx.logins.claim(login.check_id):
        ctx.logins.finish(login.check_id, deny(reasons.network_error(code)))
    return _page(
        "The network could not confirm your SIM",
        reasons.network_page(code),
        200,
        advice="Turn off Wi-Fi so the phone uses mobile data, then scan again.",
    )
