"""The fleet's hosts: enrolment with a one-time token, the key each host signs with, revocation."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from ..errors import ExitCode, SshAuthError
from .database import Database

ENROL_HOURS = 24  # an enrolment token not used within this is void
# Ed25519 points of small order (as libsodium refuses them): with such a "public key" one
# signature verifies for every message, so anyone could sign as the host.
SMALL_ORDER = frozenset(
    bytes.fromhex(point)
    for point in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    )
)


class HostError(SshAuthError):
    """An enrolment step that cannot be done, with what to do instead."""

    exit_code = ExitCode.CANNOT


@dataclass(frozen=True)
class Host:
    """One host as the hub knows it."""

    name: str
    public_key: bytes | None
    created_at: datetime
    joined_at: datetime | None
    revoked_at: datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        return "joined" if self.public_key else "invited"


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Hosts:
    """The hosts table."""

    def __init__(self, database: Database):
        self.database = database

    def add(self, name: str) -> str:
        """Invite a host (or re-invite a revoked one); its one-time enrolment token."""
        token = secrets.token_hex(32)  # 256 bits; never starts with '-' (an option to argparse)
        with self.database.transaction() as cursor:
            cursor.execute(
                "INSERT INTO hosts (name, enrol_token_hash, enrol_expires_at) VALUES "
                "(%s, %s, now() + make_interval(hours => %s)) ON CONFLICT (name) DO UPDATE SET "
                "enrol_token_hash = excluded.enrol_token_hash, "
                "enrol_expires_at = excluded.enrol_expires_at, public_key = NULL, "
                "joined_at = NULL, revoked_at = NULL "
                "WHERE hosts.revoked_at IS NOT NULL OR hosts.public_key IS NULL",
                (name, _hash(token), ENROL_HOURS),
            )
            if cursor.rowcount != 1:
                raise HostError(f"{name} is already enrolled; revoke it first (fleet revoke-host)")
        return token

    def join(self, token: str, public_key: bytes) -> str | None:
        """Register the host's public key with its token (once); the host's name, or None."""
        if len(public_key) != 32 or public_key in SMALL_ORDER:
            return None
        with self.database.transaction() as cursor:
            cursor.execute(
                "UPDATE hosts SET public_key = %s, joined_at = now(), enrol_token_hash = NULL, "
                "enrol_expires_at = NULL WHERE enrol_token_hash = %s AND enrol_expires_at > now() "
                "AND revoked_at IS NULL RETURNING name",
                (public_key, _hash(token)),
            )
            row = cursor.fetchone()
        return row[0] if row else None

    def revoke(self, name: str) -> list[str]:
        """Stop the host's next request; the ids of its logins still waiting (to be denied)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "UPDATE hosts SET revoked_at = now(), enrol_token_hash = NULL "
                "WHERE name = %s AND revoked_at IS NULL",
                (name,),
            )
            if cursor.rowcount != 1:
                raise HostError(f"no enrolled host named {name}")
            cursor.execute("SELECT check_id FROM logins WHERE host = %s AND state <> 'done'", (name,))
            return [row[0] for row in cursor.fetchall()]

    def get(self, name: str) -> Host | None:
        """The host by its name."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT name, public_key, created_at, joined_at, revoked_at FROM hosts WHERE name = %s",
                (name,),
            )
            row = cursor.fetchone()
        return _host(row) if row else None

    def all(self) -> list[Host]:
        """Every host, by name."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT name, public_key, created_at, joined_at, revoked_at FROM hosts ORDER BY name"
            )
            return [_host(row) for row in cursor.fetchall()]

    def first_use(self, name: str, nonce: str) -> bool:
        """Whether this request nonce is new for the host (False: a replay)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "INSERT INTO request_nonces (host, nonce) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (name, nonce),
            )
            return cursor.rowcount == 1

    def prune_nonces(self, older_than: int) -> None:
        """Forget nonces older than the replay window (their dates are refused anyway)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "DELETE FROM request_nonces WHERE seen_at < now() - make_interval(secs => %s)",
                (older_than,),
            )


def _host(row) -> Host:
    name, key, created, joined, revoked = row
    return Host(name, bytes(key) if key is not None else None, created, joined, revoked)
