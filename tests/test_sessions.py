"""Every kind of SSH session works under the gate once the phone approves, with clean streams."""

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.deployment import USERS, Gate
from harness.people import Approver

ALICE = USERS["sa-alice"]
HOME = Path("/home/sa-alice")
PAYLOAD = os.urandom(300_000) + bytes(range(256)) * 64  # binary, every byte value


def owned_by_alice(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    shutil.chown(path, "sa-alice", "sa-alice")
    return path


def identical(same: bool) -> str:
    """A matrix cell for a transfer: what arrived is what was sent, or not."""
    return "byte-identical" if same else "DIFFERENT"


def run_approved(gate, argv, **popen):
    """Run a client to the end while the phone approves every check it prints."""
    session = gate.client(argv, **popen)
    with Approver(session, ALICE) as approver:
        status, out, err = session.finish(timeout=60)
    assert status == 0, err
    assert approver.approved, "no phone check was asked for"
    return out, err, approver


@pytest.fixture
def local(tmp_path):
    source = tmp_path / "payload.bin"
    source.write_bytes(PAYLOAD)
    return tmp_path


@contextmanager
def approved_master(gate):
    """An approved ssh ControlMaster connection; yields the options that multiplex over it."""
    control = f"/tmp/sa-cm-{secrets.token_hex(6)}"
    options = ("-o", "ControlMaster=yes", "-o", f"ControlPath={control}")
    master = gate.ssh("sa-alice", "sleep 300", options=options)
    with Approver(master, ALICE):
        master.wait_for("approved on your phone")
    try:
        yield ["-o", f"ControlPath={control}", "-o", "ControlMaster=no"]
    finally:
        subprocess.run(
            ["ssh", "-o", f"ControlPath={control}", "-O", "exit", "sa-alice@127.0.0.1"],
            capture_output=True,
            timeout=10,
        )
        master.kill()
        Path(control).unlink(missing_ok=True)


def test_scp_legacy_upload_and_download_show_the_qr_on_stderr(gate, local, matrix):
    scp = ["scp", "-q", "-O", "-P", str(gate.port), *gate.client_options()]
    (HOME / "up.bin").unlink(missing_ok=True)
    _, err, _ = run_approved(gate, [*scp, str(local / "payload.bin"), "sa-alice@127.0.0.1:up.bin"])
    assert "confirm this login with your phone" in err
    uploaded = (HOME / "up.bin").read_bytes() == PAYLOAD
    owned_by_alice(HOME / "down.bin", PAYLOAD[::-1])
    run_approved(gate, [*scp, "sa-alice@127.0.0.1:down.bin", str(local / "down.bin")])
    downloaded = (local / "down.bin").read_bytes() == PAYLOAD[::-1]
    got = identical(uploaded and downloaded)
    assert matrix("sessions: scp -O upload and download after approval", "byte-identical", got) == (
        "byte-identical"
    )


def test_scp_over_sftp_through_an_approved_master(gate, local, emulator, matrix):
    log_before = len(gate.service.log_text())
    with approved_master(gate) as mux:
        scp = ["scp", "-q", "-P", str(gate.port), *gate.client_options(), *mux]
        (HOME / "up2.bin").unlink(missing_ok=True)
        result = subprocess.run(
            [*scp, str(local / "payload.bin"), "sa-alice@127.0.0.1:up2.bin"],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    log = gate.service.log_text()[log_before:]
    assert log.count("started for sa-alice") == 1  # the master's check only
    assert "login reused user=sa-alice" in log
    got = identical((HOME / "up2.bin").read_bytes() == PAYLOAD)
    row = "sessions: scp (SFTP mode) over an approved master"
    assert matrix(row, "byte-identical", got) == "byte-identical"


def sftp_batch(gate, local, mux):
    owned_by_alice(HOME / "sftp-down.bin", PAYLOAD)
    (HOME / "sftp-up.bin").unlink(missing_ok=True)
    batch = local / "batch"
    batch.write_text(
        f"put {local / 'payload.bin'} sftp-up.bin\nget sftp-down.bin {local / 'got.bin'}\nls -1\n"
    )
    result = subprocess.run(
        [
            "sftp",
            "-q",
            "-b",
            str(batch),
            "-P",
            str(gate.port),
            *gate.client_options(),
            *mux,
            "sa-alice@127.0.0.1",
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert b"sftp-down.bin" in result.stdout
    return identical(
        (HOME / "sftp-up.bin").read_bytes() == PAYLOAD and (local / "got.bin").read_bytes() == PAYLOAD
    )


def test_sftp_batch_with_the_sftp_server_subsystem(gate, local, matrix):
    with approved_master(gate) as mux:
        got = sftp_batch(gate, local, mux)
    assert matrix("sessions: sftp batch, sftp-server subsystem", "byte-identical", got) == (
        "byte-identical"
    )


@pytest.fixture(scope="module")
def internal_sftp_gate(emulator_server):
    with Gate(emulator_server, users={"sa-alice": ALICE}, sftp_subsystem="internal-sftp") as gate:
        yield gate


def test_sftp_batch_with_the_internal_sftp_subsystem(internal_sftp_gate, emulator, local, matrix):
    try:
        with approved_master(internal_sftp_gate) as mux:
            got = sftp_batch(internal_sftp_gate, local, mux)
    finally:
        internal_sftp_gate.end_sessions()
    assert matrix("sessions: sftp batch, internal-sftp subsystem", "byte-identical", got) == (
        "byte-identical"
    )


def test_sftp_without_an_approved_connection_is_refused_at_once(gate, local, emulator, matrix):
    started = time.monotonic()
    result = subprocess.run(
        ["sftp", "-b", "/dev/null", "-P", str(gate.port), *gate.client_options(), "sa-alice@127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = gate.service.log_text()
    refused = (
        result.returncode != 0
        and time.monotonic() - started < 5
        and "login denied user=sa-alice uid=" in log
        and "sftp and scp (in SFTP mode) cannot show the phone check" in log
    )
    got = (
        f"{'refused at once' if refused else 'NOT refused at once'}, "
        f"{'no check' if 'create' not in emulator.calls() else 'a check created'}"
    )
    expected = "refused at once, no check"
    assert matrix("sessions: sftp with no approved connection", expected, got) == expected


def test_rsync_copies_a_tree(gate, local):
    tree = local / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.bin").write_bytes(PAYLOAD)
    (tree / "sub" / "b.txt").write_text("hello\n")
    shutil.rmtree(HOME / "rsynced", ignore_errors=True)
    run_approved(
        gate, ["rsync", "-a", "-e", gate.ssh_command(), f"{tree}/", "sa-alice@127.0.0.1:rsynced/"]
    )
    assert (HOME / "rsynced" / "a.bin").read_bytes() == PAYLOAD
    assert (HOME / "rsynced" / "sub" / "b.txt").read_text() == "hello\n"


def test_git_clone_and_push_over_ssh(gate, local):
    repo = HOME / "project.git"
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run(
        ["runuser", "-u", "sa-alice", "--", "git", "init", "-q", "--bare", "-b", "main", str(repo)],
        check=True,
    )
    env = {**os.environ, "GIT_SSH_COMMAND": gate.ssh_command()}
    git = ["git", "-c", "user.name=Test", "-c", "user.email=t@example.test"]
    clone = local / "clone"
    run_approved(gate, [*git, "clone", "-q", f"sa-alice@127.0.0.1:{repo}", str(clone)], env=env)
    (clone / "README").write_text("gated\n")
    subprocess.run([*git, "-C", str(clone), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(clone), "commit", "-qm", "first"], check=True)
    run_approved(gate, [*git, "-C", str(clone), "push", "-q", "origin", "HEAD:main"], env=env)
    shown = subprocess.run(
        ["git", "--git-dir", str(repo), "show", "main:README"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == "gated\n"


def test_binary_output_is_byte_identical(gate):
    owned_by_alice(HOME / "blob.bin", PAYLOAD)
    out, _, _ = run_approved(gate, gate.ssh_argv("sa-alice", "cat blob.bin"))
    assert out == PAYLOAD


def test_a_command_reads_its_stdin(gate, local):
    with open(local / "payload.bin", "rb") as stdin:
        out, _, _ = run_approved(gate, gate.ssh_argv("sa-alice", "sha256sum"), stdin=stdin)
    assert out.decode().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()


def test_yes_into_head_ends_normally(gate):
    out, err, _ = run_approved(gate, gate.ssh_argv("sa-alice", "yes | head -1"))
    assert out == b"y\n"
    assert "Broken pipe" not in err


def test_exit_status_is_propagated(gate):
    session = gate.client(gate.ssh_argv("sa-alice", "echo bye; exit 42"))
    with Approver(session, ALICE):
        status, out, _ = session.finish(timeout=60)
    assert (status, out) == (42, b"bye\n")


def test_the_environment_is_the_one_sshd_set(gate):
    out, _, _ = run_approved(
        gate,
        gate.ssh_argv(
            "sa-alice", 'echo "$USER|$HOME|$SHELL|${SSH_CONNECTION%% *}|$SSH_ORIGINAL_COMMAND"'
        ),
    )
    assert out.decode().startswith("sa-alice|/home/sa-alice|/bin/bash|127.0.0.1|echo ")
