"""The hub's registry, limits and trusted places in PostgreSQL: the same policy as one server's
(gatekeeper.policy, check_refusal), with counters every replica shares."""

from ..policy import PER_UID_FACTOR, RATE_WINDOW, SERVICE_SHARE, TRUST_SECONDS, place
from ..registry import Registration
from .database import Database

BUDGET_LOCK = 726379  # one check creation counted at a time across the replicas
HOST_SHARE = 2  # one host may start at most 1/2 of max_checks_per_minute: a host gone bad
# cannot use up the checks of every other host


class SharedRegistry:
    """Users and their phones, registered once for the whole fleet."""

    def __init__(self, database: Database):
        self.database = database

    def lookup(self, user: str) -> Registration:
        """The user's registration (DatabaseUnavailable if the database is down)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                # SECURITY: an allow-once that has ended is no exemption.
                "SELECT phone, CASE WHEN allow_once_until > now() "
                "THEN extract(epoch FROM allow_once_until)::float END FROM users WHERE name = %s",
                (user,),
            )
            row = cursor.fetchone()
        if row is None:
            return Registration()
        phone, until = row
        return Registration(phone=phone, allow_once_until=until if until else None)

    def register(self, user: str, phone: str) -> bool:
        """Set the user's phone; False if it was already this one."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "INSERT INTO users (name, phone) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                "SET phone = excluded.phone, updated_at = now() "
                "WHERE users.phone IS DISTINCT FROM excluded.phone",
                (user, phone),
            )
            return cursor.rowcount == 1

    def unregister(self, user: str) -> bool:
        """Forget the user; False if they were not registered."""
        with self.database.transaction() as cursor:
            cursor.execute("DELETE FROM users WHERE name = %s", (user,))
            return cursor.rowcount == 1

    def allow_once(self, user: str, until: int) -> bool:
        """Let a registered user in without the phone until `until` (epoch); False if unknown."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "UPDATE users SET allow_once_until = to_timestamp(%s) WHERE name = %s", (until, user)
            )
            return cursor.rowcount == 1

    def entries(self) -> list[tuple[str, str]]:
        """Every (user, phone), by name."""
        with self.database.transaction() as cursor:
            cursor.execute("SELECT name, phone FROM users ORDER BY name")
            return cursor.fetchall()


class SharedBudget:
    """CheckBudget's limits, counted in the database: per (user, place), per user, per user a
    minute, per host a minute, and for the whole fleet a minute."""

    def __init__(self, database: Database, per_address: int, per_minute: int):
        self.database = database
        self.limits = (per_address, per_address * PER_UID_FACTOR, max(1, per_minute // SERVICE_SHARE))
        self.per_minute = per_minute

    def for_host(self, host: str) -> "HostBudget":
        """This budget as one host's logins use it (gatekeeper.check_refusal's `budget`)."""
        return HostBudget(self, host)

    def take(self, host: str, user: str, address: str, trusted: bool = False) -> tuple[str, int] | None:
        """Count a check creation; or ("user" | "service", seconds to wait) if over a limit."""
        where = place(address)
        per_place, per_user, per_user_minute = self.limits
        checks = [("user", per_place, RATE_WINDOW, "user_name = %(user)s AND place = %(place)s")]
        if not trusted:  # the owner's own place keeps its checks when others use up the user's
            checks += [
                ("user", per_user, RATE_WINDOW, "user_name = %(user)s"),
                ("user", per_user_minute, 60.0, "user_name = %(user)s"),
            ]
        # SECURITY: always, trusted or not: a host names its clients' addresses itself, so a
        # host gone bad could name a trusted place; it still gets only its share of the fleet's.
        checks += [
            ("service", max(1, self.per_minute // HOST_SHARE), 60.0, "host = %(host)s"),
            ("service", self.per_minute, 60.0, "true"),
        ]
        # One query: each limit's count in its window, and when its oldest event leaves it.
        columns = []
        for _, _, window, condition in checks:
            within = f"{condition} AND at > now() - interval '{window:g} seconds'"
            columns += [
                f"count(*) FILTER (WHERE {within})",
                f"extract(epoch FROM min(at) FILTER (WHERE {within}) "
                f"+ interval '{window:g} seconds' - now())::float",
            ]
        query = (
            f"SELECT {', '.join(columns)} FROM check_events "
            f"WHERE at > now() - interval '{RATE_WINDOW:g} seconds'"
        )
        values = {"user": user, "place": where, "host": host}
        with self.database.transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_LOCK,))
            cursor.execute(query, values)
            row = cursor.fetchone()
            for index, (which, limit, _, _) in enumerate(checks):
                count, wait = row[2 * index], row[2 * index + 1]
                if count >= limit:
                    return which, int(wait or 0) + 1
            cursor.execute(
                "INSERT INTO check_events (host, user_name, place) VALUES (%s, %s, %s)",
                (host, user, where),
            )
        return None

    def prune(self) -> None:
        """Forget events older than the longest window."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "DELETE FROM check_events WHERE at < now() - make_interval(secs => %s)",
                (RATE_WINDOW,),
            )


class HostBudget:
    """The shared budget with the host filled in: take(user, address, trusted)."""

    def __init__(self, budget: SharedBudget, host: str):
        self.budget, self.host = budget, host

    def take(self, user: str, address: str, trusted: bool = False) -> tuple[str, int] | None:
        return self.budget.take(self.host, user, address, trusted)


def remember_place(cursor, user: str, address: str) -> None:
    """The phone approved this user from this place: trusted for TRUST_SECONDS (in the caller's
    transaction, the one that stores the verdict)."""
    cursor.execute(
        "INSERT INTO trusted_places (user_name, place, until) VALUES "
        "(%s, %s, now() + make_interval(secs => %s)) ON CONFLICT (user_name, place) "
        "DO UPDATE SET until = excluded.until",
        (user, place(address), TRUST_SECONDS),
    )


class SharedTrusted:
    """Places where the phone approved a user recently (written by SharedLogins.finish)."""

    def __init__(self, database: Database):
        self.database = database

    def trusted(self, user: str, address: str) -> bool:
        """Whether the phone approved this user from this place within the trust period."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT 1 FROM trusted_places WHERE user_name = %s AND place = %s AND until > now()",
                (user, place(address)),
            )
            return cursor.fetchone() is not None

    def prune(self) -> None:
        """Forget places whose trust ran out."""
        with self.database.transaction() as cursor:
            cursor.execute("DELETE FROM trusted_places WHERE until <= now()")
