"""Fixtures shared by every test: the emulator server and an API client pointed at it."""

import pytest

from webserver.config import load_credentials
from webserver.phonecheck import PhoneCheckClient

from .conftest_helpers import write_tru_json
from .emulator_fixture import Emulator

MATRIX: list[tuple[str, str, str]] = []


@pytest.fixture
def matrix():
    """Record one row of the attack/fault matrix: (row, expected, got); returns got."""

    def record(row: str, expected: str, got: str) -> str:
        MATRIX.append((row, expected, got))
        return got

    return record


def pytest_terminal_summary(terminalreporter):
    """Print the attack/fault matrix as a table at the end of the run."""
    if not MATRIX:
        return
    width = max(len(row) for row, _, _ in MATRIX)
    terminalreporter.section(f"attack/fault matrix: {len(MATRIX)} rows")
    for number, (row, expected, got) in enumerate(MATRIX, 1):
        mark = "ok  " if expected == got else "FAIL"
        terminalreporter.write_line(f"{number:3} {mark} {row:<{width}}  expected: {expected}")
        if expected != got:
            terminalreporter.write_line(f"{'':9}{'':<{width}}  got:      {got}")


@pytest.fixture(scope="session", autouse=True)
def shim_zipapp():
    """The shim exactly as deployed, from the one builder at every run (never a stale zipapp)."""
    from webserver.shim_build import write

    from .gate import SHIM_BUILD

    write(str(SHIM_BUILD))


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory):
    with Emulator(tmp_path_factory.mktemp("emulator") / "emulator.log") as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_server):
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def credentials(tmp_path):
    return load_credentials(str(write_tru_json(tmp_path / "tru.json")))


@pytest.fixture
def client(emulator, credentials):
    return PhoneCheckClient(credentials, emulator.url, timeout=(1.0, 1.5))


@pytest.fixture(scope="session")
def gate_server(emulator_server):
    """The default deployment: emulator + service + real sshd, shared by the login tests."""
    from .gate import Gate

    with Gate(emulator_server) as gate:
        yield gate


@pytest.fixture
def gate(gate_server, emulator):
    yield gate_server
    gate_server.end_sessions()


@pytest.fixture
def private_emulator(tmp_path):
    """An emulator of this test's own, for what would disturb the shared one (key rotation)."""
    with Emulator(tmp_path / "private-emulator.log") as emulator:
        yield emulator


@pytest.fixture
def private_client(private_emulator, credentials):
    return PhoneCheckClient(credentials, private_emulator.url, timeout=(1.0, 1.5))
