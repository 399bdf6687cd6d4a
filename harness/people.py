"""People: someone holding a phone with one SIM, who scans a QR and answers the page."""

import re
import threading
from collections.abc import Callable

import requests

from emulator.phone import Phone, page_forms

from .deployment import CHECK_URL, Session


class PhoneHolder:
    """A person holding a phone with one SIM: scans a QR, then approves, denies or picks."""

    def __init__(self, sim: str | None):
        self.sim = sim
        self.hops: list[str] = []
        self.phone = Phone(say=self.hops.append)

    def scan(self, url: str, network_error: str | None = None) -> requests.Response:
        """Open the check URL on mobile data; the confirmation page (or an error page)."""
        return self.phone.scan(url, sim=self.sim, network_error=network_error)

    def approve(self, url: str, pick: str | None = None) -> requests.Response:
        """Scan and press Approve (or the number, under number_match)."""
        return self.phone.answer(self.scan(url), "approve", pick)

    def phone_picks(self, page: requests.Response) -> list[str]:
        """The numbers the confirmation page offers."""
        return [v for form in page_forms(page.text) for name, v in form.buttons if name == "pick"]

    def deny(self, url: str) -> requests.Response:
        """Scan and press Deny."""
        return self.phone.answer(self.scan(url), "deny")


class Watcher:
    """Acts once on each new match of `pattern` in what a client shows, until stopped."""

    def __init__(self, text: Callable[[], str], pattern: re.Pattern, act: Callable[[str], None]):
        self.text, self.pattern, self.act = text, pattern, act
        self.approved: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for url in self.pattern.findall(self.text()):
                if url not in self.approved:
                    self.approved.append(url)
                    self.act(url)
            self._stop.wait(0.02)


class Approver(Watcher):
    """A person who approves, on the right phone, every check URL a client prints (until stopped)."""

    def __init__(self, session: Session, sim: str):
        super().__init__(session.text, CHECK_URL, lambda url: PhoneHolder(sim).approve(url))
