"""sshd's effective configuration, proven with `sshd -T -C` for every login that matters.

The whole configuration (every Include) is copied to a private directory twice, with and without
our lines; sshd then reports, for a plain login and for every user, group, address and host any
`Match` names, what it would really apply. An install may change only the keywords its drop-in
sets, and a protected login must run the phone check with nothing that bypasses it.
"""

import fnmatch
import glob
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InstallError
from .layout import DROPIN, OUR_BLOCKS, SSHD, SSHD_CONFIG
from .pam_service import SERVICE
from .pam_stack import GRACE_MARGIN, login_grace_time

INCLUDE_LINE = re.compile(r"(?i)^(\s*)include(?:\s*=\s*|\s+)(.*?)\s*$")
MATCH_LINE = re.compile(r"(?i)^\s*match(?:\s*=\s*|\s+)(.*?)\s*$")
MAX_INCLUDE_DEPTH = 16  # sshd's own limit
PROBE_ADDRESSES = ("192.0.2.10", "198.51.100.10", "203.0.113.10", "2001:db8::10")
PLAIN_USER = "nobody"
PLAIN_HOST = "client.example"
# What the drop-in sets, as `sshd -T` names them: the only settings an install may change.
KEYWORDS = {
    "forcecommand": "ForceCommand",
    "disableforwarding": "DisableForwarding",
    "permittunnel": "PermitTunnel",
    "permituserrc": "PermitUserRC",
    "permituserenvironment": "PermitUserEnvironment",
}
# What the auth-time (PAM) drop-in sets, and what every protected login must end up with.
PAM_KEYWORDS = {
    "usepam": "UsePAM",
    "kbdinteractiveauthentication": "KbdInteractiveAuthentication",
    "authenticationmethods": "AuthenticationMethods",
    "logingracetime": "LoginGraceTime",
}
PAM_METHODS = "publickey,keyboard-interactive:pam"
PAM_NEEDS = {
    "usepam": "yes",
    "kbdinteractiveauthentication": "yes",
    "authenticationmethods": PAM_METHODS,
}
BYPASS_ADVICE = (
    " (sshd takes a keyword's first value, and a Match block's over the global one; "
    "change your sshd configuration and install again)"
)


@dataclass(frozen=True)
class MatchLine:
    """One `Match` line of the configuration: where it is and what it names."""

    where: str
    text: str
    criteria: tuple[tuple[str, tuple[str, ...]], ...]


class SshdConfigCopy:
    """sshd's configuration under a root, copied to a private directory with every Include
    pointed at the copies (and, with ours=False, without ssh-auth's lines), for sshd -t/-T."""

    def __init__(self, root: Path, ours: bool):
        self.root, self.ours = root, ours
        self.prefix = "" if str(root) == "/" else str(root)
        self.copies: dict[str, str] = {}
        self.matches: list[MatchLine] = []
        self.directory = tempfile.mkdtemp(prefix="ssh-auth-sshd-")

    def __enter__(self) -> "SshdConfigCopy":
        try:
            self.top = self._copy("/" + SSHD_CONFIG, 0)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the copies."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def _copy(self, path: str, depth: int) -> str:
        if path in self.copies:
            return self.copies[path]
        if depth > MAX_INCLUDE_DEPTH:
            raise InstallError(f"{path}: Include nested more than {MAX_INCLUDE_DEPTH} deep")
        copy = os.path.join(self.directory, f"{len(self.copies)}.conf")
        self.copies[path] = copy
        text = Path(self.prefix + path).read_text(errors="replace")
        if not self.ours:
            text = OUR_BLOCKS.sub("", text)
        lines = [self._line(line, path, n, depth) for n, line in enumerate(text.splitlines(), 1)]
        Path(copy).write_text("".join(line + "\n" for line in lines))
        return copy

    def _line(self, line: str, path: str, number: int, depth: int) -> str:
        found = MATCH_LINE.match(line)
        if found:
            criteria = _criteria(found.group(1))
            self.matches.append(MatchLine(f"{path} line {number}", f"Match {found.group(1)}", criteria))
            return line
        found = INCLUDE_LINE.match(line)
        if not found:
            return line
        copies = [self._copy(included, depth + 1) for included in self._included(found.group(2))]
        return f"{found.group(1)}Include {' '.join(copies)}" if copies else f"# {line.strip()}"

    def _included(self, arguments: str) -> list[str]:
        """The files an Include names, as sshd finds them: /etc/ssh-relative, globbed, sorted."""
        paths = []
        for pattern in _words(arguments):
            pattern = pattern if pattern.startswith("/") else "/etc/ssh/" + pattern
            for found in sorted(glob.glob(self.prefix + pattern)):
                path = found[len(self.prefix) :]
                if self.ours or path != "/" + DROPIN:
                    paths.append(path)
        return paths


@dataclass(frozen=True)
class Context:
    """One login as `sshd -T -C` is asked about it, and what to call it in a message."""

    label: str
    user: str = PLAIN_USER
    host: str = PLAIN_HOST
    addr: str = PROBE_ADDRESSES[0]
    lport: str = "22"
    laddr: str | None = None
    rdomain: str | None = None
    kind: str = "match"  # plain, exempt or match

    def spec(self) -> str:
        """The -C argument."""
        laddr = self.laddr or ("2001:db8::1" if ":" in self.addr else "192.0.2.1")
        spec = f"user={self.user},host={self.host},addr={self.addr},laddr={laddr},lport={self.lport}"
        return spec + (f",rdomain={self.rdomain}" if self.rdomain else "")


def sshd_settings(config: str, context: Context) -> dict[str, str]:
    """`sshd -T -C` for one login: keyword -> value (repeated keywords joined by spaces)."""
    result = subprocess.run(
        [SSHD, "-T", "-f", config, "-C", context.spec()], capture_output=True, text=True
    )
    if result.returncode:
        error = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise InstallError(f"sshd -T failed for {context.label}: {error}")
    settings: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        settings[key] = f"{settings[key]} {value}" if key in settings else value
    return settings


def probe_contexts(
    matches: list[MatchLine], exempt: list, members: dict[str, list[str]]
) -> tuple[list[Context], list[str]]:
    """A plain login (IPv4 and IPv6), each exempt network, and each user, group, address and
    host any Match line names (one by one and together); notes for what cannot be probed."""
    free = [a for a in PROBE_ADDRESSES if exempt_by(a, exempt) is None]
    plain = [a for a in (_first(free, False), _first(free, True)) if a]
    if not plain:
        raise InstallError(
            f"refusing to install: the exempt networks ({', '.join(map(str, exempt))}) leave no "
            f"address to prove the phone check from (tried {', '.join(PROBE_ADDRESSES)})"
        )
    contexts = [Context(f"a login as {PLAIN_USER} from {a}", addr=a, kind="plain") for a in plain]
    for network in exempt:
        first = str(next(iter(network.hosts()), network.network_address))
        contexts.append(Context(f"a login from the exempt network {network}", addr=first, kind="exempt"))
    notes: list[str] = []
    rdomain = "default" if any(n == "rdomain" for m in matches for n, _ in m.criteria) else None
    defaults = {"addr": plain[0], "rdomain": rdomain}
    for line in matches:
        label = f"{line.text} ({line.where})"
        together: dict[str, str] = {}
        for name, values in line.criteria:
            for value in values:
                fields = _probe_fields(name, value, members, together.get("user"))
                if fields is None:
                    notes.append(f"{label}: {_unprovable(name, value)}")
                    continue
                contexts.append(Context(label, **{**defaults, **fields}))
                if not value.startswith("!"):
                    together = {**fields, **together}
        if together:
            contexts.append(Context(label, **{**defaults, **together}))
    unique = {context.spec(): context for context in reversed(contexts)}
    return sorted(unique.values(), key=contexts.index), notes


def _probe_fields(name: str, value: str, members: dict[str, list[str]], user: str | None):
    """The Context fields for one value of one Match criterion (None: nothing to probe with)."""
    pattern = value.lstrip("!")
    if name == "user":
        return {"user": _instance(pattern)}
    if name == "host":
        return {"host": _instance(pattern)}
    if name == "group":
        names = [m for g in members if fnmatch.fnmatchcase(g, pattern) for m in members[g]]
        chosen = next((m for m in names if user and fnmatch.fnmatchcase(m, user)), None)
        return {"user": chosen or names[0]} if names else None
    if name in ("address", "localaddress"):
        address = _address_instance(pattern)
        key = "addr" if name == "address" else "laddr"
        return {key: address} if address else None
    if name == "localport":
        return {"lport": pattern}
    if name == "rdomain":
        return {"rdomain": pattern}
    return None


def _unprovable(name: str, value: str) -> str:
    if name == "group":
        return f"no member of group {value.lstrip('!')} in /etc/group to prove it with"
    return f"no login to prove {name} {value} with"


@dataclass
class Verdict:
    """What one login would get: what bypasses the phone check, and what else changed."""

    context: Context
    effective: dict[str, str]
    exempt_network: str | None = None
    bypasses: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    still_gated: bool = False

    @classmethod
    def judge(cls, context, admins, ours, forced, exempt_network, allow_forwarding) -> "Verdict":
        """Compare sshd's answer for a login with the admin's own lines and with ours added."""
        changes = _changes(admins, ours, KEYWORDS)
        if exempt_network:
            gated = context.kind == "exempt" and ours.get("forcecommand") != "none"
            return cls(context, ours, exempt_network, (), changes, gated)
        bypasses = []
        if ours.get("forcecommand") != forced:
            bypasses.append(f"ForceCommand is {ours.get('forcecommand')!r}")
        if not allow_forwarding and _forwarding_on(ours):
            bypasses.append(f"DisableForwarding is {ours.get('disableforwarding')}")
        for key in ("permittunnel", "permituserrc", "permituserenvironment"):
            if ours.get(key, "no") != "no":
                bypasses.append(f"{KEYWORDS[key]} is {ours[key]}")
        return cls(context, ours, None, tuple(bypasses), changes)

    @classmethod
    def judge_pam(cls, context, admins, ours, exempt_network) -> "Verdict":
        """The same comparison in auth-time mode: a key, then our PAM module, for every login."""
        changes = _changes(admins, ours, PAM_KEYWORDS)
        if exempt_network:
            gated = context.kind == "exempt" and ours.get("authenticationmethods") == PAM_METHODS
            return cls(context, ours, exempt_network, (), changes, gated)
        bypasses = [
            f"{PAM_KEYWORDS[key]} is {ours.get(key, '(unset)')}"
            for key, wanted in PAM_NEEDS.items()
            if ours.get(key) != wanted
        ]
        # A Match may name another PAM stack (OpenSSH 9.8+): one auth-time mode never edited.
        service = ours.get("pamservicename", SERVICE)  # sshd -T before 9.8 has no such key
        if service != SERVICE:
            bypasses.append(f"PAMServiceName is {service}")
        return cls(context, ours, None, tuple(bypasses), changes)

    def refusal(self) -> str | None:
        """Install's one line when this login is not as it must be, else None."""
        if self.bypasses:
            return (
                f"refusing to install: {self.context.label} would bypass the phone check: "
                f"{', '.join(self.bypasses)}{BYPASS_ADVICE}"
            )
        if self.still_gated:
            return f"sshd would still run the phone check for {self.exempt_network}"
        if self.changes:
            return (
                f"refusing to install: for {self.context.label}, ssh-auth's lines would change "
                f"settings of yours: {', '.join(self.changes)} (please report this: an install "
                "may change nothing of yours)"
            )
        return None


def _changes(admins: dict[str, str], ours: dict[str, str], keywords: dict[str, str]):
    """Every effective setting our lines change beyond the keywords the drop-in sets."""
    return tuple(
        f"{key} from {admins.get(key, '(unset)')} to {ours.get(key, '(unset)')}"
        for key in sorted(set(admins) | set(ours))
        if key not in keywords and admins.get(key) != ours.get(key)
    )


def grace_refusal(effective: dict[str, str], ttl: int) -> str | None:
    """Why sshd's LoginGraceTime (global only) would cut the phone check short (None: it will not)."""
    grace, needed = int(effective.get("logingracetime", "0")), login_grace_time(ttl)
    if grace == 0 or grace >= needed:
        return None
    return (
        f"sshd's LoginGraceTime is {grace} s, shorter than the phone check needs ({needed} s: "
        f"the ttl of {ttl} s + {GRACE_MARGIN} s)"
    )


def _forwarding_on(settings: dict[str, str]) -> bool:
    if settings.get("disableforwarding") == "yes":
        return False
    keys = ("allowtcpforwarding", "allowstreamlocalforwarding")
    return any(settings.get(key, "yes") != "no" for key in keys)


def exempt_by(address: str, exempt: list) -> str | None:
    """The exempt network `address` is in, if any."""
    ip = ipaddress.ip_address(address)
    return next((str(n) for n in exempt if ip.version == n.version and ip in n), None)


def _first(addresses: list[str], ipv6: bool) -> str | None:
    return next((a for a in addresses if (":" in a) == ipv6), None)


def _criteria(arguments: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`User backup,admin Address 10.0.0.0/8` -> (("user", ("backup", "admin")), ...)."""
    words = [w.strip('"') for w in re.findall(r'"[^"]*"|[^\s=]+', arguments)]
    criteria = []
    while words:
        name = words.pop(0).lower()
        if name == "all" or not words:
            continue
        criteria.append((name, tuple(v for v in words.pop(0).split(",") if v)))
    return tuple(criteria)


def _words(arguments: str) -> list[str]:
    try:
        return shlex.split(arguments)
    except ValueError:
        return arguments.split()


def _instance(pattern: str) -> str:
    """A name the pattern matches (sshd's patterns: * and ?)."""
    return pattern.replace("*", "x").replace("?", "x")


def _address_instance(pattern: str) -> str | None:
    """An address the pattern (CIDR or sshd wildcard) matches."""
    if "/" in pattern:
        try:
            network = ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return None
        return str(next(iter(network.hosts()), network.network_address))
    for fill in ("1", "1.1", "1.1.1", "1::1", ":1"):
        candidate = pattern.replace("*", fill).replace("?", "1")
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if fnmatch.fnmatchcase(candidate, pattern):
            return candidate
    return None
