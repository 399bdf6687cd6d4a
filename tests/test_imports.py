"""The login path (the shim zipapp under /usr/bin/python3 -I) loads the standard library only."""

import json
import os
import pwd
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

from harness.deployment import SHIM_BUILD

SYSTEM_PYTHON = "/usr/bin/python3"
SHIM_COMMAND = (SYSTEM_PYTHON, "-I", "-S")  # as sshd runs the shim (the drop-in's ForceCommand)


def serve_once(path: str, messages: list[dict]) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def answer():
        with listener, listener.accept()[0] as conn:
            conn.recv(65536)
            for message in messages:
                conn.sendall(json.dumps(message).encode() + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_the_whole_login_path_imports_only_the_standard_library_and_execs_the_passwd_shell():
    with tempfile.TemporaryDirectory(prefix="sa-imp-", dir="/tmp") as root:
        path = os.path.join(root, "s.sock")
        serve_once(
            path,
            [
                {
                    "v": 1,
                    "event": "challenge",
                    "check_id": "c",
                    "check_url": "http://h/c/redirect",
                    "qr": "##",
                    "number": "42",
                    "expires_at": time.time() + 60,
                },
                {"v": 1, "event": "status", "status": "PENDING", "seconds_left": 50},
                {"v": 1, "event": "verdict", "allow": True, "reason": "approved on your phone."},
            ],
        )
        # $SHELL lies: the shell must come from the passwd database.
        env = {
            "PATH": "/usr/bin:/bin",
            "SSH_ORIGINAL_COMMAND": 'echo exec-ok "$0"',
            "SHELL": "/bin/false",
        }
        result = subprocess.run(
            [*SHIM_COMMAND, "-X", "importtime", str(SHIM_BUILD), "create-check", "--socket", path],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"exec-ok {os.path.basename(pwd.getpwuid(os.getuid()).pw_shell)}\n"
    order = re.findall(r"import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)", result.stderr)
    # -S: no `site`, so no .pth hook of the system's (e.g. setuptools' _distutils_hack) runs at
    # a login: everything the interpreter imports is the standard library or the shim.
    imported = set(order)
    assert "site" not in imported
    assert {"sshshim.login", "sshshim.shell", "sshshim.terminal", "sshshim.protocol"} <= imported
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names | {"sshshim", "__main__"}
    }
    assert outside == set()


def test_a_deny_exits_1_with_one_line_and_nothing_on_stdout():
    result = subprocess.run(
        [*SHIM_COMMAND, str(SHIM_BUILD), "create-check", "--socket", "/nonexistent/ssh-auth.sock"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "ssh-auth: the ssh-auth service is not running. Access denied.\n"


SERVICE_MODULES = """
import importlib, pkgutil, sys, webserver
for module in pkgutil.iter_modules(webserver.__path__):
    if module.name != "admin":
        importlib.import_module(f"webserver.{module.name}")
import webserver.__main__ as service
service.build  # the whole service's wiring is importable
print(sorted(name for name in sys.modules if name.startswith("webserver.admin")))
"""


def test_the_service_never_imports_the_root_run_administration():
    # The privilege boundary: webserver/admin/ (root: edits /etc, makes users) is reviewed on its
    # own, and the service (user ssh-auth) must not even load it.
    result = subprocess.run(
        [sys.executable, "-c", SERVICE_MODULES], capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"
