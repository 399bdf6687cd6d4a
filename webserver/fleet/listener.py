"""One LISTEN connection per hub replica, fanning verdict announcements out to the long-polls
waiting in this replica: a long-poll subscribes, then reads, then waits for its host's next
announcement, so no verdict committed after its read can be missed."""

import logging
import threading
import time

import psycopg

from .database import Database, DatabaseUnavailable
from .shared_logins import CHANNEL

log = logging.getLogger("ssh-auth.hub")
RECONNECT_EVERY = 1.0  # seconds between attempts to get the LISTEN connection back


class Subscription:
    """One long-poll's wait for its host's next announcement."""

    def __init__(self):
        self.event = threading.Event()

    def wait(self, seconds: float) -> bool:
        """True when an announcement for the host (or a reconnect) came within seconds."""
        return self.event.wait(seconds)


class VerdictListener:
    """LISTEN on the verdict channel in a thread of its own; wake the subscribed long-polls."""

    def __init__(self, database: Database):
        self.database = database
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._stop = threading.Event()
        self._connection: psycopg.Connection | None = None
        self.listening = threading.Event()  # set while the LISTEN connection is up
        self._thread = threading.Thread(target=self._run, name="verdict-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def subscribe(self, host: str) -> Subscription:
        """Be woken by the host's next announcement; call before reading the stored verdicts."""
        subscription = Subscription()
        with self._lock:
            self._subscribers.setdefault(host, set()).add(subscription)
        return subscription

    def unsubscribe(self, host: str, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(host, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers.pop(host, None)

    def _wake(self, host: str | None) -> None:
        """Wake the long-polls of one host, or of every host (None: after a reconnect)."""
        with self._lock:
            if host is None:
                subscriptions = [s for group in self._subscribers.values() for s in group]
            else:
                subscriptions = list(self._subscribers.get(host, ()))
        for subscription in subscriptions:
            subscription.event.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except (DatabaseUnavailable, psycopg.Error, OSError) as error:
                if self.listening.is_set():
                    log.warning("the verdict LISTEN connection was lost: %s", error)
            finally:
                self.listening.clear()
                connection, self._connection = self._connection, None
                if connection is not None:
                    try:
                        connection.close()
                    except Exception:
                        pass
            self._stop.wait(RECONNECT_EVERY)

    def _listen(self) -> None:
        self._connection = self.database.connect(autocommit=True)
        self._connection.execute(f"LISTEN {CHANNEL}")
        self.listening.set()
        # SECURITY (no lost verdict): announcements made while the connection was down were
        # missed; every waiting long-poll reads the stored verdicts again.
        self._wake(None)
        log.info("listening for verdicts")
        while not self._stop.is_set():
            started = time.monotonic()
            for notify in self._connection.notifies(timeout=1.0, stop_after=None):
                self._wake(notify.payload)
                if self._stop.is_set() or time.monotonic() - started > 1.0:
                    break
