"""The public URL the phone reaches: `public_url` as configured, or an ngrok tunnel via pyngrok."""

import os
from pathlib import Path

from .config import ConfigError, Settings


def open_public_url(settings: Settings) -> str:
    """The base URL for redirect_url: public_url if set; else, with tunnel = ngrok, the tunnel's."""
    if settings.public_url or settings.tunnel != "ngrok":
        return settings.public_url
    agent = settings.ngrok_path
    # pyngrok downloads an agent when ngrok_path does not exist: never let it get that far.
    if not (os.path.isfile(agent) and os.access(agent, os.X_OK)):
        raise ConfigError(
            f"tunnel = ngrok, but there is no ngrok agent at {agent}: install it "
            "(https://ngrok.com/download; it is never downloaded automatically) "
            "or set public_url instead"
        )
    from pyngrok import conf, ngrok
    from pyngrok.exception import PyngrokError

    # SECURITY: every local user can read /proc/PID/cmdline, only the owner /proc/PID/environ.
    # The agent reads NGROK_AUTHTOKEN from the environment pyngrok starts it with (ours), and
    # pyngrok is never given the token: it would pass `--authtoken TOKEN` on the command line.
    if settings.ngrok_authtoken:
        os.environ["NGROK_AUTHTOKEN"] = settings.ngrok_authtoken
    config = conf.PyngrokConfig(
        ngrok_path=agent,
        config_path=_private_config(Path(settings.socket).parent / "ngrok.yml"),
        monitor_thread=False,
    )
    config.auth_token = None  # PyngrokConfig copies NGROK_AUTHTOKEN from the environment
    host, port = settings.listen
    try:
        tunnel = ngrok.connect(f"{host}:{port}", "http", pyngrok_config=config)
    except PyngrokError as error:
        raise ConfigError(f"the ngrok tunnel did not start: {error}") from None
    if not (tunnel.public_url or "").startswith("https://"):
        raise ConfigError(f"the ngrok tunnel gave no https URL ({tunnel.public_url!r})")
    return tunnel.public_url.rstrip("/")


def _private_config(path: Path) -> str:
    """ngrok.yml, owner-only before anything is written to it: it may hold an authtoken."""
    from pyngrok import installer

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also an older install's 0644 file
        empty = os.fstat(fd).st_size == 0
    finally:
        os.close(fd)
    if empty:  # pyngrok only fills a file it creates; it keeps this one's mode when it writes
        installer.install_default_config(str(path))
    return str(path)
