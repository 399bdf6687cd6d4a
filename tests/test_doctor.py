"""`ssh-auth doctor` against a running gate: all ✔ when healthy, then each check broken in turn."""

import json
import shutil
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .processes import free_port
from .test_admin import install, ssh_auth, target  # noqa: F401 - the temporary root fixture


@pytest.fixture
def setup(gate, target, tmp_path):  # noqa: F811
    """The gate's config, and a root where it is installed (so sshd -T sees the drop-in)."""
    root, credentials, _ = target
    config = tmp_path / "ssh-auth.conf"
    config.write_text(gate.config.read_text() + "user=root:447700900129\n")
    assert install(root, credentials, config).returncode == 0
    return gate, root, config


def doctor(config, root) -> tuple[int, str]:
    result = ssh_auth("doctor", "--config", str(config), "--root", str(root))
    return result.returncode, result.stdout


def replace_setting(config: Path, key: str, value: str) -> None:
    lines = [line for line in config.read_text().splitlines() if not line.startswith(key + " ")]
    config.write_text("\n".join([f"{key} = {value}", *lines]) + "\n")


def test_a_healthy_installation_is_all_ticks(setup):
    gate, root, config = setup
    status, out = doctor(config, root)
    assert status == 0, out
    assert "✗" not in out
    for line in (
        "✔ configuration",
        "✔ credentials",
        "✔ an access token was obtained",
        "✔ the API's signing keys (JWKS) are reachable",
        "✔ clock within",
        "✔ the webhook answers at",
        "✔ the service answers on",
        "✔ sshd runs the phone check for every login",
        "✔ disableforwarding yes",
        "✔ permittunnel no",
        "✔ permituserrc no",
        "✔ permituserenvironment no",
        "registered user(s), all exist",
    ):
        assert line in out, out
    assert "⚠ sa-alice's .bashrc" in out and "run before the phone check" in out


class SkewedAPI(BaseHTTPRequestHandler):
    """An API whose clock is an hour ahead (and that knows nothing else)."""

    def date_time_string(self, timestamp=None):
        return formatdate(__import__("time").time() + 3600, usegmt=True)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET

    def log_message(self, *args):
        pass


def break_clock(gate, root, config):
    server = ThreadingHTTPServer(("127.0.0.1", 0), SkewedAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    replace_setting(config, "api_base_url", f"http://127.0.0.1:{server.server_port}")


def break_credentials_mode(gate, root, config):
    copy = config.parent / "open-tru.json"
    shutil.copy(gate.root / "etc" / "tru.json", copy)
    copy.chmod(0o644)
    replace_setting(config, "credentials", str(copy))


def break_secret(gate, root, config):
    wrong = config.parent / "wrong-tru.json"
    body = json.loads((gate.root / "etc" / "tru.json").read_text())
    body["credentials"][0]["client_secret"] = "wrong"
    wrong.write_text(json.dumps(body))
    wrong.chmod(0o600)
    replace_setting(config, "credentials", str(wrong))


BROKEN = [
    (
        "configuration",
        lambda g, r, c: c.write_text(c.read_text() + "colour = blue\n"),
        "✗ configuration:",
        "unknown setting 'colour' — fix: correct the line it names",
    ),
    (
        "credentials readable by others",
        break_credentials_mode,
        "✗ credentials",
        "are readable by other users (mode 0644) — fix: chmod 600",
    ),
    (
        "token refused",
        break_secret,
        "✗ no access token:",
        "HTTP 401: invalid client credentials — fix: check client_id",
    ),
    (
        "JWKS down",
        lambda g, r, c: g.emulator.fault("jwks", "status", status=503, count=4),
        "✗ JWKS unreachable:",
        "— fix: allow HTTPS to the API from this server",
    ),
    (
        "clock skew",
        break_clock,
        "✗ clock is -3",
        "s off the API's (signed redirects allow 300 s) — fix: enable time sync",
    ),
    (
        "webhook unreachable",
        lambda g, r, c: replace_setting(c, "public_url", f"http://127.0.0.1:{free_port()}"),
        "✗ the webhook does not answer at",
        "— fix: start the service and check public_url",
    ),
    (
        "socket not answering",
        lambda g, r, c: replace_setting(c, "socket", "/tmp/sa-none.sock"),
        "✗ the service socket /tmp/sa-none.sock does not answer",
        "— fix: systemctl enable --now ssh-auth",
    ),
    (
        "drop-in missing",
        lambda g, r, c: ssh_auth("uninstall", "--root", str(r)),
        "✗ sshd does not run the phone check (ForceCommand is 'none')",
        "— fix: ssh-auth install, then reload sshd",
    ),
    (
        "forwarding allowed",
        lambda g, r, c: ssh_auth("install", "--root", str(r), "--config", str(c), "--allow-forwarding"),
        "✗ disableforwarding is no: the phone check can be bypassed",
        "— fix: set disableforwarding yes",
    ),
    (
        "registered user missing",
        lambda g, r, c: c.write_text(c.read_text() + "user=sa-nosuchuser:447700900131\n"),
        "✗ registered but not on this machine: sa-nosuchuser",
        "— fix: ssh-auth unregister-user NAME",
    ),
    (
        "balance low",
        lambda g, r, c: (g.socket.parent / "balance").write_text("5\n"),
        "✗ balance low: 5 left after the last check",
        "— fix: top up the account in the console",
    ),
]


@pytest.mark.parametrize("case, breaks, line, fix", BROKEN, ids=[row[0] for row in BROKEN])
def test_each_broken_check_says_what_to_fix(setup, case, breaks, line, fix):
    gate, root, config = setup
    try:
        breaks(gate, root, config)
        status, out = doctor(config, root)
    finally:
        (gate.socket.parent / "balance").unlink(missing_ok=True)
    assert status == 1, out
    found = [text for text in out.splitlines() if text.startswith(line)]
    assert found and fix in found[0], out
