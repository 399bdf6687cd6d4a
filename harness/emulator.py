"""The PhoneCheck emulator as a real HTTP server, and verbs to drive it from a test."""

import json
import os
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import requests

from .processes import ServerProcess

CLIENT_ID = "emulator-client-id"
CLIENT_SECRET = "emulator-client-secret"
VENV_BIN = Path(sys.executable).parent


class Emulator:
    """A running `phonecheck-emulator serve`, with its controls as methods."""

    def __init__(self, log_path: Path, *extra: str):
        self.server = ServerProcess(
            [str(VENV_BIN / "phonecheck-emulator"), "serve", "--port", "0", *extra],
            log_path,
            ready=self._ready,
        )
        self.url = ""

    def _ready(self, server: ServerProcess) -> bool:
        found = server.log_match(r"listening on (http://\S+)")
        if not found:
            return False
        self.url = found.group(1)
        return requests.get(self.url + "/_emulator/stats", timeout=1).ok

    def __enter__(self) -> "Emulator":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def control(self, name: str, body: dict | None = None) -> dict:
        """POST to /_emulator/NAME and return its JSON answer."""
        response = requests.post(f"{self.url}/_emulator/{name}", json=body or {}, timeout=5)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """Forget checks, tokens, faults and counters."""
        self.control("reset")

    def fault(self, endpoint: str, mode: str, **options) -> None:
        """Arm a fault for the next call(s) to an endpoint."""
        self.control("faults", {"endpoint": endpoint, "mode": mode, **options})

    def calls(self) -> dict:
        """Calls per endpoint since the last reset."""
        return requests.get(self.url + "/_emulator/stats", timeout=5).json()["calls"]

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward."""
        self.control("clock", {"advance": seconds})


def open_on_phone(check_url: str, **params) -> dict:
    """The device opens the check URL on mobile data; returns the redirect's query parameters."""
    response = requests.get(check_url, params=params, allow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    return {"location": location, **dict(parse_qsl(urlsplit(location).query))}


def write_tru_json(path, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, mode=0o600):
    """A tru.json exactly as the tru.ID/IDlayr CLI writes it."""
    body = {
        "project_id": "c69bc0e6-a429-11ea-bb37-0242ac130002",
        "name": "ssh-auth-tests",
        "created_at": "2026-11-23T10:00:00+0000",
        "credentials": [
            {
                "client_id": client_id,
                "client_secret": client_secret,
                "created_at": "2026-11-23T10:00:00+0000",
            }
        ],
        "data_residency": "eu",
    }
    path.write_text(json.dumps(body))
    os.chmod(path, mode)
    return path
