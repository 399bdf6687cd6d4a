"""The user -> phone registry: the tutorial's `user=<name>:<phone>` lines in ssh-auth.conf."""

import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass

from .errors import ExitCode, SshAuthError
from .files import atomic_write, locked

USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?", re.IGNORECASE)
PHONE_PUNCTUATION = re.compile(r"[\s().-]")
E164_DIGITS = re.compile(r"[1-9][0-9]{6,14}")
# The account name a `user=` line starts with, however the rest of the line is damaged.
CLAIMED_OWNER = re.compile(r"\s*user\s*=\s*([a-z_][a-z0-9_.-]{0,31}\$?)", re.IGNORECASE)
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


class RegistryUnavailable(SshAuthError):
    """The registry cannot be read: every login that needs it is denied until it can be."""


@dataclass(frozen=True)
class Registration:
    """What the registry says about one user."""

    phone: str | None = None
    allow_once_until: float | None = None
    malformed: bool = False  # a `user=` line for this user that is not valid: never "unregistered"


class Registry:
    """Who is registered with which number; reloaded when the file changes (no restart)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._phones: dict[str, str] = {}
        self._malformed: set[str] = set()
        self._allow_once: dict[str, float] = {}

    def lookup(self, user: str) -> Registration:
        """The user's registration; RegistryUnavailable if the file cannot be read."""
        with self._lock:
            self._reload_if_changed()
            until = self._allow_once.get(user, 0.0)
            return Registration(
                self._phones.get(user),
                until if until > time.time() else None,
                user in self._malformed and user not in self._phones,
            )

    def _reload_if_changed(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                info = os.fstat(handle.fileno())
                stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
                if stamp != self._stamp:
                    self._parse(handle)
                    self._stamp = stamp
        except OSError as error:
            # SECURITY: never "nobody is registered" (unregistered = allow would open every login).
            self._stamp = None
            log.error("cannot read the registry %s: %s", self.path, error.strerror)
            raise RegistryUnavailable(f"cannot read {self.path}: {error.strerror}") from None

    def _parse(self, handle) -> None:
        phones, malformed, allow_once = {}, set(), {}
        for number, line in enumerate(handle, 1):
            if (owner := line_owner(line, "allow_once")) is not None:
                until = line.partition(":")[2].strip()
                allow_once[owner] = float(until) if until.isdigit() else 0.0
            elif line.strip().startswith("user"):
                entry = parse_entry(line)
                if entry is None:
                    log.warning("%s line %d: malformed registry entry", self.path, number)
                    # SECURITY: whoever the line names is "malformed", never "unregistered"
                    # (unregistered = allow would let them in), with or without its ':'.
                    if owner := CLAIMED_OWNER.match(line):
                        malformed.add(owner.group(1))
                    continue
                phones[entry[0]] = entry[1]
        self._phones, self._malformed, self._allow_once = phones, malformed, allow_once


class RegistryError(SshAuthError):
    """A user name or phone number the registry refuses; the message says why."""

    exit_code = ExitCode.CANNOT


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
