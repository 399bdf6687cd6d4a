"""The sshd drop-ins, one per mode, each rendered from its one template for install, Docker and
the tests alike."""

import ipaddress
from importlib.resources import files

from .layout import DEFAULT_SOCKET, FORCECOMMAND, PAM, SHIM, SHIM_PYTHON
from .pam_stack import login_grace_time
from .proof import MATCH_LINE

FORWARDING_OFF = "DisableForwarding yes\n"
EXEMPT_BLOCK = """
# Logins from these networks skip the phone check (decided by sshd, not by what a client says).
Match Address {networks}
    {exemption}
"""
EXEMPTIONS = {FORCECOMMAND: "ForceCommand none", PAM: "AuthenticationMethods publickey"}


def render_dropin(
    shim: str = "/" + SHIM,
    socket: str = DEFAULT_SOCKET,
    allow_forwarding: bool = False,
    exempt_networks: tuple[str, ...] = (),
    python: str = SHIM_PYTHON,
) -> str:
    """The drop-in's text: the ForceCommand, what stops it being bypassed, exempt networks."""
    for name, value in (("shim", shim), ("socket", socket), ("python", python)):
        if not value.startswith("/") or any(c.isspace() or c in "\"'\\" for c in value):
            raise ValueError(f"{name} path must be absolute, without spaces or quotes: {value!r}")
    template = files("webserver.admin").joinpath("data/sshd_dropin.conf").read_text(encoding="utf-8")
    text = template.format(
        python=python, shim=shim, socket=socket, forwarding="" if allow_forwarding else FORWARDING_OFF
    )
    return text + _exempt_block(exempt_networks, FORCECOMMAND)


def render_pam_dropin(ttl: int, exempt_networks: tuple[str, ...] = ()) -> str:
    """The auth-time mode drop-in's text: publickey, then our PAM module, with time for the phone;
    logins from exempt networks need the key only."""
    template = files("webserver.admin").joinpath("data/sshd_dropin_pam.conf").read_text(encoding="utf-8")
    return template.format(grace=login_grace_time(ttl)) + _exempt_block(exempt_networks, PAM)


def _exempt_block(exempt_networks: tuple[str, ...], mode: str) -> str:
    networks = []
    for network in exempt_networks:
        try:
            networks.append(str(ipaddress.ip_network(network, strict=False)))
        except ValueError:
            raise ValueError(f"not a network address: {network!r} (e.g. 10.0.0.0/8)") from None
    if not networks:
        return ""
    return EXEMPT_BLOCK.format(networks=",".join(networks), exemption=EXEMPTIONS[mode])


def forced_command(socket: str = DEFAULT_SOCKET) -> str:
    """The ForceCommand the drop-in sets, as `sshd -T` reports it."""
    return f"{SHIM_PYTHON} -I -S /{SHIM} create-check --socket {socket}"


def split_at_match(text: str) -> tuple[str, str]:
    """(the settings, the first Match line onwards with the comments just above it)."""
    lines = text.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if MATCH_LINE.match(line)), None)
    if first is None:
        return text, ""
    while first > 0 and (not lines[first - 1].strip() or lines[first - 1].lstrip().startswith("#")):
        first -= 1
    return "".join(lines[:first]), "".join(lines[first:])
