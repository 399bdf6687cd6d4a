"""One line per login decision: to the log (stderr/journald) and, if set, a JSON-lines file."""

import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
OUTCOMES = frozenset({"allowed", "denied", "exempt", "reused", "failsafe", "error"})
log = logging.getLogger("ssh-auth.audit")


def clean(value) -> str:
    """User- or network-supplied text with control characters removed (no log injection)."""
    return CONTROL_CHARACTERS.sub("", str(value))


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
