"""The public URL: as configured, or from an ngrok agent we start: no local API, token private."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.deployment import USERS, Gate, refusal_config, start_service
from harness.emulator import open_on_phone
from webserver.config import ConfigError, Settings
from webserver.tunnel import AGENT_CONFIG, open_tunnel

FAKE_AGENT = Path(__file__).parent / "fixtures" / "fake-ngrok"
TUNNEL_URL = "https://sa-test.ngrok-free.app"
TOKEN = "2saTestAuthtoken_7f3c9a1e5b_not_a_real_one"

# Run as another local user: every /proc/*/cmdline it can read, and whether it can read the
# agent's environment. Token and agent path come on stdin, so this scan's own command line
# cannot hold either.
SCAN_PROC = """
import json, os, sys
token, agent = (word.encode() for word in json.load(sys.stdin))
report = {"cmdlines": 0, "with_token": [], "agent": [], "agent_environ": []}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            cmdline = file.read()
    except OSError:
        continue  # gone meanwhile
    report["cmdlines"] += 1
    if token in cmdline:
        report["with_token"].append(cmdline.replace(b"\\0", b" ").decode(errors="replace"))
    if agent in cmdline:
        report["agent"].append(pid)
        try:
            open(f"/proc/{pid}/environ", "rb").close()
            report["agent_environ"].append("readable")
        except OSError as error:
            report["agent_environ"].append(type(error).__name__)
print(json.dumps(report))
"""


def test_public_url_is_the_redirect_url(gate):
    session = gate.ssh("sa-alice", "true")
    redirect = open_on_phone(session.check_url(), sim=USERS["sa-alice"])
    assert redirect["location"].startswith(f"http://127.0.0.1:{gate.webhook_port}/complete-check?login=")


@pytest.fixture
def agent(tmp_path):
    path = tmp_path / "ngrok"
    shutil.copy(FAKE_AGENT, path)
    path.chmod(0o755)
    return path


def tunnel_settings(agent: Path) -> dict:
    """Gate settings for a deployment whose public URL comes from the (fake) agent."""
    return {"public_url": None, "tunnel": "ngrok", "ngrok_path": str(agent)}


def agent_pid(agent: Path) -> int:
    found = subprocess.run(["pgrep", "-f", str(agent)], capture_output=True, text=True)
    pids = found.stdout.split()
    assert len(pids) == 1, pids
    return int(pids[0])


def test_the_ngrok_tunnel_url_becomes_the_redirect_url(emulator_server, agent):
    settings = {**tunnel_settings(agent), "ngrok_authtoken": TOKEN}
    with Gate(emulator_server, settings=settings, users={"sa-alice": USERS["sa-alice"]}) as gate:
        session = gate.ssh("sa-alice", "true")
        redirect = open_on_phone(session.check_url(), sim=USERS["sa-alice"])
        assert redirect["location"].startswith(f"{TUNNEL_URL}/complete-check?login=")
        assert f"public URL {TUNNEL_URL}" in gate.service.log_text()


def test_the_agent_serves_no_local_api_for_other_users_to_read_or_steer(emulator_server, agent):
    # ngrok's local API has no authentication: through it any local user could read every
    # phone's redirect (check id, code, page token) and move or delete the tunnel.
    settings = {**tunnel_settings(agent), "ngrok_authtoken": TOKEN}
    with Gate(emulator_server, settings=settings, users={"sa-alice": USERS["sa-alice"]}) as gate:
        pid = agent_pid(agent)
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        agent_sockets = [line for line in listening.splitlines() if f"pid={pid}," in line]
        ngrok_yml = (gate.socket.parent / "ngrok.yml").read_text()
    assert agent_sockets == []
    assert re.search(r"(?m)^  web_addr: false$", ngrok_yml)
    assert re.search(r"(?m)^  inspect_db_size: -1$", ngrok_yml)


def test_a_missing_agent_is_one_clear_line_at_start(tmp_path, credentials):
    config = refusal_config(
        tmp_path, tunnel="ngrok", ngrok_path=f"{tmp_path}/no-ngrok", credentials=f"{tmp_path}/tru.json"
    )
    result = start_service(config)
    assert result.returncode == 2
    assert result.stderr == (
        f"ssh-auth-server: tunnel = ngrok, but there is no ngrok agent at "
        f"{tmp_path}/no-ngrok: install it (https://ngrok.com/download; it "
        "is never downloaded automatically) or set public_url instead\n"
    )


def test_an_agent_without_a_token_is_one_clear_line_at_start(monkeypatch, tmp_path, agent):
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    settings = Settings(tunnel="ngrok", ngrok_path=str(agent), socket=str(tmp_path / "s.sock"))
    with pytest.raises(ConfigError) as refused:
        open_tunnel(settings)
    assert str(refused.value) == (
        "the ngrok tunnel did not start: authentication failed: Usage of ngrok requires a verified "
        "account and authtoken. ERR_NGROK_4018"
    )


def test_a_configured_public_url_means_no_tunnel(agent, tmp_path):
    settings = Settings(
        public_url="https://ssh.example.com",
        tunnel="ngrok",
        ngrok_path=str(agent),
        socket=str(tmp_path / "s.sock"),
    )
    assert open_tunnel(settings) is None


def scan_proc_as(user: str, agent: Path) -> dict:
    """What a local user learns from every /proc/*/cmdline, and from the agent's environ."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", "/usr/bin/python3", "-I", "-c", SCAN_PROC],
        input=json.dumps([TOKEN, str(agent)]),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("source", ["ssh-auth.conf", "environment"])
def test_no_local_user_can_read_the_ngrok_authtoken(emulator_server, agent, monkeypatch, source):
    """/proc/PID/cmdline is world-readable: the token reaches the agent in its environment only."""
    settings = tunnel_settings(agent)
    if source == "environment":
        monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)  # the service's own environment
    else:
        settings["ngrok_authtoken"] = TOKEN
    with Gate(emulator_server, settings=settings, users={"sa-alice": USERS["sa-alice"]}) as gate:
        report = scan_proc_as("sa-alice", agent)
        environ = Path(f"/proc/{agent_pid(agent)}/environ").read_bytes().split(b"\0")
        ngrok_yml = gate.socket.parent / "ngrok.yml"
        mode = ngrok_yml.stat().st_mode & 0o777
        ngrok_yml_text = ngrok_yml.read_text()
        log = gate.service.log_text()
    assert report["with_token"] == []
    assert len(report["agent"]) == 1, report  # the scan did see the running agent
    assert report["cmdlines"] > 10
    assert report["agent_environ"] == ["PermissionError"]
    assert f"NGROK_AUTHTOKEN={TOKEN}".encode() in environ  # how the agent got it
    assert TOKEN not in log
    assert (oct(mode), TOKEN in ngrok_yml_text) == ("0o600", False)


@pytest.mark.parametrize("before", [None, 0o644], ids=["created", "older-0644-file"])
def test_ngrok_yml_is_owner_only_and_ours(monkeypatch, tmp_path, agent, before):
    """ngrok.yml may hold an authtoken (`ngrok config add-authtoken`): 0600, and our settings."""
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    ngrok_yml = tmp_path / "ngrok.yml"
    if before is not None:  # an older install's world-readable file, holding the token itself
        ngrok_yml.write_text(f'version: "3"\nagent:\n  authtoken: {TOKEN}\n')
        ngrok_yml.chmod(before)
    settings = Settings(tunnel="ngrok", ngrok_path=str(agent), socket=str(tmp_path / "s.sock"))
    tunnel = open_tunnel(settings)
    try:
        assert tunnel.public_url == TUNNEL_URL
    finally:
        tunnel.close()
    assert oct(ngrok_yml.stat().st_mode & 0o777) == "0o600"
    assert ngrok_yml.read_text() == AGENT_CONFIG
