"""One line per login decision: to the log (stderr/journald) and, if set, a JSON-lines file."""

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass

from sshshim.protocol import clean as clean_lines

from .config import ConfigError
from .logins import OUTCOMES

SUPPRESSED = "suppressed"  # a summary line: denials not logged one by one (a flood)
FILE_ERROR_EVERY = 60.0  # seconds between log lines about an audit file that cannot be written
log = logging.getLogger("ssh-auth.audit")


def clean(value) -> str:
    """User- or network-supplied text on one line, control characters removed (no log injection)."""
    return clean_lines(value).replace("\n", "")


@dataclass(frozen=True)
class Decision:
    """What was decided for one login, and why."""

    user: str
    uid: int
    client: str
    check_id: str | None
    outcome: str
    reason: str
    duration: float


class LogLimit:
    """At most `per_minute` lines of each kind a minute; the rest counted, their number given
    with the next line that is written (so a flood of requests cannot flood the log)."""

    def __init__(self, per_minute: int = 30, clock=time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self._lock = threading.Lock()
        self._minute = 0
        self._written: dict[str, int] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, kind: str) -> int | None:
        """None: skip this line; else how many lines of this kind were skipped before it."""
        with self._lock:
            minute = int(self.clock() // 60)
            if minute != self._minute:
                self._minute, self._written = minute, {}
            if self._written.get(kind, 0) >= self.per_minute:
                self._skipped[kind] = self._skipped.get(kind, 0) + 1
                return None
            self._written[kind] = self._written.get(kind, 0) + 1
            return self._skipped.pop(kind, 0)


class Audit:
    """Writes each decision once; the JSON file is reopened per line so logrotate just works."""

    def __init__(self, path: str | None = None):
        self.path = path
        self._lock = threading.Lock()
        self._file_error_at = 0.0

    def check(self) -> None:
        """Refuse to start with an audit file this process cannot append to (created 0600)."""
        if not self.path:
            return
        try:
            os.close(self._open())
        except OSError as error:
            raise ConfigError(f"cannot write audit_log {self.path}: {error.strerror}") from None

    def record(self, decision: Decision, central: bool = False) -> None:
        """Log one decision (central: a fleet's hub has it already; see fleet.agent)."""
        assert decision.outcome in OUTCOMES | {SUPPRESSED}, decision.outcome
        fields = {k: clean(v) if isinstance(v, str) else v for k, v in asdict(decision).items()}
        fields["duration"] = round(decision.duration, 3)
        log.info(
            "login %(outcome)s user=%(user)s uid=%(uid)s client=%(client)s "
            "check=%(check_id)s duration=%(duration)ss reason=%(reason)s",
            fields,
        )
        if self.path:
            line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}) + "\n"
            self._append(line.encode())

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _append(self, data: bytes) -> None:
        with self._lock:
            try:
                fd = self._open()
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            except OSError as error:
                if time.monotonic() - self._file_error_at >= FILE_ERROR_EVERY:
                    self._file_error_at = time.monotonic()
                    log.error("cannot write the audit log %s: %s", self.path, error.strerror)
