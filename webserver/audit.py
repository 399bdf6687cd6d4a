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

    def record(self, decision: Decision) -> None:
        """Log one decision."""
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
