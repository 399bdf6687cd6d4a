"""A real PostgreSQL server of the test's own, from Debian's postgresql package, on a loopback port.

initdb refuses to run as root, so initdb and postgres run as the postgres user, in a directory it
owns outside any 0700 root temporary directory; the hub connects over TCP with a password, as in
production. Stopped (and removable) again by the fixture that started it.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from .processes import ServerProcess, free_port

BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = ROLE = "ssh_auth"


class Postgres:
    """initdb once; start() and stop() as often as a test needs (same data, same port)."""

    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="sa-pg-", dir="/var/tmp"))
        shutil.chown(self.directory, "postgres", "postgres")
        os.chmod(self.directory, 0o700)
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.server: ServerProcess | None = None
        self.url = f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def __enter__(self) -> "Postgres":
        try:
            self._initdb()
            self.start()
            self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
            self.psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _as_postgres(self, *argv: str, **options) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            check=True,
            cwd=self.directory,
            **options,
        )

    def _initdb(self) -> None:
        self._as_postgres(
            str(BIN / "initdb"),
            "-D",
            str(self.directory / "data"),
            "-U",
            "postgres",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server on its port; ready when it accepts connections."""
        argv = [
            "runuser", "-u", "postgres", "--", str(BIN / "postgres"),
            "-D", str(self.directory / "data"),
            "-p", str(self.port),
            "-k", str(self.directory),  # its Unix socket, for psql as postgres
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",  # a test's database: speed over durability
            "-c", "max_connections=300",
        ]  # fmt: skip
        self.server = ServerProcess(
            argv, self.directory / "postgres.log", ready=self._ready, cwd=self.directory
        )
        self.server.start()

    def _ready(self, _server) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            pass
        result = subprocess.run(
            [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open connections are ended, as when a database goes away."""
        if self.server is not None:
            self.server.stop(signal.SIGINT)
            self.server = None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the postgres superuser; its output."""
        return self._as_postgres(
            str(BIN / "psql"), "-h", str(self.directory), "-p", str(self.port),
            "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql,
        ).stdout  # fmt: skip

    def close(self) -> None:
        """Stop the server and remove its data."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
