"""The hub's side of a fleet login: the policy and the check for a host's login, the central
audit of what it decides, and the sweep that expires logins and polls the API as a fallback."""

import logging
import threading
import time

from sshshim.protocol import OP_LOGIN, OP_PAM_LOGIN

from .. import pam_login, reasons
from ..audit import Audit, Decision, LogLimit
from ..config import Settings
from ..flow import FIRST_POLL_DELAY, CheckFlow, fallback_verdict
from ..gatekeeper import check_refusal, policy
from ..logins import Caller, Verdict, deny
from ..phonecheck import PhoneCheckClient
from ..registry import USERNAME
from .central_audit import record
from .database import Database, DatabaseUnavailable
from .hosts import Hosts
from .shared_logins import SharedLogins
from .shared_policy import SharedBudget, SharedRegistry, SharedTrusted
from .signing import REPLAY_WINDOW

log = logging.getLogger("ssh-auth.hub")
SWEEP_EVERY = 1.0  # seconds between sweeps for expired logins and due fallback polls
PRUNE_EVERY = 60.0
POLL_LEASE = 30.0  # seconds one replica holds a login's fallback poll
MAX_GROUPS, MAX_NAME, MAX_COMMAND_LINE, MAX_KEY = 1024, 64, 64 * 1024, 256


def valid_login(request: dict) -> bool:
    """Types and bounds of a host's login request (the host is trusted for who logs in on it,
    never for anything about other hosts)."""

    def small_int(value, low=1, high=10000):
        return isinstance(value, int) and not isinstance(value, bool) and low <= value < high

    groups = request.get("groups")
    return (
        request.get("op") in (OP_LOGIN, OP_PAM_LOGIN)
        and isinstance(request.get("user"), str)
        and bool(USERNAME.fullmatch(request["user"]))
        and small_int(request.get("uid"), 0, 2**32)
        and isinstance(groups, list)
        and len(groups) <= MAX_GROUPS
        and all(isinstance(g, str) and 0 < len(g) <= MAX_NAME for g in groups)
        and _address(request.get("address"))
        and isinstance(request.get("command"), str | None)
        and len(request.get("command") or "") <= MAX_COMMAND_LINE
        and isinstance(request.get("tty"), bool)
        and isinstance(request.get("unicode"), bool)
        and small_int(request.get("columns"))
        and small_int(request.get("rows"))
        and isinstance(request.get("key"), str | None)
        and len(request.get("key") or "") <= MAX_KEY
    )


def _address(value) -> bool:
    """ "local", or a client address as the broker gives it (an IP, or a DNS name with UseDNS)."""
    return isinstance(value, str) and (value == "local" or pam_login.client_address(value) == value)


class Hub:
    """Decides logins for the fleet's hosts; every replica runs one, all sharing the database."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        client: PhoneCheckClient,
        audit: Audit,
        listener=None,
    ):
        """listener: the replica's VerdictListener (None where nothing long-polls: the CLI)."""
        self.settings, self.database, self.client, self.audit = settings, database, client, audit
        self.listener = listener
        self.hosts = Hosts(database)
        self.logins = SharedLogins(database, FIRST_POLL_DELAY, audit)
        self.registry = SharedRegistry(database)
        self.budget = SharedBudget(
            database, settings.max_checks_per_user, settings.max_checks_per_minute
        )
        self.trusted = SharedTrusted(database)
        self.flow = CheckFlow(settings, client, self.logins)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sweep_forever, name="hub-sweep", daemon=True)
        self._warn = LogLimit(per_minute=5)

    # --- a host's login -----------------------------------------------------------------------

    def create_login(self, host: str, request: dict) -> dict:
        """{"verdict": ...} by policy alone, or {"login": {"id"}, "challenge": ...} for the check."""
        started = time.monotonic()
        caller = Caller(
            request["uid"],
            -1,
            request["user"],
            None,
            request["address"],
            request["command"],
            request,
            request["key"],
            host=host,
        )
        verdict, phone = policy(
            self.settings,
            self.registry,
            caller.user,
            request["groups"],
            request["op"],
            caller.command,
            request["tty"],
        )
        if verdict is None:
            trusted = self.trusted.trusted(caller.user, caller.address)
            budget = self.budget.for_host(host)
            verdict = check_refusal(
                self.settings, caller.command, budget, caller.user, caller.address, trusted
            )
        if verdict is None:
            login, answer = self.flow.open(caller, phone)
            if login is not None:
                seconds = max(0.0, answer["expires_at"] - time.time())
                return {"login": {"id": login.check_id, "seconds": seconds}, "challenge": answer}
            verdict = answer
        self.record(
            host,
            Decision(
                caller.user,
                caller.uid,
                caller.address,
                None,
                verdict.outcome,
                verdict.reason,
                time.monotonic() - started,
            ),
        )
        return {"verdict": _verdict(verdict)}

    def record(self, host: str, *decisions: Decision) -> None:
        """Decisions made without a waiting login: into the central audit (one transaction), and
        the log."""
        with self.database.transaction() as cursor:
            for decision in decisions:
                record(cursor, host, decision)
        for decision in decisions:
            self.audit.record(decision)

    def health(self) -> str | None:
        """What keeps this replica from deciding logins now (None: nothing)."""
        try:
            with self.database.transaction() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseUnavailable:
            return "database unavailable"
        if not self.listener.listening.is_set():
            return "not listening for verdicts"
        return None

    def abandon(self, host: str, check_id: str) -> bool:
        """The host's client went away: its login is denied (a later approval finds it ended)."""
        return self.logins.finish(check_id, deny(reasons.ABANDONED), host=host)

    def revoke(self, name: str) -> int:
        """Revoke a host and deny its waiting logins; how many were waiting."""
        waiting = self.hosts.revoke(name)
        for check_id in waiting:
            self.logins.finish(check_id, deny(reasons.HOST_REVOKED))
        return len(waiting)

    # --- the sweep ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _sweep_forever(self) -> None:
        pruned = 0.0
        while not self._stop.wait(SWEEP_EVERY):
            try:
                self.sweep()
                if time.monotonic() - pruned >= PRUNE_EVERY:
                    pruned = time.monotonic()
                    self.prune()
            except DatabaseUnavailable as error:
                if self._warn("sweep") is not None:
                    log.warning("sweep skipped: %s", error)
            except Exception:
                log.exception("the hub's sweep failed")

    def sweep(self) -> None:
        """Deny logins past their deadline; run the fallback API polls now due (leased)."""
        for check_id in self.logins.overdue():
            self.logins.finish(check_id, deny(reasons.EXPIRED))
        for check_id, claimed in self.logins.lease_polls(self.settings.poll_interval, POLL_LEASE):
            self.poll(check_id, claimed)

    def poll(self, check_id: str, claimed: bool) -> None:
        """The fallback GET of a login this replica holds the lease for."""
        verdict = fallback_verdict(self.client, check_id, claimed)
        if verdict:
            self.logins.finish(check_id, verdict)

    def prune(self) -> None:
        """Forget what no decision needs any more: nonces, counters, places, finished logins."""
        self.hosts.prune_nonces(2 * REPLAY_WINDOW)
        self.budget.prune()
        self.trusted.prune()
        self.logins.prune()


def _verdict(verdict: Verdict) -> dict:
    return {"allow": verdict.allow, "outcome": verdict.outcome, "reason": verdict.reason}
