"""What a user saw of a login, as one line for the attack/fault matrix."""

import os
import uuid


def denied(reason: str) -> str:
    """A row's expectation: denied, with this line."""
    return f"denied: {reason}"


def allowed(reason: str) -> str:
    """A row's expectation: allowed, with this line."""
    return f"allowed: {reason}"


def attempt(gate, user="sa-alice", options=()):
    """Start a login whose command leaves a mark only if it runs."""
    marker = f"/tmp/sa-ran-{uuid.uuid4().hex}"
    return gate.ssh(user, f"touch {marker}", options=options), marker


def outcome(session, marker, timeout=60) -> str:
    """'allowed: <line>' or 'denied: <line>' from what the user saw; anything odd is BROKEN."""
    status, out, err = session.finish(timeout=timeout)
    ran = os.path.exists(marker)
    lines = [line for line in err.strip().splitlines() if line.startswith("ssh-auth: ")]
    last = lines[-1].removeprefix("ssh-auth: ") if lines else "(no ssh-auth line)"
    if status == 0 and ran:
        return allowed(last)
    if status == 1 and not ran:
        return denied(last)
    return f"BROKEN: exit {status}, command ran: {ran}, saw: {err!r}"


def refusal(page, marker: str, words: str, label: str) -> str:
    """How the phone's page refused, and whether the command ran anyway."""
    reason = label if words in page.text else page.text[:80]
    ran = "ran" if os.path.exists(marker) else "not run"
    return f"refused {page.status_code}: {reason}; command {ran}"
