"""Emulator-only controls under /_emulator/: injected faults, the clock, and call counts."""

import threading
import time
from collections import Counter
from dataclasses import dataclass

ENDPOINTS = frozenset({"token", "create", "get", "patch", "jwks", "redirect", "any"})
MODES = frozenset({"status", "timeout", "garbage", "partial", "close"})


@dataclass
class Fault:
    """One injected fault: which endpoint, how it fails, and how many more times."""

    endpoint: str
    mode: str
    status: int = 500
    retry_after: int | None = None
    count: int = 1
    seconds: float = 30.0

    @classmethod
    def from_json(cls, body) -> "Fault":
        """Validate a POST /_emulator/faults body; ValueError names what is wrong."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        unknown = set(body) - {"endpoint", "mode", "status", "retry_after", "count", "seconds"}
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
        if body.get("endpoint") not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(sorted(ENDPOINTS))}")
        if body.get("mode") not in MODES:
            raise ValueError(f"mode must be one of {', '.join(sorted(MODES))}")
        fault = cls(body["endpoint"], body["mode"])
        for name, kind in (
            ("status", int),
            ("retry_after", int),
            ("count", int),
            ("seconds", (int, float)),
        ):
            if name in body:
                if not isinstance(body[name], kind) or isinstance(body[name], bool):
                    raise ValueError(f"{name} must be a number")
                setattr(fault, name, body[name])
        if not 100 <= fault.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if fault.count < 1:
            raise ValueError("count must be at least 1")
        return fault


class Controls:
    """Call counters and the queue of pending faults, shared by every request thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Clear counters and faults."""
        with self._lock:
            self.calls: Counter[str] = Counter()
            self.faults: list[Fault] = []

    def record(self, endpoint: str) -> Fault | None:
        """Count one call and return the fault to apply to it, if any is armed."""
        with self._lock:
            self.calls[endpoint] += 1
            for fault in self.faults:
                if fault.endpoint in (endpoint, "any"):
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def add_fault(self, fault: Fault) -> None:
        """Arm a fault for the next `count` matching calls."""
        with self._lock:
            self.faults.append(fault)

    def stats(self) -> dict:
        """Calls per endpoint, for tests and benchmarks."""
        with self._lock:
            return {"calls": dict(self.calls), "faults_pending": len(self.faults), "time": time.time()}
