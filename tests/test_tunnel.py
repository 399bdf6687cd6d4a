"""The public URL: as configured, or learned from an ngrok tunnel (pyngrok) — never downloaded."""

import shutil
from pathlib import Path

import pytest

from webserver.config import ConfigError, Settings
from webserver.tunnel import open_public_url

from .conftest_helpers import start_service
from .emulator_fixture import open_on_phone
from .gate import USERS, Gate

FAKE_AGENT = Path(__file__).parent / "fixtures" / "fake-ngrok"
TUNNEL_URL = "https://sa-test.ngrok-free.app"


def test_public_url_is_the_redirect_url(gate):
    session = gate.ssh("sa-alice", "true")
    redirect = open_on_phone(session.check_url(), sim=USERS["sa-alice"])
    assert redirect["location"].startswith(
        f"http://127.0.0.1:{gate.webhook_port}/complete-check?check_id="
    )


@pytest.fixture
def agent(tmp_path):
    path = tmp_path / "ngrok"
    shutil.copy(FAKE_AGENT, path)
    path.chmod(0o755)
    yield path
    from pyngrok import process

    process.kill_process(str(path))


def test_the_ngrok_tunnel_url_becomes_the_redirect_url(emulator_server, agent):
    settings = {"public_url": None, "tunnel": "ngrok", "ngrok_path": str(agent)}
    with Gate(emulator_server, settings=settings, users={"sa-alice": USERS["sa-alice"]}) as gate:
        session = gate.ssh("sa-alice", "true")
        redirect = open_on_phone(session.check_url(), sim=USERS["sa-alice"])
        assert redirect["location"].startswith(f"{TUNNEL_URL}/complete-check?check_id=")
        assert f"public URL {TUNNEL_URL}" in gate.service.log_text()


def test_a_missing_agent_is_one_clear_line_at_start(tmp_path, credentials):
    config = tmp_path / "ssh-auth.conf"
    config.write_text(
        f"tunnel = ngrok\nngrok_path = {tmp_path}/no-ngrok\n"
        f"socket = {tmp_path}/s.sock\nlisten = 127.0.0.1:0\n"
        f"credentials = {tmp_path}/tru.json\n"
    )
    result = start_service(config)
    assert result.returncode == 2
    assert result.stderr == (
        f"ssh-auth-server: tunnel = ngrok, but there is no ngrok agent at "
        f"{tmp_path}/no-ngrok: install it (https://ngrok.com/download; it "
        "is never downloaded automatically) or set public_url instead\n"
    )


def test_no_download_is_ever_tried(monkeypatch, tmp_path, agent):
    import pyngrok.installer

    def download(*args, **kwargs):
        raise AssertionError("pyngrok tried to install an agent")

    monkeypatch.setattr(pyngrok.installer, "install_ngrok", download)
    monkeypatch.setattr(pyngrok.installer, "_install_ngrok_archive", download)
    monkeypatch.setattr(pyngrok.installer, "_download_file", download)
    base = {"tunnel": "ngrok", "socket": str(tmp_path / "s.sock"), "config_path": "x"}
    assert open_public_url(Settings(**base, ngrok_path=str(agent))) == TUNNEL_URL
    with pytest.raises(ConfigError, match="no ngrok agent at"):
        open_public_url(Settings(**base, ngrok_path=str(tmp_path / "absent")))


def test_a_configured_public_url_means_no_tunnel(agent, tmp_path):
    settings = Settings(
        public_url="https://ssh.example.com",
        tunnel="ngrok",
        ngrok_path=str(agent),
        socket=str(tmp_path / "s.sock"),
    )
    assert open_public_url(settings) == "https://ssh.example.com"
