"""The shim under the oldest system Python we claim (Debian 11's 3.9), and one line below that."""

import subprocess
import zipfile

import pytest

from harness import oldpython
from harness.deployment import REPO, SHIM_BUILD, USERS, Gate
from harness.people import PhoneHolder
from webserver.admin.install import Installer, InstallOptions
from webserver.admin.shim_build import SHEBANG, STUB, archive

EXEMPT = "ssh-auth: this account is exempt from the phone check.\n"
UNREGISTERED = (
    "ssh-auth: no phone is registered for this account; ask your administrator. Access denied.\n"
)
TOO_OLD = (
    "ssh-auth: this server's Python is {}; the phone check needs Python 3.9 or later. Access denied.\n"
)
NOT_RUNNING = "ssh-auth: the ssh-auth service is not running. Access denied.\n"


@pytest.fixture(scope="module")
def old_python():
    """Debian 11's /usr/bin/python3, run straight from the cached debootstrap tree."""
    return oldpython.python()


@pytest.fixture(scope="module")
def old_gate_deployment(emulator_server, old_python):
    with Gate(emulator_server, settings={"exempt_users": "sa-bob"}, shim_python=str(old_python)) as gate:
        yield gate


@pytest.fixture
def old_gate(old_gate_deployment, emulator):
    yield old_gate_deployment
    old_gate_deployment.end_sessions()


# --- through real sshd, with bullseye's python3 in the ForceCommand --------------------------


def test_the_login_user_runs_debian_11s_python_3_9_in_the_force_command(old_gate, old_python):
    dropin = (old_gate.root / "etc" / "ssh-auth-dropin.conf").read_text()
    assert f"ForceCommand {old_python} -I -S {old_gate.shim} create-check" in dropin
    probe = "import sys; print(sys.version_info[:2], sys.prefix)"
    result = subprocess.run(
        ["runuser", "-u", "sa-carol", "--", str(old_python), "-I", "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"(3, 9) {oldpython.TREE}/usr\n"


def test_exempt_login_runs_its_command_under_python_3_9(old_gate):
    status, out, err = old_gate.ssh("sa-bob", "echo ran").finish()
    assert (status, out, err) == (0, b"ran\n", EXEMPT), err


def test_unregistered_user_is_denied_in_one_line_under_python_3_9(old_gate):
    status, out, err = old_gate.ssh("sa-carol", "echo ran").finish()
    assert (status, out, err) == (1, b"", UNREGISTERED), err


def test_phone_approved_login_runs_its_command_under_python_3_9(old_gate):
    session = old_gate.ssh("sa-alice", "echo ok")  # the challenge path: QR, countdown, verdict
    PhoneHolder(USERS["sa-alice"]).approve(session.check_url())
    status, out, err = session.finish()
    assert (status, out) == (0, b"ok\n"), err
    assert err.endswith("ssh-auth: approved on your phone.\n")
    assert "Traceback" not in err


# --- the archive's own entry, before any sshshim module is read ------------------------------


@pytest.mark.parametrize(
    "version, expected",
    [
        ((3, 8, 10, "final", 0), TOO_OLD.format("3.8")),
        ((3, 6, 9, "final", 0), TOO_OLD.format("3.6")),
        ((3, 9, 2, "final", 0), NOT_RUNNING),  # 3.9 passes the guard and gets as far as the socket
    ],
)
def test_an_older_python_is_denied_in_one_line_before_the_shim_loads(version, expected):
    # No older interpreter is cheap here: run the built archive under ours, claiming another version.
    run_as = (
        f"import runpy, sys; sys.version_info = {version!r}; "
        f"sys.argv = [{str(SHIM_BUILD)!r}, 'create-check', '--socket', '/nonexistent/ssh-auth.sock']; "
        f"runpy.run_path({str(SHIM_BUILD)!r}, run_name='__main__')"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", run_as], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (1, "", expected)


# --- one builder -----------------------------------------------------------------------------


def test_one_builder_makes_the_same_bytes_for_make_and_the_installer(tmp_path):
    built = archive()
    assert built == archive()  # deterministic: fixed timestamps and order
    assert SHIM_BUILD.read_bytes() == built  # what make shim (and the tests' gates) use
    (tmp_path / "etc" / "ssh").mkdir(parents=True)
    (tmp_path / "etc" / "ssh" / "sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n")
    plan = Installer(str(tmp_path)).plan(InstallOptions(public_url="https://gate.example.com"))
    (installed,) = [change.data for change in plan if change.path.endswith("shim.pyz")]
    assert installed == built, "the installer must write webserver.admin.shim_build.archive()"


def test_the_archive_holds_the_stub_and_every_shim_module():
    built = archive()
    assert built.startswith(SHEBANG) and SHEBANG == b"#!/usr/bin/python3 -I\n"
    with zipfile.ZipFile(SHIM_BUILD) as zipped:
        names = zipped.namelist()
        assert zipped.read("__main__.py").decode() == STUB
        assert {info.date_time for info in zipped.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    modules = sorted(f"sshshim/{path.name}" for path in (REPO / "sshshim").glob("*.py"))
    assert names == ["__main__.py", *modules]
