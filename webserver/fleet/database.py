"""The hub's PostgreSQL: a small connection pool, transactions, and one error for "unavailable"."""

import logging
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import SshAuthError

log = logging.getLogger("ssh-auth.database")
CONNECT_TIMEOUT = 3  # seconds to reach the database before a login is denied
POOL_WAIT = 2  # seconds a request waits for a pooled connection (the database may be down)


class DatabaseUnavailable(SshAuthError):
    """The database cannot be reached or failed: the hub denies rather than guesses."""


class Database:
    """A pool of connections to the hub's database; each use is one transaction."""

    def __init__(self, url: str, max_size: int = 20):
        self.url = url
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=POOL_WAIT,
            kwargs={"connect_timeout": CONNECT_TIMEOUT},
            check=ConnectionPool.check_connection,  # a connection the database dropped is replaced
            reconnect_timeout=0,  # never give up: the database may come back
            open=False,
            name="ssh-auth",
        )
        self.pool.open(wait=False)

    @contextmanager
    def transaction(self):
        """A cursor in a transaction, committed on success, rolled back on an exception;
        DatabaseUnavailable when the database cannot be reached or fails."""
        try:
            with self.pool.connection() as connection, connection.cursor() as cursor:
                yield cursor
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise DatabaseUnavailable(f"the database is unavailable: {_first_line(error)}") from None

    def connect(self, **options) -> psycopg.Connection:
        """A connection of its own, outside the pool (LISTEN needs one for its whole life)."""
        try:
            return psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT, **options)
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(f"the database is unavailable: {_first_line(error)}") from None

    def close(self) -> None:
        """Close every pooled connection."""
        self.pool.close()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
