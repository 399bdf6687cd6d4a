"""`ssh-auth doctor`: one line per check, ✔ or ✗ with the fix; non-zero exit if any ✗."""

import os
import pwd
import socket
import stat
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests

from sshshim.protocol import SERVICE_USER, peer_uid

from ..config import ConfigError, Settings, load_credentials
from ..errors import InstallError
from ..phonecheck import PhoneCheckClient, PhoneCheckError, base_url_for
from ..registry import entries
from .exempt_networks import WHO, takes_in_server
from .fleet_doctor import check_agent, check_hub
from .layout import FORCECOMMAND, PAM
from .pam_checks import check_login_grace, check_pam
from .pam_files import installed_mode
from .proof import Verdict
from .sshd import Sshd
from .system import read, shim_python_check

LOW_BALANCE = 20
MAX_SKEW = 30
START_UP_FILES = (".bashrc", ".bash_profile", ".profile", ".zshenv", ".pam_environment")
# Client-set variables sshd may accept: the locale and the terminal's colours, nothing that a
# login shell or the dynamic loader acts on (ZDOTDIR, LD_PRELOAD, BASH_ENV...).
NARROW_ENV = ("LANG", "COLORTERM", "NO_COLOR")
MISSING_REGISTRY_FIX = (
    "restore the file or run ssh-auth install: without its registry the service denies every login"
)
MATCH_FIX = (
    "change your sshd configuration (sshd takes a keyword's first value, and a Match block's "
    "over the global one)"
)
PLAIN_FIX = "ssh-auth install, then reload sshd"
EVERY_LOGIN = {
    FORCECOMMAND: "sshd runs the phone check for every login (sshd -T)",
    PAM: "sshd asks every login for a key, then the phone (UsePAM yes, KbdInteractiveAuthentication "
    "yes, AuthenticationMethods publickey,keyboard-interactive:pam)",
}


class Report:
    """Prints each check as it is made and remembers whether any failed."""

    def __init__(self):
        self.failed = 0

    def ok(self, text: str) -> None:
        print(f"✔ {text}", flush=True)

    def bad(self, text: str, fix: str) -> None:
        self.failed += 1
        print(f"✗ {text} — fix: {fix}", flush=True)

    def warn(self, text: str) -> None:
        print(f"⚠ {text}", flush=True)


def run_checks(config_path: str, root: str = "/") -> int:
    """Every check in turn; exit status 1 if any failed."""
    report = Report()
    try:
        settings = Settings.load(config_path)
    except ConfigError as error:
        fix = "correct the line it names"
        if not os.access(config_path, os.R_OK):
            fix = MISSING_REGISTRY_FIX
        report.bad(f"configuration: {error}", fix)
        return 1
    report.ok(f"configuration {config_path} is valid")
    if settings.role == "hub":  # a fleet's hub: the phones' side only, no SSH gate of its own
        check_hub(report, settings)
        _check_service_side(report, settings)
        return 1 if report.failed else 0
    mode = installed_mode(Path(root)) or FORCECOMMAND  # auth-time mode runs no shim
    _check_registry_access(report, config_path, root)
    if mode == FORCECOMMAND:
        _check_shim_python(report, root)
    if settings.role == "agent":  # a fleet's host: no API secret, no registry, no webhook
        check_agent(report, settings)
    else:
        _check_service_side(report, settings)
    _check_socket(report, settings)
    _check_sshd(report, settings, root, mode)
    if mode == PAM:
        check_pam(report, settings, Path(root))
    if settings.role == "standalone":  # a fleet's users are in the hub's database
        _check_users(report, config_path, start_up_files=mode == FORCECOMMAND)
        _check_balance(report, settings)
    return 1 if report.failed else 0


def _check_service_side(report: Report, settings: Settings) -> None:
    """What the phones meet: the credentials, the API, the webhook at its public URL."""
    client = _check_credentials(report, settings)
    if client:
        _check_api(report, client)
    _check_webhook(report, settings)


def _check_credentials(report: Report, settings: Settings) -> PhoneCheckClient | None:
    path = settings.credentials
    try:
        info = os.stat(path)
        credentials = load_credentials(path, require_private=False)
    except (OSError, ConfigError) as error:
        report.bad(f"credentials: {error}", "install a tru.json: ssh-auth install --credentials FILE")
        return None
    owner = _user_name(info.st_uid)
    if stat.S_IMODE(info.st_mode) & 0o077:
        report.bad(
            f"credentials {path} are readable by other users (mode {stat.S_IMODE(info.st_mode):04o})",
            f"chmod 600 {path}",
        )
    elif owner not in (SERVICE_USER, "root"):
        report.bad(
            f"credentials {path} belong to {owner}, not the service", f"chown {SERVICE_USER} {path}"
        )
    else:
        report.ok(f"credentials {path}: mode 0600, owner {owner}")
    residency = settings.data_residency or credentials.data_residency or "eu"
    return PhoneCheckClient(
        credentials, settings.api_base_url or base_url_for(residency), timeout=(3.05, 10.0)
    )


def _check_api(report: Report, client: PhoneCheckClient) -> None:
    try:
        client.token()
        report.ok(f"an access token was obtained from {client.base_url}")
    except PhoneCheckError as error:
        report.bad(
            f"no access token: {error}",
            "check client_id/client_secret in tru.json, and that this server can reach the API",
        )
    try:
        client.jwks()
        report.ok("the API's signing keys (JWKS) are reachable")
    except PhoneCheckError as error:
        report.bad(f"JWKS unreachable: {error}", "allow HTTPS to the API from this server")
    try:
        date = requests.get(client.base_url + "/.well-known/jwks.json", timeout=10).headers["Date"]
        skew = time.time() - parsedate_to_datetime(date).timestamp()
    except (requests.RequestException, KeyError, TypeError, ValueError) as error:
        report.bad(f"clock: the API sent no usable Date ({error})", "check the API is reachable")
        return
    if abs(skew) > MAX_SKEW:
        report.bad(
            f"clock is {skew:+.0f} s off the API's (signed redirects allow 300 s)",
            "enable time sync: timedatectl set-ntp true",
        )
    else:
        report.ok(f"clock within {abs(skew):.0f} s of the API's")


def _check_webhook(report: Report, settings: Settings) -> None:
    url = f"{settings.public_url}/healthz"
    try:
        ok = requests.get(url, timeout=10).ok
    except requests.RequestException as error:
        ok, url = False, f"{url} ({type(error).__name__})"
    if ok:
        report.ok(f"the webhook answers at {url}")
    else:
        report.bad(
            f"the webhook does not answer at {url}",
            "start the service and check public_url and the reverse proxy in front of it",
        )


def _check_socket(report: Report, settings: Settings) -> None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(settings.socket)
            uid = peer_uid(sock)
    except OSError as error:
        report.bad(
            f"the service socket {settings.socket} does not answer ({error.strerror})",
            "systemctl enable --now ssh-auth; journalctl -u ssh-auth",
        )
        return
    if _user_name(uid) not in ("root", SERVICE_USER):
        report.bad(
            f"the socket {settings.socket} is served by {_user_name(uid)}",
            "stop that process; only the ssh-auth service may serve the socket",
        )
    else:
        report.ok(f"the service answers on {settings.socket}")


def _check_sshd(report: Report, settings: Settings, root: str, mode: str) -> None:
    sshd = Sshd(Path(root))
    exempt = sshd.installed_exempt_networks()
    try:
        verdicts, notes = sshd.prove(settings.socket, exempt, mode=mode)
    except (InstallError, OSError, ValueError) as error:
        report.bad(f"sshd's configuration cannot be proven: {error}", "sshd -t; ssh-auth install")
        return
    for verdict in verdicts:
        _check_context(report, verdict, mode)
    if not notes and not any(v.bypasses or v.still_gated for v in verdicts):
        report.ok(EVERY_LOGIN[mode])
    if mode == PAM:
        check_login_grace(report, verdicts[0].effective, settings.ttl)
    for verdict in verdicts:
        if verdict.changes:
            report.bad(
                f"for {verdict.context.label}, ssh-auth's lines change settings of yours: "
                + ", ".join(verdict.changes),
                "ssh-auth install (it writes its Match block last, where it swallows nothing)",
            )
    for note in notes:
        report.bad(
            f"{note}, so what sshd gives such a login is not proven",
            "change the Match line (a group needs a member to prove it with)",
        )
    for network in exempt:
        what = takes_in_server(network)
        if what:
            report.warn(
                f"the exempt network {network} takes in {what}: {WHO} logs in there without the "
                "phone, and the service never sees those logins (sshd's log has them)"
            )
    if mode == FORCECOMMAND:  # in auth-time mode the check is over before any variable is set
        _check_accept_env(report, [v for v in verdicts if not v.exempt_network])


def _check_context(report: Report, verdict: Verdict, mode: str) -> None:
    """One line for a login: a plain one, or one a Match block (or an exempt network) singles out."""
    label = verdict.context.label
    if verdict.bypasses:
        fix = PLAIN_FIX if verdict.context.kind == "plain" else MATCH_FIX
        report.bad(f"{label} bypasses the phone check: {', '.join(verdict.bypasses)}", fix)
    elif verdict.still_gated:
        report.bad(
            f"sshd still runs the phone check for the exempt network {verdict.exempt_network}",
            "ssh-auth install, then reload sshd",
        )
    elif verdict.exempt_network:
        report.ok(f"{label}: exempt (network {verdict.exempt_network}), as installed")
    elif mode == PAM:
        report.ok(f"{label}: a key, then the phone check")
    else:
        report.ok(f"{label}: the phone check, with no forwarding, tunnel, user rc or environment")


def _check_accept_env(report: Report, verdicts: list[Verdict]) -> None:
    """Client-set variables reach the user's login shell before the shim runs."""
    seen = set()
    for verdict in verdicts:
        broad = tuple(p for p in verdict.effective.get("acceptenv", "").split() if not _narrow_env(p))
        if broad and broad not in seen:
            seen.add(broad)
            report.bad(
                f"sshd accepts {' '.join(broad)} from the client (AcceptEnv) for "
                f"{verdict.context.label}: they reach the user's login shell before the phone "
                "check (ZDOTDIR, LD_PRELOAD...)",
                "AcceptEnv LANG LC_* only (COLORTERM and NO_COLOR are fine too)",
            )
    if not seen:
        report.ok(
            "sshd accepts no environment variables from the client beyond LANG, LC_*, "
            "COLORTERM and NO_COLOR (AcceptEnv)"
        )


def _narrow_env(pattern: str) -> bool:
    return pattern in NARROW_ENV or pattern.startswith("LC_")


def _check_shim_python(report: Report, root: str) -> None:
    ok, line = shim_python_check(root)
    if ok:
        report.ok(line)
    else:
        report.bad(
            line,
            "install Python 3.9 or later as /usr/bin/python3 (the shim runs under the system Python)",
        )


def _check_registry_access(report: Report, config_path: str, root: str) -> None:
    """The service reads the registry as its group: unreadable, every login is denied."""
    info = os.stat(config_path)
    mode = stat.S_IMODE(info.st_mode)
    users, groups = _names(root, "etc/passwd"), _names(root, "etc/group")
    shown = f"{users.get(info.st_uid, info.st_uid)}:{groups.get(info.st_gid, info.st_gid)} {mode:04o}"
    fix = f"chown root:{SERVICE_USER} {config_path} && chmod 0640 {config_path}"
    service = {name: uid for uid, name in users.items()}.get(SERVICE_USER)
    group = {name: gid for gid, name in groups.items()}.get(SERVICE_USER)
    readable = (
        mode & 0o004
        or (info.st_gid == group and mode & 0o040)
        or (info.st_uid == service and mode & 0o400)
    )
    if service is None:
        report.bad(f"the service user {SERVICE_USER} does not exist", "ssh-auth install")
    elif not readable:
        report.bad(
            f"the configuration {config_path} is not readable by the service ({shown}): "
            "a registry it cannot read denies every login",
            fix,
        )
    elif mode & 0o006:
        access = "readable" if mode & 0o004 else "writable"
        report.bad(
            f"the configuration {config_path} is {access} by every user ({shown}): it holds "
            "the phone numbers",
            fix,
        )
    else:
        report.ok(
            f"the configuration {config_path} is readable by the service and no one else ({shown})"
        )


def _names(root: str, relative: str) -> dict[int, str]:
    """id -> name from the root's etc/passwd or etc/group."""
    names = {}
    for line in (read(Path(root), relative) or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            names.setdefault(int(parts[2]), parts[0])
    return names


def _check_users(report: Report, config_path: str, start_up_files: bool) -> None:
    registered = entries(config_path)
    missing = [user for user, _ in registered if _home(user) is None]
    if missing:
        report.bad(
            f"registered but not on this machine: {', '.join(missing)}", "ssh-auth unregister-user NAME"
        )
    else:
        report.ok(f"{len(registered)} registered user(s), all exist")
    if not start_up_files:
        return  # auth-time mode: the check is over before any start-up file runs
    for user, _ in registered:
        home = _home(user)
        found = [name for name in START_UP_FILES if home and (Path(home) / name).exists()]
        if found:
            report.warn(
                f"{user}'s {', '.join(found)} run before the phone check: a user who "
                "can write their home can opt out (README: known residual)"
            )


def _check_balance(report: Report, settings: Settings) -> None:
    try:
        balance = float((Path(settings.socket).parent / "balance").read_text())
    except (OSError, ValueError):
        report.ok("balance: no check made yet by this service")
        return
    if balance < LOW_BALANCE:
        report.bad(
            f"balance low: {balance:g} left after the last check", "top up the account in the console"
        )
    else:
        report.ok(f"balance {balance:g} after the last check")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _home(user: str) -> str | None:
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None
