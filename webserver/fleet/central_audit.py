"""The fleet's audit table: every decision for every host, in the hub's database."""

from ..audit import Decision, clean


def record(cursor, host: str | None, decision: Decision) -> None:
    """Add one decision to the audit table, in the caller's transaction (a host's own decisions
    are bounded where they arrive, hub_api._decision)."""
    cursor.execute(
        "INSERT INTO audit (host, user_name, uid, address, check_id, outcome, reason, seconds) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            host,
            clean(decision.user),
            decision.uid,
            clean(decision.client),
            decision.check_id,
            decision.outcome,
            clean(decision.reason),
            round(decision.duration, 3),
        ),
    )
