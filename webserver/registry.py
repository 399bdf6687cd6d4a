"""The user -> phone registry: the tutorial's `user=<name>:<phone>` lines in ssh-auth.conf."""

import logging
import os
import re
import threading

USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?", re.IGNORECASE)
E164_DIGITS = re.compile(r"[1-9][0-9]{6,14}")
log = logging.getLogger("ssh-auth.registry")


def parse_entry(line: str) -> tuple[str, str] | None:
    """(user, phone) from a `user=name:phone` line, or None if the line is not a valid entry."""
    key, sep, value = line.strip().partition("=")
    if key.strip() != "user" or not sep:
        return None
    name, sep, phone = value.strip().partition(":")
    phone = phone.strip().lstrip("+")
    if not sep or not USERNAME.fullmatch(name.strip()) or not E164_DIGITS.fullmatch(phone):
        return None
    return name.strip(), phone


class Registry:
    """Who is registered with which number; reloaded when the file changes (no restart)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._phones: dict[str, str] = {}

    def phone_for(self, user: str) -> str | None:
        """The registered number (E.164 digits) for a user, or None."""
        with self._lock:
            self._reload_if_changed()
            return self._phones.get(user)

    def _reload_if_changed(self) -> None:
        try:
            info = os.stat(self.path)
        except OSError as error:
            log.error("cannot read the registry %s: %s", self.path, error.strerror)
            self._phones, self._stamp = {}, None
            return
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp:
            return
        phones = {}
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip().startswith("user"):
                    entry = parse_entry(line)
                    if entry is None:
                        log.warning("%s line %d: ignored malformed registry entry", self.path, number)
                        continue
                    phones[entry[0]] = entry[1]
        self._phones, self._stamp = phones, stamp
