"""The hub's database schema, created and migrated by `ssh-auth fleet init-db`: versioned steps,
each applied once in its own transaction, so running it again changes nothing."""

from .database import Database

# Each step is applied once, in order; a step never changes after it has shipped.
STEPS = {
    1: """
        CREATE TABLE hosts (
            name text PRIMARY KEY,
            public_key bytea,                 -- Ed25519, 32 bytes, set when the host joins
            enrol_token_hash bytea,           -- sha256 of the one-time token; cleared at join
            enrol_expires_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            joined_at timestamptz,
            revoked_at timestamptz
        );
        CREATE TABLE users (
            name text PRIMARY KEY,
            phone text NOT NULL,
            allow_once_until timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE logins (
            check_id text PRIMARY KEY,        -- the API's id; also the agent's name for the login
            host text NOT NULL REFERENCES hosts (name),
            user_name text NOT NULL,
            uid bigint NOT NULL,
            address text NOT NULL,
            command text,
            whole_connection boolean NOT NULL DEFAULT false,
            key text,
            check_url text NOT NULL,
            nonce text NOT NULL,
            short_token text NOT NULL UNIQUE,
            page_token text NOT NULL,
            number text,
            choices text[] NOT NULL DEFAULT '{}',
            device bytea,
            code text,
            state text NOT NULL CHECK (state IN ('pending', 'claimed', 'done')),
            allow boolean,
            outcome text,
            reason text,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            decided_at timestamptz,
            next_poll_at timestamptz,
            poll_lease_until timestamptz
        );
        CREATE INDEX logins_waiting ON logins (next_poll_at) WHERE state <> 'done';
        CREATE INDEX logins_open ON logins (expires_at) WHERE state <> 'done';
        CREATE INDEX logins_host ON logins (host, state);
        CREATE INDEX logins_decided ON logins (decided_at) WHERE state = 'done';
        CREATE TABLE request_nonces (
            host text NOT NULL,
            nonce text NOT NULL,
            seen_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (host, nonce)
        );
        CREATE TABLE check_events (
            host text NOT NULL,
            user_name text NOT NULL,
            place text NOT NULL,
            at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX check_events_at ON check_events (at);
        CREATE INDEX check_events_user ON check_events (user_name, at);
        CREATE INDEX check_events_host ON check_events (host, at);
        CREATE TABLE trusted_places (
            user_name text NOT NULL,
            place text NOT NULL,
            until timestamptz NOT NULL,
            PRIMARY KEY (user_name, place)
        );
        CREATE TABLE audit (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            host text,
            user_name text NOT NULL,
            uid bigint,
            address text,
            check_id text,
            outcome text NOT NULL,
            reason text NOT NULL,
            seconds double precision
        );
    """,
}
LATEST = max(STEPS)


def migrate(database: Database) -> list[int]:
    """Apply every step not applied yet; the versions applied now (none: already current)."""
    applied = []
    with database.transaction() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for version, sql in sorted(STEPS.items()):
        with database.transaction() as cursor:
            # One migrator at a time, even with two replicas started together.
            cursor.execute("SELECT pg_advisory_xact_lock(726378)")
            cursor.execute("SELECT 1 FROM schema_version WHERE version = %s", (version,))
            if cursor.fetchone():
                continue
            cursor.execute(sql)
            cursor.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied


def current(database: Database) -> int:
    """The schema version the database has (0: none)."""
    with database.transaction() as cursor:
        cursor.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        return cursor.fetchone()[0]
