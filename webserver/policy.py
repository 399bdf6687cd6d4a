"""Login policy: exemptions, reuse of an approval, and the limits, all keyed on what the kernel says.

Every store here is pruned (prune() runs from the broker's loop), so no caller can grow it without
bound: a key falls away when its window has passed or its SSH connection has ended.
"""

import ipaddress
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable

from .connection import SshConnection

RATE_WINDOW = 600.0  # max_checks_per_user counts check creations in this window
PER_UID_FACTOR = 10  # one account, from all its addresses: this many times max_checks_per_user
SERVICE_SHARE = 10  # one account may start at most 1/10 of max_checks_per_minute in a minute
TRUST_SECONDS = 30 * 86400  # a place where the phone approved an account is trusted this long
DENIAL_BURST = 60  # denials per uid and address logged one by one before they are summarised...
DENIALS_PER_SECOND = 1.0  # ...and the rate at which single lines come back
SUMMARY_EVERY = 60.0  # seconds between summary lines for denials not logged one by one


def matches(name_list: Iterable[str], names: Iterable[str]) -> bool:
    """Duo-style list: true if any name is listed and none is negated with '!'."""
    names = set(names)
    negated = {entry[1:] for entry in name_list if entry.startswith("!")}
    listed = {entry for entry in name_list if not entry.startswith("!")}
    return not (names & negated) and bool(names & listed)


def is_exempt(user: str, groups: Iterable[str], exempt_users, exempt_groups) -> bool:
    """An explicit exemption by user name or group (break-glass and service accounts)."""
    if f"!{user}" in exempt_users:
        return False
    return matches(exempt_users, [user]) or matches(exempt_groups, groups)


SFTP_SERVERS = ("sftp-server", "internal-sftp")


def is_sftp_session(command: str | None, tty: bool) -> bool:
    """sftp (and scp in its default SFTP mode): a subsystem whose stderr sshd discards."""
    words = (command or "").split()
    if tty or not words:
        return False
    return words[0].rsplit("/", 1)[-1] in SFTP_SERVERS


class SlidingWindow:
    """At most `limit` events per key in any `window` seconds."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self._events: dict[Hashable, deque] = defaultdict(deque)

    def wait(self, key: Hashable, now: float) -> float:
        """Seconds until the key may have another event (0: now)."""
        events = self._events.get(key)
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            self._events.pop(key, None)  # never leave an empty window behind
            return 0.0
        return 0.0 if len(events) < self.limit else events[0] + self.window - now

    def add(self, key: Hashable, now: float) -> None:
        """Count one event for the key."""
        self._events[key].append(now)

    def prune(self, now: float) -> None:
        """Forget keys with no event in the window."""
        stale = now - self.window
        for key in [k for k, events in self._events.items() if not events or events[-1] <= stale]:
            del self._events[key]


def place(address: str) -> str:
    """Where a client is, for limits: its IPv4 address, or its IPv6 /64 (one subscriber's)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # "local": no address at all
    prefix = 64 if ip.version == 6 else 32
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class CheckBudget:
    """Check creations per (uid, place), per uid, per uid a minute, and for the whole service.

    A place where the phone approved this account recently (`trusted`) keeps only its own limit:
    someone holding the account's password elsewhere cannot use up the owner's checks, nor can a
    few accounts use up everyone's.
    """

    def __init__(self, per_address: int, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._per_place = SlidingWindow(per_address, RATE_WINDOW)
        self._per_uid = SlidingWindow(per_address * PER_UID_FACTOR, RATE_WINDOW)
        self._per_uid_minute = SlidingWindow(max(1, per_minute // SERVICE_SHARE), 60.0)
        self._service = SlidingWindow(per_minute, 60.0)

    def take(self, uid: int, address: str, trusted: bool = False) -> tuple[str, int] | None:
        """Count a check creation; or ("user" | "service", seconds to wait) if over a limit."""
        now = self.clock()
        where = (uid, place(address))
        limits = [("user", self._per_place, where)]
        if not trusted:
            limits += [
                ("user", self._per_uid, uid),
                ("user", self._per_uid_minute, uid),
                ("service", self._service, None),
            ]
        with self._lock:
            for which, window, key in limits:
                wait = window.wait(key, now)
                if wait > 0:
                    return which, int(wait) + 1
            for _, window, key in limits:
                window.add(key, now)
        return None

    def prune(self) -> None:
        """Forget windows that have passed."""
        now = self.clock()
        with self._lock:
            for window in (self._per_place, self._per_uid, self._per_uid_minute, self._service):
                window.prune(now)


class TrustedPlaces:
    """(uid, place) pairs where the phone approved a login recently: the owner's own places."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._until: dict[tuple[int, str], float] = {}

    def remember(self, uid: int, address: str) -> None:
        """The phone approved this account's login from this address."""
        with self._lock:
            self._until[(uid, place(address))] = self.clock() + TRUST_SECONDS

    def trusted(self, uid: int, address: str) -> bool:
        """Whether the phone approved this account from this place within TRUST_SECONDS."""
        with self._lock:
            return self._until.get((uid, place(address)), 0.0) > self.clock()

    def prune(self) -> None:
        """Forget places not approved for TRUST_SECONDS."""
        now = self.clock()
        with self._lock:
            for key in [k for k, until in self._until.items() if until <= now]:
                del self._until[key]


class TokenBuckets:
    """A token bucket per key: `burst` at once, refilled at `rate` a second."""

    def __init__(self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic):
        self.burst, self.rate, self.clock = burst, rate, clock
        self._lock = threading.Lock()
        self._tokens: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: Hashable, count: int = 1) -> bool:
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

    def prune(self) -> None:
        """Forget buckets that are full again."""
        now = self.clock()
        with self._lock:
            full = [
                key
                for key, (tokens, when) in self._tokens.items()
                if tokens + (now - when) * self.rate >= self.burst
            ]
            for key in full:
                del self._tokens[key]


class Denials:
    """Denials made without a phone check, per (uid, address): a burst, then a steady rate, get a
    log line each; the rest are counted, and summarised once a minute.

    Such denials cost the caller nothing, so they are what a flood is made of; allowed logins
    (exemptions, reuse on a ControlMaster connection) and phone checks (budgeted) are not.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._lines = TokenBuckets(DENIAL_BURST, DENIALS_PER_SECOND, clock)
        self._refused: dict[Hashable, tuple[int, float]] = {}  # key -> (count, since)

    def loggable(self, key: Hashable) -> bool:
        """Whether this denial gets its own line; False (and counted) when the key is flooding."""
        if self._lines.take(key):
            return True
        now = self.clock()
        with self._lock:
            count, since = self._refused.get(key, (0, now))
            self._refused[key] = (count + 1, since)
        return False

    def summaries(self, final: bool = False) -> list[tuple[Hashable, int, float]]:
        """(key, denials not logged, over how many seconds) for each key due a summary line."""
        now = self.clock()
        with self._lock:
            due = [
                (key, count, now - since)
                for key, (count, since) in self._refused.items()
                if final or now - since >= SUMMARY_EVERY
            ]
            for key, _, _ in due:
                del self._refused[key]
        return due

    def prune(self) -> None:
        """Forget buckets that are full again."""
        self._lines.prune()


class Approvals:
    """Approvals that later sessions on the same live SSH connection may reuse (ControlMaster)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._until: dict[tuple[int, SshConnection], float] = {}

    def remember(self, uid: int, connection: SshConnection, seconds: float) -> None:
        """The phone approved a login on this connection: reusable for `seconds` while it lives."""
        with self._lock:
            self._until[(uid, connection)] = self.clock() + seconds

    def reused(self, uid: int, connection: SshConnection) -> bool:
        """Whether this uid's connection holds a current approval (and is still the same one)."""
        with self._lock:
            until = self._until.get((uid, connection), 0.0)
        return self.clock() < until and connection.alive()

    def prune(self) -> None:
        """Forget approvals that ran out or whose connection ended."""
        now = self.clock()
        with self._lock:
            items = list(self._until.items())
        gone = [key for key, until in items if until <= now or not key[1].alive()]
        with self._lock:
            for key in gone:
                self._until.pop(key, None)


class ConnectionAddresses:
    """The client address of each SSH connection, as given at its first login; never changed."""

    def __init__(self):
        self._lock = threading.Lock()
        self._address: dict[SshConnection, str] = {}

    def bind(self, connection: SshConnection, address: str) -> str:
        """The connection's address: the one its first login gave (a later one must match it)."""
        with self._lock:
            return self._address.setdefault(connection, address)

    def prune(self) -> None:
        """Forget connections that have ended."""
        with self._lock:
            connections = list(self._address)
        gone = [connection for connection in connections if not connection.alive()]
        with self._lock:
            for connection in gone:
                self._address.pop(connection, None)


class Waiting:
    """Logins waiting at once, capped per key: e.g. per (uid, connection), per (uid, address)."""

    def __init__(self, limits: dict[str, int]):
        self.limits = limits
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, Hashable], int] = defaultdict(int)

    def admit(self, keys: dict[str, Hashable]) -> bool:
        """Count a waiting login under each of its keys, unless one is at its limit."""
        with self._lock:
            if any(self._counts[(kind, key)] >= self.limits[kind] for kind, key in keys.items()):
                return False
            for kind, key in keys.items():
                self._counts[(kind, key)] += 1
        return True

    def release(self, keys: dict[str, Hashable]) -> None:
        """The login no longer waits."""
        with self._lock:
            for kind, key in keys.items():
                self._counts[(kind, key)] -= 1
                if not self._counts[(kind, key)]:
                    del self._counts[(kind, key)]


class OneAnswerPerConnection:
    """SSH connections that have had their answer (auth-time mode): a client retries
    keyboard-interactive after a failure, and a retry must not start another check."""

    def __init__(self):
        self._lock = threading.Lock()
        self._checked: set[SshConnection] = set()

    def first(self, connection: SshConnection) -> bool:
        """True the first time a connection asks; False for every later ask."""
        with self._lock:
            if connection in self._checked:
                return False
            self._checked.add(connection)
            return True

    def prune(self) -> None:
        """Forget connections that have ended."""
        with self._lock:
            connections = list(self._checked)
        gone = {connection for connection in connections if not connection.alive()}
        with self._lock:
            self._checked -= gone
