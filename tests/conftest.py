"""Fixtures shared by every test: the emulator server and an API client pointed at it."""

import json
import os

import pytest

from webserver.config import load_credentials
from webserver.phonecheck import PhoneCheckClient

from .emulator_fixture import CLIENT_ID, CLIENT_SECRET, Emulator


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory):
    with Emulator(tmp_path_factory.mktemp("emulator") / "emulator.log") as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_server):
    emulator_server.reset()
    return emulator_server


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


@pytest.fixture
def credentials(tmp_path):
    return load_credentials(str(write_tru_json(tmp_path / "tru.json")))


@pytest.fixture
def client(emulator, credentials):
    return PhoneCheckClient(credentials, emulator.url, timeout=(1.0, 1.5))
