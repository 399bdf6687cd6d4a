"""The user -> phone registry: the tutorial's `user=<name>:<phone>` lines in ssh-auth.conf."""

import logging
import os
import re
import stat
import threading
import time

from .files import atomic_write, locked

USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?", re.IGNORECASE)
PHONE_PUNCTUATION = re.compile(r"[\s().-]")
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
        self._allow_once: dict[str, float] = {}

    def lookup(self, user: str) -> tuple[str | None, float | None]:
        """(registered number or None, end of a current `allow-once` exemption or None)."""
        with self._lock:
            self._reload_if_changed()
            phone, until = self._phones.get(user), self._allow_once.get(user, 0.0)
        return phone, until if until > time.time() else None

    def phone_for(self, user: str) -> str | None:
        """The registered number (E.164 digits) for a user, or None."""
        return self.lookup(user)[0]

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
        phones, self._allow_once = {}, {}
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if (owner := line_owner(line, "allow_once")) is not None:
                    until = line.partition(":")[2].strip()
                    self._allow_once[owner] = float(until) if until.isdigit() else 0.0
                elif line.strip().startswith("user"):
                    entry = parse_entry(line)
                    if entry is None:
                        log.warning("%s line %d: ignored malformed registry entry", self.path, number)
                        continue
                    phones[entry[0]] = entry[1]
        self._phones, self._stamp = phones, stamp


class RegistryError(ValueError):
    """A user name or phone number the registry refuses; the message says why."""


def normalise_phone(text: str) -> str:
    """'+44 7700 900123' -> '447700900123' (E.164 digits), or RegistryError."""
    digits = PHONE_PUNCTUATION.sub("", text)
    digits = digits[1:] if digits.startswith("+") else digits
    if not E164_DIGITS.fullmatch(digits):
        raise RegistryError(f"{text!r} is not a phone number in E.164 form, e.g. +44 7700 900123")
    return digits


def check_username(name: str) -> str:
    """A plausible local account name (no spaces, shell metacharacters or newlines)."""
    if not USERNAME.fullmatch(name):
        raise RegistryError(f"{name!r} is not a valid user name (letters, digits, _ . - only)")
    return name


def line_owner(line: str, key: str) -> str | None:
    """The user a `key=user:value` line is about, or None for any other line."""
    name, sep, value = line.strip().partition("=")
    if name.strip() != key or not sep or ":" not in value:
        return None
    return value.partition(":")[0].strip()


def set_line(path: str, key: str, user: str, value: str | None) -> bool:
    """Set (or with value=None, remove) the user's `key=user:value` line: atomic and locked.

    Comments, unknown lines and order are kept; duplicates of the user's line are dropped.
    Returns whether the file changed.
    """
    with locked(path):
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines(keepends=True)
            info = os.stat(path)
            mode, uid, gid = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
        except FileNotFoundError:
            lines, mode, uid, gid = [], 0o640, -1, -1
        new_line = f"{key}={user}:{value}\n" if value else None
        kept, placed = [], False
        for line in lines:
            if line_owner(line, key) == user:
                if new_line and not placed:
                    kept.append(new_line)
                    placed = True
                continue  # the old line, or a duplicate of it
            kept.append(line)
        if new_line and not placed:
            if kept and not kept[-1].endswith("\n"):
                kept[-1] += "\n"
            kept.append(new_line)
        if kept == lines:
            return False
        atomic_write(path, "".join(kept).encode(), mode, uid, gid)
        return True


def entries(path: str) -> list[tuple[str, str]]:
    """Every valid (user, phone) entry, in file order."""
    with open(path, encoding="utf-8") as handle:
        return [entry for line in handle if (entry := parse_entry(line))]
