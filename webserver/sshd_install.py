"""The sshd drop-in, rendered from its one template (used by the installer, Docker and the tests)."""

from importlib.resources import files

DEFAULT_SHIM = "/usr/local/lib/ssh-auth/shim.pyz"
FORWARDING_OFF = "DisableForwarding yes\n"


def render_dropin(
    shim: str = DEFAULT_SHIM, socket: str = "/run/ssh-auth/ssh-auth.sock", allow_forwarding: bool = False
) -> str:
    """The drop-in's text: the ForceCommand plus the settings that stop it being bypassed."""
    for name, value in (("shim", shim), ("socket", socket)):
        if not value.startswith("/") or any(c.isspace() or c in "\"'\\" for c in value):
            raise ValueError(f"{name} path must be absolute, without spaces or quotes: {value!r}")
    template = files("webserver").joinpath("sshd_dropin.conf").read_text(encoding="utf-8")
    return template.format(
        shim=shim, socket=socket, forwarding="" if allow_forwarding else FORWARDING_OFF
    )
