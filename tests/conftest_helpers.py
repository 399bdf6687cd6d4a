"""Small helpers shared by fixtures, tests and the demo."""

import json
import os
import subprocess

import pytest

from .emulator_fixture import CLIENT_ID, CLIENT_SECRET, VENV_BIN


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


def gate_with(name: str, settings: dict):
    """Fixture `name`: a module-wide deployment with these settings; clients ended per test."""

    @pytest.fixture(scope="module", name=f"{name}_deployment")
    def deployment(emulator_server):
        from .gate import Gate

        with Gate(emulator_server, settings=settings) as gate:
            yield gate

    @pytest.fixture(name=name)
    def per_test(request, emulator):
        gate = request.getfixturevalue(f"{name}_deployment")
        yield gate
        gate.end_sessions()

    return deployment, per_test


def refusal_config(directory, **settings) -> str:
    """An ssh-auth.conf for a service started only to be refused: its own socket, any port."""
    lines = {"socket": f"{directory}/s.sock", "listen": "127.0.0.1:0", **settings}
    path = directory / "ssh-auth.conf"
    path.write_text("".join(f"{key} = {value}\n" for key, value in lines.items()))
    return path


def start_service(config) -> subprocess.CompletedProcess:
    """Run ssh-auth-server on a config it should refuse; its exit status and stderr."""
    return subprocess.run(
        [str(VENV_BIN / "ssh-auth-server"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
