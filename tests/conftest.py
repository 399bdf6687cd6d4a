"""Wires the loopback harness into pytest: the emulator, deployments by settings, temporary roots,
the attack/fault matrix, and a machine left as it was found."""

import pytest

from harness.accounts import Ledger
from harness.deployment import SHIM_BUILD, Deployments
from harness.emulator import Emulator, write_tru_json
from harness.fleet import Fleet
from harness.pam_gate import PAM_BUILD, PamGate
from harness.server_root import debian_root
from harness.server_root import default_host_keys as host_keys
from webserver.admin.pam_module import build as build_pam_module
from webserver.admin.shim_build import write
from webserver.config import load_credentials
from webserver.phonecheck import PhoneCheckClient

MATRIX: list[tuple[str, str, str]] = []


@pytest.fixture(scope="session", autouse=True)
def machine_as_found():
    """Every account, group and process a run adds is gone when it ends, also on failure."""
    ledger = Ledger()
    yield
    removed_users, removed_groups = ledger.restore()
    assert ledger.added() == ([], []), f"left behind after removing {removed_users, removed_groups}"


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
    write(str(SHIM_BUILD))


@pytest.fixture(scope="session")
def pam_module():
    """The PAM module as deployed, from the one builder at every run."""
    build_pam_module(str(PAM_BUILD))


@pytest.fixture
def pam_gate(deployments, emulator, pam_module):
    """The default auth-time (PAM) deployment, shared by the PAM login tests."""
    return deployments.get(kind=PamGate)


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
def deployments(emulator_server):
    """Deployments (emulator + service + real sshd) by settings, each started once for the run."""
    shared = Deployments(emulator_server)
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def fleet(emulator_server, pam_module):
    """PostgreSQL, two hub replicas (failmode = safe: about the API only) and the hosts a test
    module adds, stopped with the module."""
    with Fleet(emulator_server, settings={"failmode": "safe"}) as running:
        yield running


@pytest.fixture(autouse=True)
def clients_ended(request):
    """After each test, no ssh client it started is left running against a shared deployment."""
    yield
    if "deployments" in request.fixturenames:
        request.getfixturevalue("deployments").end_sessions()


@pytest.fixture
def gate(deployments, emulator):
    """The default deployment, shared by the login tests."""
    return deployments.get()


@pytest.fixture
def private_emulator(tmp_path):
    """An emulator of this test's own, for what would disturb the shared one (key rotation)."""
    with Emulator(tmp_path / "private-emulator.log") as emulator:
        yield emulator


@pytest.fixture
def private_client(private_emulator, credentials):
    return PhoneCheckClient(credentials, private_emulator.url, timeout=(1.0, 1.5))


@pytest.fixture
def target(tmp_path):
    """A temporary root that looks like a Debian server: (root, tru.json, ssh-auth.conf)."""
    with debian_root(tmp_path) as found:
        yield found


@pytest.fixture
def default_host_keys():
    """sshd's default host keys, made if missing and removed again."""
    with host_keys():
        yield
