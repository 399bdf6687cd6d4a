"""A fleet host's agent: the broker unchanged (socket, SO_PEERCRED, the kernel's connection key),
with the hub deciding. One long-poll carries every waiting login's verdict; when no hub answers
by a login's deadline, the login is denied: an unreachable hub never lets anyone in."""

import logging
import os
import select
import threading
import time
from collections import deque

from sshshim.protocol import EVENT_STATUS

from .. import reasons
from ..audit import Audit, Decision, LogLimit
from ..config import MAX_TTL
from ..flow import CREATE_BUDGET, STATUS_EVERY, send
from ..logins import ALLOWING, OUTCOMES, Caller, Verdict, deny
from .hub_client import HubClient, HubUnavailable

log = logging.getLogger("ssh-auth.agent")
AGENT_GRACE = 5.0  # past the check's expiry, the hub's EXPIRED should have come: deny
LONG_POLL = 20.0  # seconds the hub may hold a verdict long-poll
RETRY_AFTER = 0.5  # seconds between rounds of replicas when none answers
HUB_ALLOWING = ALLOWING - {"reused"}  # what a hub's verdict may open a login with
UNAVAILABLE = {
    "unreachable": reasons.HUB_UNREACHABLE,
    "database": reasons.HUB_DATABASE_DOWN,
    "refused": reasons.HUB_REFUSED_HOST,
    "clock": reasons.HUB_CLOCK,
    "busy": reasons.HUB_BUSY,
    "rejected": reasons.HUB_NO_ANSWER,
}


def hub_verdict(answer) -> Verdict | None:
    """The hub's verdict, if it is a well-formed one."""
    if not isinstance(answer, dict):
        return None
    allow, outcome, reason = answer.get("allow"), answer.get("outcome"), answer.get("reason")
    if not (isinstance(allow, bool) and isinstance(outcome, str) and isinstance(reason, str)):
        return None
    if outcome not in OUTCOMES or (allow and outcome not in HUB_ALLOWING):
        return None  # SECURITY: reuse is this host's to decide, never the hub's
    return Verdict(allow, outcome, reason[:1024], central=True)


class Waiter:
    """One login waiting for its verdict from the long-poll."""

    def __init__(self, check_id: str, deadline: float):
        self.check_id, self.deadline = check_id, deadline
        self.verdict: Verdict | None = None
        self.wake = os.pipe()

    def deliver(self, verdict: Verdict) -> None:
        if self.verdict is None:
            self.verdict = verdict
            os.write(self.wake[1], b"!")

    def close(self) -> None:
        for fd in self.wake:
            os.close(fd)


class VerdictPoller:
    """One thread, one long-poll at a time to the hub, for every login waiting on this host."""

    def __init__(self, client: HubClient):
        self.client = client
        self._lock = threading.Condition()
        self._waiters: dict[str, Waiter] = {}
        self._stop = False
        self._warn = LogLimit(per_minute=6)
        self._thread = threading.Thread(target=self._run, name="verdict-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()

    def add(self, check_id: str, deadline: float) -> Waiter:
        waiter = Waiter(check_id, deadline)
        with self._lock:
            self._waiters[check_id] = waiter
            self._lock.notify_all()
        return waiter

    def remove(self, waiter: Waiter) -> None:
        with self._lock:
            self._waiters.pop(waiter.check_id, None)
            waiter.close()  # under the lock: deliver() writes to the pipe under it too

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiters and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                ids = list(self._waiters)
            attempt = LONG_POLL + 5  # a replica that holds it longer has stalled: the next one
            try:
                answer = self.client.post(
                    "/fleet/v1/verdicts",
                    {"ids": ids, "wait": LONG_POLL},
                    timeout=attempt * len(self.client.urls),
                    attempt=attempt,
                )
                self._deliver(answer)
            except HubUnavailable as error:
                if self._warn("long-poll") is not None:
                    log.warning("verdict long-poll: %s", error)
                if error.why in ("refused", "clock"):  # no verdict will come this way
                    self._deny_all(deny(UNAVAILABLE[error.why], "error"))
                time.sleep(RETRY_AFTER)  # each login's own deadline denies it if this lasts
                continue
            except Exception:  # never let one bad answer end the host's only verdict thread
                log.exception("verdict long-poll failed")
                time.sleep(RETRY_AFTER)

    def _deny_all(self, verdict: Verdict) -> None:
        with self._lock:
            for waiter in self._waiters.values():
                waiter.deliver(verdict)

    def _deliver(self, answer: dict) -> None:
        found = answer.get("verdicts") if isinstance(answer.get("verdicts"), list) else []
        unknown = answer.get("unknown") if isinstance(answer.get("unknown"), list) else []
        with self._lock:
            for item in found:
                check_id = item.get("id") if isinstance(item, dict) else None
                # Popped: the next long-poll no longer names a login that has its verdict.
                waiter = self._waiters.pop(check_id, None) if isinstance(check_id, str) else None
                if waiter:
                    waiter.deliver(hub_verdict(item) or deny(reasons.HUB_NO_ANSWER, "error"))
            for check_id in unknown:
                waiter = self._waiters.pop(check_id, None) if isinstance(check_id, str) else None
                if waiter:  # the hub has no such login for this host
                    waiter.deliver(deny(reasons.HUB_NO_ANSWER, "error"))


class HubGatekeeper:
    """The fleet's gatekeeper on a host: the hub decides, this host shows and waits."""

    def __init__(self, client: HubClient, poller: VerdictPoller):
        self.client, self.poller = client, poller

    def decide(self, sock, caller: Caller) -> tuple[str | None, Verdict]:
        """(check_id, verdict) from the hub: by its policy, or by the check it runs."""
        request = caller.request
        body = {
            "op": request["op"],
            "user": caller.user,
            "uid": caller.uid,
            "groups": caller.groups(),
            "address": caller.address,
            "command": caller.command,
            "tty": request.get("tty", True),
            "columns": request.get("columns", 80),
            "rows": request.get("rows", 24),
            "unicode": request.get("unicode", True),
            "key": caller.key,
        }
        try:
            answer = self.client.post("/fleet/v1/logins", body, timeout=CREATE_BUDGET)
        except HubUnavailable as error:
            log.error("login of %s: %s", caller.user, error)
            return None, deny(UNAVAILABLE[error.why], "error")
        if "verdict" in answer:
            return None, hub_verdict(answer["verdict"]) or deny(reasons.HUB_NO_ANSWER, "error")
        login, challenge = answer.get("login"), answer.get("challenge")
        if not (isinstance(login, dict) and isinstance(challenge, dict)):
            return None, deny(reasons.HUB_NO_ANSWER, "error")
        check_id, seconds = login.get("id"), login.get("seconds")
        if not (isinstance(check_id, str) and isinstance(seconds, int | float)):
            return None, deny(reasons.HUB_NO_ANSWER, "error")
        seconds = min(max(0.0, float(seconds)), MAX_TTL)  # no hub keeps a login longer
        # The shim counts down on this host's clock, whatever the hub's says.
        challenge["expires_at"] = time.time() + seconds
        waiter = self.poller.add(check_id, time.monotonic() + seconds + AGENT_GRACE)
        try:
            send(sock, challenge)
            return check_id, self.wait(sock, waiter)
        finally:
            self.poller.remove(waiter)

    def wait(self, sock, waiter: Waiter) -> Verdict:
        """The hub's verdict; or a deny when the client leaves or the deadline passes."""
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        poller.register(waiter.wake[0], select.POLLIN)
        next_status = time.monotonic() + STATUS_EVERY
        while waiter.verdict is None:
            now = time.monotonic()
            if now >= waiter.deadline:
                # The hub ends it too, so that an approval arriving now finds it ended.
                self.abandon(waiter.check_id)
                return deny(reasons.HUB_NO_ANSWER, "error")
            if now >= next_status:
                left = max(0, int(waiter.deadline - AGENT_GRACE - now))
                send(sock, {"event": EVENT_STATUS, "status": "PENDING", "seconds_left": left})
                next_status = now + STATUS_EVERY
            for fd, _ in poller.poll(max(0.0, min(waiter.deadline, next_status) - now) * 1000):
                if fd != waiter.wake[0] and waiter.verdict is None:  # the client went away
                    self.abandon(waiter.check_id)
                    return deny(reasons.ABANDONED)
        return waiter.verdict

    def abandon(self, check_id: str) -> None:
        """Tell the hub, so that a late approval finds the login ended (nothing runs anyway)."""
        try:
            self.client.post(f"/fleet/v1/logins/{check_id}/abandon", {}, timeout=3)
        except HubUnavailable as error:
            log.warning("could not tell the hub that %s was abandoned: %s", check_id, error)

    def check(self, sock, caller: Caller, phone: str) -> tuple[str | None, Verdict]:
        """Phones are verified and registered on the hub, never through a host."""
        return None, deny(reasons.VERIFY_ON_HUB)

    def prune(self) -> None:
        """Nothing kept here: the hub keeps the limits."""


class ForwardingAudit(Audit):
    """The host's log as before; and every decision the hub did not make itself (reuse on a
    live connection, refusals before any check) sent to the hub's audit table."""

    MAX_QUEUED = 10000

    def __init__(self, path: str | None, client: HubClient):
        super().__init__(path)
        self.client = client
        self._queue: deque[Decision] = deque(maxlen=self.MAX_QUEUED)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-forward", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, decision: Decision, central: bool = False) -> None:
        super().record(decision)
        if not central:
            self._queue.append(decision)
            self._ready.set()

    def _run(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(100, len(self._queue)))]
                items = [
                    {
                        "user": d.user,
                        "uid": d.uid,
                        "client": d.client,
                        "outcome": d.outcome,
                        "reason": d.reason,
                        "duration": round(d.duration, 3),
                    }
                    for d in batch
                ]
                try:
                    self.client.post("/fleet/v1/audit", {"decisions": items}, timeout=10)
                except HubUnavailable as error:
                    if error.why == "rejected":  # the hub will never take this batch: say so
                        log.error("the hub rejected %d audit lines: %s", len(batch), error)
                        continue
                    log.warning("audit not forwarded yet (%d waiting): %s", len(self._queue), error)
                    self._queue.extendleft(reversed(batch))  # first again, in order
                    time.sleep(5)
