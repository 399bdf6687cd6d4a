"""The systemd unit: package data, with the venv's ssh-auth-server filled in."""

from importlib.resources import files
from pathlib import PurePosixPath

from .layout import CONFIG, DEFAULT_SOCKET, SERVICE_USER


def render_unit(server: str) -> str:
    """The unit's text for this venv's ssh-auth-server."""
    template = files("webserver.admin").joinpath("data/ssh-auth.service").read_text(encoding="utf-8")
    runtime = PurePosixPath(DEFAULT_SOCKET).parent.name  # systemd makes /run/<this> for the socket
    return template.format(server=server, config="/" + CONFIG, user=SERVICE_USER, runtime=runtime)
