"""The deployment in auth-time mode: sshd with UsePAM and our module as its whole auth stack,
under a PAM service of its own, so that the machine's /etc/pam.d/sshd is never touched.

OpenSSH 9.2 names its PAM service after its program name: sshd started through a symlink named
sshd-satest-XXXX reads /etc/pam.d/sshd-satest-XXXX, which this gate writes and removes.
"""

import os
import secrets
import shutil
from pathlib import Path

from webserver.admin.dropin import render_pam_dropin
from webserver.admin.pam_stack import render_pam_stack

from .deployment import REPO, Gate
from .tty import TtyClient

PAM_BUILD = REPO / "build" / "pam_ssh_auth.so"
PAM_DIR = Path("/etc/pam.d")
SYSTEM_STACK = PAM_DIR / "sshd"  # Debian's, as openssh-server ships it: the base of ours


class PamGate(Gate):
    """Emulator + ssh-auth-server + a real sshd whose authentication asks our PAM module."""

    def dropin(self) -> str:
        """The installer's auth-time drop-in (no ForceCommand; forwarding as the admin had it)."""
        return render_pam_dropin(self.ttl)

    @property
    def ttl(self) -> int:
        return int(self.settings.get("ttl", 120))

    def sshd_program(self) -> str:
        """A symlink to sshd whose name is a PAM service of this gate's own."""
        name = f"sshd-satest-{secrets.token_hex(4)}"
        module = self.root / "lib" / "pam_ssh_auth.so"
        shutil.copyfile(PAM_BUILD, module)
        os.chmod(module, 0o644)
        stack = PAM_DIR / name
        self.stack.callback(stack.unlink, missing_ok=True)
        stack.write_text(
            render_pam_stack(SYSTEM_STACK.read_text(), str(module), str(self.socket), self.ttl)
        )
        program = self.root / "lib" / name
        program.symlink_to("/usr/sbin/sshd")
        self.pam_service = name
        return str(program)

    def client_options(self) -> list[str]:
        """A person's client: keyboard-interactive allowed (BatchMode=yes would refuse it)."""
        return [o.replace("BatchMode=yes", "BatchMode=no") for o in super().client_options()]

    def batch_options(self) -> list[str]:
        """A script's client: BatchMode=yes, as cron jobs and CI run ssh."""
        return super().client_options()

    def login(self, user: str, command: str | None = None, options: tuple = (), **popen) -> TtyClient:
        """A person logging in at an 80x24 terminal (the client's prompts go to its /dev/tty)."""
        client = TtyClient(self.ssh_argv(user, command, options=options), **popen)
        self.sessions.append(client)
        return client
