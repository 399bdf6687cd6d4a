"""One line per login decision: to the log (stderr/journald) and, if set, a JSON-lines file."""

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass

from sshshim.terminal import clean as clean_lines

OUTCOMES = frozenset({"allowed", "denied", "exempt", "reused", "failsafe", "error"})
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

    def record(self, decision: Decision) -> None:
        """Log one decision."""
        assert decision.outcome in OUTCOMES, decision.outcome
        fields = {k: clean(v) if isinstance(v, str) else v for k, v in asdict(decision).items()}
        fields["duration"] = round(decision.duration, 3)
        log.info(
            "login %(outcome)s user=%(user)s uid=%(uid)s client=%(client)s "
            "check=%(check_id)s duration=%(duration)ss reason=%(reason)s",
            fields,
        )
        if self.path:
            line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields})
            with self._lock, open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
