"""Who needs a phone check, and under which limits: the policy a single server and a fleet's hub
share, and the single server's gatekeeper, which runs the check itself."""

import time

from sshshim.protocol import OP_LOGIN

from . import reasons
from .config import Settings
from .flow import CheckFlow
from .logins import Caller, Verdict, deny
from .policy import CheckBudget, TrustedPlaces, is_exempt, is_sftp_session
from .registry import RegistryUnavailable

MAX_COMMAND = 4096  # characters of a command the phone can show; a longer one is refused


def policy(
    settings: Settings, registry, user: str, groups, op: str, command: str | None, tty: bool
) -> tuple[Verdict | None, str | None]:
    """(the verdict by policy alone, None) or (None, the phone number to check)."""
    if is_exempt(user, groups, settings.exempt_users, settings.exempt_groups):
        return Verdict(True, "exempt", reasons.EXEMPT), None
    try:
        registration = registry.lookup(user)
    except RegistryUnavailable:
        return deny(reasons.NO_REGISTRY, "error"), None
    if registration.allow_once_until:
        when = time.strftime("%H:%M", time.localtime(registration.allow_once_until))
        return Verdict(True, "exempt", reasons.ALLOW_ONCE.format(until=when)), None
    if op == OP_LOGIN and is_sftp_session(command, tty):
        # Nobody could see its QR: refuse at once rather than hang until the deadline.
        return deny(reasons.SFTP_NEEDS_MASTER), None
    if registration.malformed:
        return deny(reasons.BAD_REGISTRATION), None
    if registration.phone is None:
        if settings.unregistered == "allow":
            return Verdict(True, "exempt", reasons.UNREGISTERED_ALLOWED), None
        return deny(reasons.UNREGISTERED), None
    return None, registration.phone


def check_refusal(
    settings: Settings, command: str | None, budget, key, address: str, trusted: bool
) -> Verdict | None:
    """Why a check may not be created now (no public URL, an unshowable command, a limit)."""
    if not settings.public_url:
        return deny(reasons.NO_PUBLIC_URL, "error")
    if command and len(command) > MAX_COMMAND:
        # SECURITY: the person approves what the phone shows: nothing may run unseen.
        return deny(reasons.COMMAND_TOO_LONG.format(length=len(command), limit=MAX_COMMAND))
    over = budget.take(key, address, trusted)
    if over:
        which, seconds = over
        line = reasons.TOO_MANY_ATTEMPTS if which == "user" else reasons.TOO_MANY_CHECKS
        return deny(line.format(seconds=seconds))
    return None


class LocalGatekeeper:
    """The single server: policy, then the check run here, with its limits kept in memory."""

    def __init__(self, settings: Settings, registry, flow: CheckFlow):
        self.settings, self.registry, self.flow = settings, registry, flow
        self.budget = CheckBudget(settings.max_checks_per_user, settings.max_checks_per_minute)
        self.trusted = TrustedPlaces()

    def decide(self, sock, caller: Caller) -> tuple[str | None, Verdict]:
        """(check_id, verdict): by policy alone, or by the phone check it runs."""
        request = caller.request
        verdict, phone = policy(
            self.settings,
            self.registry,
            caller.user,
            caller.groups(),
            request["op"],
            caller.command,
            request.get("tty", True),
        )
        if verdict:
            return None, verdict
        return self.check(sock, caller, phone)

    def check(self, sock, caller: Caller, phone: str) -> tuple[str | None, Verdict]:
        """Create the check, show it, wait for its verdict; a place the phone approved is
        trusted for a while (TrustedPlaces)."""
        trusted = self.trusted.trusted(caller.uid, caller.address)
        refusal = check_refusal(
            self.settings, caller.command, self.budget, caller.uid, caller.address, trusted
        )
        if refusal:
            return None, refusal
        check_id, verdict = self.flow.run(sock, caller, phone)
        if verdict.outcome == "allowed" and caller.connection:
            self.trusted.remember(caller.uid, caller.address)
        return check_id, verdict

    def prune(self) -> None:
        """Forget limits and places whose windows have passed."""
        self.budget.prune()
        self.trusted.prune()
