"""Real processes for tests, the demo and benchmarks: started in their own session, logged,
killed as a group."""

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A context-managed server: ready when `ready()` is true within the deadline, else its log."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        ready: Callable[["ServerProcess"], bool],
        env: dict | None = None,
        timeout: float = 20.0,
        **popen,
    ):
        self.argv, self.log_path, self.ready, self.env = argv, Path(log_path), ready, env
        self.timeout, self.popen = timeout, popen
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start the process and wait until it answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log = log
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            **self.popen,
        )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[0]} exited with {self.process.returncode}:\n" + self.log_text()
                )
            try:
                if self.ready(self):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.argv[0]} not ready in {self.timeout} s:\n" + self.log_text())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group, then SIGKILL whatever is left."""
        if self.process is None:
            return
        for each in (sig, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, each)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process.wait()
        self._log.close()

    def log_text(self) -> str:
        """The process's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_match(self, pattern: str) -> re.Match | None:
        """The first match of a regex in the output so far."""
        return re.search(pattern, self.log_text())


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing loudly with its output."""
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def send_through(port: int, payload: bytes) -> str:
    """What a forwarded port on loopback does with a payload: 'refused (...)' or 'OPEN: <reply>'."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(payload)
            data = conn.recv(100)
    except OSError as error:
        return f"refused ({type(error).__name__})"
    return "refused (closed)" if not data else f"OPEN: {data[:40]!r}"
