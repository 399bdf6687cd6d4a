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

    config = conf.PyngrokConfig(
        ngrok_path=agent,
        auth_token=settings.ngrok_authtoken or os.environ.get("NGROK_AUTHTOKEN"),
        config_path=str(Path(settings.socket).parent / "ngrok.yml"),
        monitor_thread=False,
    )
    host, port = settings.listen
    try:
        tunnel = ngrok.connect(f"{host}:{port}", "http", pyngrok_config=config)
    except PyngrokError as error:
        raise ConfigError(f"the ngrok tunnel did not start: {error}") from None
    if not (tunnel.public_url or "").startswith("https://"):
        raise ConfigError(f"the ngrok tunnel gave no https URL ({tunnel.public_url!r})")
    return tunnel.public_url.rstrip("/")
