"""Small helpers shared by fixtures, tests and the demo."""

import json
import os

from .emulator_fixture import CLIENT_ID, CLIENT_SECRET


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
