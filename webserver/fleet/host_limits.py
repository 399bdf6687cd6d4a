"""What one host may ask of one replica: requests a second, items of audit a second, long-polls at
once. A host gone bad (its key stolen) cannot take the replica's threads, disk or database
from the other hosts and the phones."""

import threading
import time
from collections.abc import Callable

REQUESTS = (1000, 100.0)  # (burst, per second) of signed requests per host and replica
AUDIT_ITEMS = (1000, 20.0)  # forwarded decisions per host and replica
LONG_POLLS = 2  # verdict long-polls held at once per host and replica (an agent holds one)


class Buckets:
    """A token bucket per key."""

    def __init__(self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic):
        self.burst, self.rate, self.clock = burst, rate, clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, float]] = {}

    def take(self, key: str, count: int = 1) -> bool:
        """Take `count` tokens for the key; False (nothing taken) if it has not that many."""
        now = self.clock()
        with self._lock:
            tokens, when = self._tokens.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - when) * self.rate)
            if tokens < count:
                self._tokens[key] = (tokens, now)
                return False
            self._tokens[key] = (tokens - count, now)
            return True


class Concurrent:
    """At most `limit` at once per key."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def enter(self, key: str) -> bool:
        with self._lock:
            if self._held.get(key, 0) >= self.limit:
                return False
            self._held[key] = self._held.get(key, 0) + 1
            return True

    def leave(self, key: str) -> None:
        with self._lock:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]


class HostLimits:
    """The limits of one replica, per host."""

    def __init__(self):
        self.requests = Buckets(*REQUESTS)
        self.audit_items = Buckets(*AUDIT_ITEMS)
        self.long_polls = Concurrent(LONG_POLLS)
