"""One Settings object from ssh-auth.conf, and the API credentials from a tru.json."""

import ipaddress
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from sshshim.protocol import DEFAULT_SOCKET

from .errors import ExitCode, SshAuthError

DEFAULT_CONFIG = "/etc/ssh-auth/ssh-auth.conf"
MAX_TTL = 3000  # seconds; the PAM module takes a timeout= of at most 3600 (ttl + its margin)
DEFAULT_CREDENTIALS = "/etc/ssh-auth/tru.json"
DEFAULT_HOST_KEY = "/etc/ssh-auth/host.key"  # a fleet agent's Ed25519 key (ssh-auth fleet join)
ROLES = ("standalone", "hub", "agent")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
REGISTRY_KEYS = frozenset({"user", "header", "allow_once"})  # lines the registry reads


class ConfigError(SshAuthError):
    """A settings or credentials file is wrong; the message names the file, line and fix."""

    exit_code = ExitCode.CANNOT


@dataclass(frozen=True)
class Credentials:
    """API client credentials; the secret never appears in repr or logs."""

    client_id: str
    client_secret: str = field(repr=False)
    data_residency: str | None = None


def load_credentials(path: str, require_private: bool = True) -> Credentials:
    """Read a tru.json as the tru.ID/IDlayr CLI writes it; refuse one that others can read."""
    try:
        with open(path, encoding="utf-8") as handle:
            if require_private and os.fstat(handle.fileno()).st_mode & 0o077:
                mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
                raise ConfigError(
                    f"{path} is readable by other users (mode {mode:04o}): chmod 600 {path}"
                )
            body = json.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read credentials {path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from None
    credentials = body.get("credentials") if isinstance(body, dict) else None
    first = credentials[0] if isinstance(credentials, list) and credentials else None
    if not isinstance(first, dict):
        raise ConfigError(f"{path} has no credentials[0] (expected the tru.json the CLI writes)")
    client_id, secret = first.get("client_id"), first.get("client_secret")
    if not (isinstance(client_id, str) and client_id and isinstance(secret, str) and secret):
        raise ConfigError(f"{path}: credentials[0] needs client_id and client_secret")
    residency = body.get("data_residency")
    return Credentials(client_id, secret, residency if isinstance(residency, str) else None)


def _words(value: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in value.split(",") if word.strip())


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError("must be true or false")


def _choice(*allowed: str):
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _number(minimum: float, kind=int, maximum: float = math.inf):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        if number > maximum:
            raise ValueError(f"must be at most {maximum}")
        return number

    return parse


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError("must be an absolute http(s) URL without a query")
    if any(character.isspace() for character in value):
        raise ValueError("must be one URL, without spaces (a list is separated by commas)")
    return value.rstrip("/")


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError("host must be an IP address or localhost") from None
    return host, int(port)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _database_url(value: str) -> str:
    if urlsplit(value).scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// URL")
    return value


def _hub_urls(value: str) -> tuple[str, ...]:
    urls = tuple(_url(url) for url in _words(value))
    if not urls:
        raise ValueError("must name at least one URL")
    for url in urls:
        if urlsplit(url).scheme != "https" and not _is_loopback(urlsplit(url).hostname):
            raise ValueError(f"{url} is plain HTTP to another host: use https")
    return urls


def _host_name(value: str) -> str:
    if not HOST_NAME.fullmatch(value):
        raise ValueError("must be 1-63 letters, digits, '.', '_' or '-'")
    return value


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


@dataclass(frozen=True)
class Settings:
    """Every setting (docs/configuration.md) with its default; built by Settings.load or tests."""

    public_url: str | None = None
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    socket: str = DEFAULT_SOCKET
    credentials: str = DEFAULT_CREDENTIALS
    api_base_url: str | None = None
    insecure_api_base_url: bool = False
    data_residency: str | None = None
    failmode: str = "secure"
    unregistered: str = "deny"
    exempt_users: tuple[str, ...] = ()
    exempt_groups: tuple[str, ...] = ()
    max_checks_per_user: int = 5
    max_checks_per_minute: int = 60
    connection_reuse_seconds: int = 3600
    require_signature: bool = True
    confirm_on_phone: bool = True
    number_match: bool = False
    ttl: int = 120
    poll_interval: float = 5.0
    tunnel: str = "none"
    ngrok_path: str | None = None
    ngrok_authtoken: str | None = field(default=None, repr=False)
    audit_log: str | None = None
    pam_qr: str = "unicode"
    pam_root: str = "deny"
    role: str = "standalone"
    database_url: str | None = field(default=None, repr=False)
    hub_urls: tuple[str, ...] = ()
    host_name: str | None = None
    host_key: str = DEFAULT_HOST_KEY
    config_path: str = DEFAULT_CONFIG

    @classmethod
    def load(cls, path: str) -> "Settings":
        """Parse ssh-auth.conf; an unknown key or bad value is a ConfigError naming it."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror}") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: str = DEFAULT_CONFIG) -> "Settings":
        """Parse the text of an ssh-auth.conf (see load)."""
        values: dict = {"config_path": path}
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            key, sep, value = stripped.partition("=")
            key, value = key.strip(), value.strip()
            if not sep:
                # The line itself is not echoed: it may be a pasted secret (a database URL).
                raise ConfigError(f"{path} line {number}: expected 'key = value'")
            if key in REGISTRY_KEYS:
                continue
            parser = PARSERS.get(key)
            if parser is None:
                raise ConfigError(f"{path} line {number}: unknown setting {key!r}")
            try:
                values[key] = parser(value)
            except ValueError as error:
                raise ConfigError(f"{path} line {number}: {key} {error}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Checks that span keys."""
        if self.role == "agent":
            if not self.hub_urls:
                raise ConfigError(
                    f"{self.config_path}: role = agent needs hub_urls (ssh-auth fleet join sets it)"
                )
            if not self.host_name:
                raise ConfigError(
                    f"{self.config_path}: role = agent needs host_name (ssh-auth fleet join sets it)"
                )
            return  # the hub has the API, the registry and the public URL
        if self.role == "hub" and not self.database_url:
            raise ConfigError(
                f"{self.config_path}: role = hub needs database_url (postgresql://USER:PASSWORD@HOST/DB)"
            )
        if self.tunnel == "none" and not self.public_url:
            raise ConfigError(
                f"{self.config_path}: public_url is required unless tunnel = ngrok "
                "(the phone must reach this service's /complete-check)"
            )
        if self.api_base_url and not (
            urlsplit(self.api_base_url).scheme == "https"
            or _is_loopback(urlsplit(self.api_base_url).hostname)
            or self.insecure_api_base_url
        ):
            raise ConfigError(
                f"{self.config_path}: api_base_url {self.api_base_url} is plain HTTP to another "
                "host: the API's answers decide who logs in. Use https, or set "
                "insecure_api_base_url = true (a development stack only)"
            )
        if self.number_match and not self.confirm_on_phone:
            raise ConfigError(
                f"{self.config_path}: number_match = true needs confirm_on_phone = true "
                "(the number is picked on the confirmation page)"
            )
        if self.tunnel == "ngrok" and not self.ngrok_path:
            raise ConfigError(
                f"{self.config_path}: tunnel = ngrok needs ngrok_path (the agent is never downloaded)"
            )

    @property
    def webhook_url(self) -> str | None:
        """The redirect_url given to the API: public_url + /complete-check."""
        return f"{self.public_url}/complete-check" if self.public_url else None


PARSERS = {
    "public_url": _url,
    "listen": _listen,
    "socket": _path,
    "credentials": _path,
    "api_base_url": _url,
    "insecure_api_base_url": _boolean,
    "data_residency": _choice("eu", "in", "us"),
    "failmode": _choice("secure", "safe"),
    "unregistered": _choice("deny", "allow"),
    "exempt_users": _words,
    "exempt_groups": _words,
    "max_checks_per_user": _number(1),
    "max_checks_per_minute": _number(1),
    "connection_reuse_seconds": _number(0),
    "require_signature": _boolean,
    "confirm_on_phone": _boolean,
    "number_match": _boolean,
    "ttl": _number(10, maximum=MAX_TTL),
    "poll_interval": _number(1, float),
    "tunnel": _choice("none", "ngrok"),
    "ngrok_path": _path,
    "ngrok_authtoken": str,
    "audit_log": _path,
    "pam_qr": _choice("unicode", "ascii"),
    "pam_root": _choice("deny", "check"),
    "role": _choice(*ROLES),
    "database_url": _database_url,
    "hub_urls": _hub_urls,
    "host_name": _host_name,
    "host_key": _path,
}
assert set(PARSERS) | {"config_path"} == {f.name for f in fields(Settings)}
