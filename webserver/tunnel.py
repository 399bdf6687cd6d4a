"""The public URL the phone reaches: `public_url` as configured, or an ngrok tunnel we start.

The agent runs with no local web interface or API (`web_addr: false`) and keeps no traffic
(`inspect_db_size: -1`): ngrok's local API has no authentication, so every local user could read
each phone's redirect (check id, code, page token, device cookie) from it, and move or delete the
tunnel. pyngrok drives the agent through that API, so the service starts the agent itself and
reads the tunnel's URL from the agent's JSON log. The authtoken reaches the agent in its
environment (owner-only in /proc), never on its command line (readable by every local user).
"""

import json
import logging
import os
import selectors
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, Settings

log = logging.getLogger("ssh-auth.tunnel")
START_TIMEOUT = 30.0  # seconds for the agent to report its tunnel
AGENT_CONFIG = """# Written by ssh-auth-server at each start: the ngrok agent's settings.
version: 3
agent:
  web_addr: false
  inspect_db_size: -1
  console_ui: false
  update_check: false
  remote_management: false
  log: stdout
  log_format: json
  log_level: info
"""


@dataclass
class Tunnel:
    """A running ngrok agent and the public URL it reported."""

    process: subprocess.Popen
    public_url: str
    relay: threading.Thread | None = None

    def close(self) -> None:
        """Stop the agent (an exit the service asked for, not one to restart over)."""
        self.process.closing = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.relay:
            self.relay.join(timeout=5)
        self.process.stdout.close()


def open_tunnel(settings: Settings) -> Tunnel | None:
    """With tunnel = ngrok and no public_url: start the agent and return its tunnel."""
    if settings.public_url or settings.tunnel != "ngrok":
        return None
    agent = settings.ngrok_path
    if not (os.path.isfile(agent) and os.access(agent, os.X_OK)):
        raise ConfigError(
            f"tunnel = ngrok, but there is no ngrok agent at {agent}: install it "
            "(https://ngrok.com/download; it is never downloaded automatically) "
            "or set public_url instead"
        )
    config = _write_agent_config(Path(settings.socket).parent / "ngrok.yml")
    environment = dict(os.environ)
    if settings.ngrok_authtoken:
        environment["NGROK_AUTHTOKEN"] = settings.ngrok_authtoken
    host, port = settings.listen
    process = subprocess.Popen(
        [agent, "http", f"{host}:{port}", "--config", config],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environment,
        bufsize=0,  # unbuffered: select() then says truthfully whether a line is waiting
    )
    try:
        url = _wait_for_url(process)
    except BaseException:
        Tunnel(process, "").close()
        raise
    relay = threading.Thread(target=_relay_log, args=(process,), name="ngrok-log", daemon=True)
    relay.start()
    return Tunnel(process, url, relay)


def _write_agent_config(path: Path) -> str:
    """ngrok.yml, owner-only (the agent could add its authtoken to it), with our fixed settings."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # also an older install's 0644 file
        handle.write(AGENT_CONFIG)
    return str(path)


def _wait_for_url(process: subprocess.Popen) -> str:
    """The tunnel's https URL from the agent's log; ConfigError if it fails or says nothing."""
    deadline = time.monotonic() + START_TIMEOUT
    error = "it said nothing"
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                break
            line = process.stdout.readline()
            if not line:
                raise ConfigError(f"the ngrok tunnel did not start: {error}")
            record = _record(line)
            if record.get("err"):
                error = str(record["err"])[:300]
            url = str(record.get("url") or "")
            if record.get("msg") == "started tunnel":
                if not url.startswith("https://"):
                    raise ConfigError(f"the ngrok tunnel gave no https URL ({url!r})")
                return url.rstrip("/")
    raise ConfigError(f"the ngrok tunnel did not start within {START_TIMEOUT:.0f} s: {error}")


def _record(line: bytes) -> dict:
    try:
        record = json.loads(line)
    except ValueError:
        return {"msg": line.decode(errors="replace").strip()}
    return record if isinstance(record, dict) else {}


def _relay_log(process: subprocess.Popen) -> None:
    """Pass the agent's warnings on; if it exits, end the service (no tunnel, no logins)."""
    for line in process.stdout:
        record = _record(line)
        if record.get("lvl") in ("warn", "eror", "crit"):
            log.warning("ngrok: %s %s", record.get("msg"), record.get("err") or "")
    if process.wait() is not None and not getattr(process, "closing", False):
        log.critical("the ngrok agent exited (%s): stopping to be restarted", process.returncode)
        logging.shutdown()
        os._exit(1)
