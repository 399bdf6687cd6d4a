"""The sshd drop-in, rendered from its one template (used by the installer, Docker and the tests)."""

import ipaddress
from importlib.resources import files

DEFAULT_SHIM = "/usr/local/lib/ssh-auth/shim.pyz"
FORWARDING_OFF = "DisableForwarding yes\n"
EXEMPT_BLOCK = """
# Logins from these networks skip the phone check (decided by sshd, not by what a client says).
Match Address {networks}
    ForceCommand none
"""


def render_dropin(
    shim: str = DEFAULT_SHIM,
    socket: str = "/run/ssh-auth/ssh-auth.sock",
    allow_forwarding: bool = False,
    exempt_networks: tuple[str, ...] = (),
) -> str:
    """The drop-in's text: the ForceCommand, what stops it being bypassed, exempt networks."""
    for name, value in (("shim", shim), ("socket", socket)):
        if not value.startswith("/") or any(c.isspace() or c in "\"'\\" for c in value):
            raise ValueError(f"{name} path must be absolute, without spaces or quotes: {value!r}")
    networks = []
    for network in exempt_networks:
        try:
            networks.append(str(ipaddress.ip_network(network, strict=False)))
        except ValueError:
            raise ValueError(f"not a network address: {network!r} (e.g. 10.0.0.0/8)") from None
    template = files("webserver").joinpath("sshd_dropin.conf").read_text(encoding="utf-8")
    text = template.format(
        shim=shim, socket=socket, forwarding="" if allow_forwarding else FORWARDING_OFF
    )
    if networks:
        text += EXEMPT_BLOCK.format(networks=",".join(networks))
    return text
