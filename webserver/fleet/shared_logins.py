"""The hub's waiting logins in PostgreSQL: what PendingLogins is to one server, shared by every
replica, so that any replica's webhook can finish a login any replica created.

A claim is one `UPDATE ... WHERE state = 'pending' ... RETURNING` (only one replica ever gets
it); a verdict is written, audited and announced with pg_notify in one transaction, so the
announcement goes out after the commit and only if the verdict was stored.
"""

import hmac
import logging

from ..audit import Decision
from ..logins import Login, Verdict, device_hash
from .central_audit import record
from .database import Database
from .shared_policy import remember_place

log = logging.getLogger("ssh-auth.hub")
CHANNEL = "ssh_auth_verdicts"  # lower case: an unquoted LISTEN name is folded to lower case
CLAIM_GRACE = 30  # seconds a claimed login may outlive its deadline while its PATCH finishes
LOGIN_COLUMNS = (
    "check_id, host, user_name, address, command, number, choices, nonce, check_url, key, "
    "whole_connection, short_token, page_token, device, code, state"
)


def _login(row) -> Login:
    (check_id, host, user, address, command, number, choices, nonce, check_url, key) = row[:10]
    whole, short_token, page_token, device, code, state = row[10:]
    return Login(
        check_id,
        user,
        address,
        command,
        number,
        list(choices),
        0.0,
        0.0,
        nonce,
        check_url,
        key,
        whole_connection=whole,
        host=host,
        short_token=short_token,
        page_token=page_token,
        device=bytes(device) if device is not None else None,
        code=code,
        claimed=state == "claimed",
    )


class SharedLogins:
    """Waiting logins, claims and verdicts, in the hub's database."""

    def __init__(self, database: Database, first_poll_delay: float, audit):
        self.database, self.first_poll_delay, self.audit = database, first_poll_delay, audit

    # --- what the webhook uses (the PendingLogins interface) --------------------------------

    def add(self, login: Login) -> None:
        """Store a login the hub created for one of its hosts; it waits until its deadline."""
        seconds = max(0.0, login.deadline - login.created)
        with self.database.transaction() as cursor:
            cursor.execute(
                "INSERT INTO logins (check_id, host, user_name, uid, address, command, number, "
                "choices, nonce, check_url, key, whole_connection, short_token, page_token, state, "
                "expires_at, next_poll_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, 'pending', now() + make_interval(secs => %s), "
                "now() + make_interval(secs => %s))",
                (
                    login.check_id,
                    login.host,
                    login.user,
                    login.uid if login.uid is not None else -1,
                    login.client,
                    login.command,
                    login.number,
                    login.choices,
                    login.nonce,
                    login.check_url,
                    login.key,
                    login.whole_connection,
                    login.short_token,
                    login.page_token,
                    seconds,
                    self.first_poll_delay,
                ),
            )

    def pending(self, check_id: str) -> Login | None:
        """The login for a check the hub created, if it is still waiting."""
        return self._one("check_id = %s AND state <> 'done'", check_id)

    def by_short_token(self, token: str) -> Login | None:
        """The waiting login whose short URL this is."""
        return self._one("short_token = %s AND state = 'pending'", token)

    def _one(self, condition: str, value: str) -> Login | None:
        with self.database.transaction() as cursor:
            cursor.execute(f"SELECT {LOGIN_COLUMNS} FROM logins WHERE {condition}", (value,))
            row = cursor.fetchone()
        return _login(row) if row else None

    def bind_device(self, login: Login, cookie: str) -> bool:
        """Bind the confirmation to the first browser that opens it, on whichever replica."""
        wanted = device_hash(cookie)
        with self.database.transaction() as cursor:
            cursor.execute(
                "UPDATE logins SET device = coalesce(device, %s) WHERE check_id = %s RETURNING device",
                (wanted, login.check_id),
            )
            row = cursor.fetchone()
        login.device = bytes(row[0]) if row else None
        return login.device is not None and hmac.compare_digest(login.device, wanted)

    def remember_code(self, login: Login, code: str) -> None:
        """Keep the code of the first verified redirect for this login."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "UPDATE logins SET code = coalesce(code, %s) WHERE check_id = %s RETURNING code",
                (code, login.check_id),
            )
            row = cursor.fetchone()
        login.code = row[0] if row else login.code

    def claim(self, check_id: str) -> Login | None:
        """Take a pending login for completion: one atomic UPDATE, so only one replica gets it."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "UPDATE logins SET state = 'claimed' WHERE check_id = %s AND state = 'pending' "
                f"AND expires_at > now() RETURNING {LOGIN_COLUMNS}",
                (check_id,),
            )
            row = cursor.fetchone()
        return _login(row) if row else None

    def finish(self, check_id: str, verdict: Verdict, host: str | None = None) -> bool:
        """Store the verdict, audit it and announce it to the host's agent; False if the login
        already had one (or, with host, is not that host's)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "UPDATE logins SET state = 'done', allow = %s, outcome = %s, reason = %s, "
                "decided_at = now() WHERE check_id = %s AND state <> 'done' "
                "AND (%s::text IS NULL OR host = %s) RETURNING host, user_name, uid, address, "
                "extract(epoch FROM now() - created_at)::float",
                (verdict.allow, verdict.outcome, verdict.reason, check_id, host, host),
            )
            row = cursor.fetchone()
            if row is None:
                return False
            host, user, uid, address, seconds = row
            decision = Decision(user, uid, address, check_id, verdict.outcome, verdict.reason, seconds)
            record(cursor, host, decision)
            if verdict.outcome == "allowed":
                remember_place(cursor, user, address)
            cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, host))
        self.audit.record(decision)  # the replica's own log line, after the commit
        return True

    def drop(self, check_id: str) -> None:
        """Nothing to do: a finished login stays in the table until the sweep prunes it."""

    # --- what the hub's API and sweeper use --------------------------------------------------

    def decided(self, host: str, check_ids: list[str]) -> tuple[list[dict], list[str]]:
        """(verdicts among these logins of this host, ids this host has no login for)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT check_id, state, allow, outcome, reason FROM logins "
                "WHERE host = %s AND check_id = ANY(%s)",
                (host, check_ids),
            )
            rows = cursor.fetchall()
        known = {row[0] for row in rows}
        verdicts = [
            {"id": check_id, "allow": allow, "outcome": outcome, "reason": reason}
            for check_id, state, allow, outcome, reason in rows
            if state == "done"
        ]
        return verdicts, [check_id for check_id in check_ids if check_id not in known]

    def overdue(self) -> list[str]:
        """Logins past their deadline (a claimed one gets CLAIM_GRACE for its PATCH)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT check_id FROM logins WHERE (state = 'pending' AND expires_at <= now()) "
                "OR (state = 'claimed' AND expires_at <= now() - make_interval(secs => %s))",
                (CLAIM_GRACE,),
            )
            return [row[0] for row in cursor.fetchall()]

    def lease_polls(self, interval: float, lease: float, limit: int = 20) -> list[tuple[str, bool]]:
        """Take the fallback polls now due, each for one replica: (check_id, claimed) pairs.
        A short transaction: the lease, not a row lock, is held across the API call."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "UPDATE logins SET poll_lease_until = now() + make_interval(secs => %s), "
                "next_poll_at = now() + make_interval(secs => %s) WHERE check_id IN ("
                "SELECT check_id FROM logins WHERE state <> 'done' AND next_poll_at <= now() "
                "AND (poll_lease_until IS NULL OR poll_lease_until <= now()) "
                "ORDER BY next_poll_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING check_id, state = 'claimed'",
                (lease, interval, limit),
            )
            return cursor.fetchall()

    def prune(self, keep_days: int = 1) -> None:
        """Forget finished logins (the audit table keeps their history)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "DELETE FROM logins WHERE state = 'done' "
                "AND decided_at < now() - make_interval(days => %s)",
                (keep_days,),
            )
