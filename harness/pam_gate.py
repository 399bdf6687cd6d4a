"""The deployment in auth-time mode: sshd with UsePAM and our module as its whole auth stack,
under a PAM service of its own, so that the machine's /etc/pam.d/sshd is never touched.

OpenSSH 9.2 names its PAM service after its program name: sshd started through a symlink named
sshd-satest-XXXX reads /etc/pam.d/sshd-satest-XXXX, which this gate writes and removes.
"""

import os
import re
import secrets
import shutil
from pathlib import Path

from webserver.admin.dropin import render_pam_dropin
from webserver.admin.pam_stack import render_pam_stack

from .deployment import REPO, Gate, Session
from .people import PhoneHolder, Watcher
from .tty import TtyClient

PAM_BUILD = REPO / "build" / "pam_ssh_auth.so"
PAM_DIR = Path("/etc/pam.d")
SYSTEM_STACK = PAM_DIR / "sshd"  # Debian's, as openssh-server ships it: the base of ours


SHORT_URL = re.compile(r"https?://\S+/q/[A-Za-z0-9_-]{22}")
PERSON_CONFIG = """\
Host *
    IdentityFile {key}
    IdentitiesOnly yes
    BatchMode no
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    ConnectTimeout 10
"""


class PamGate(Gate):
    """Emulator + ssh-auth-server + a real sshd whose authentication asks our PAM module.

    root_key: root may log in with the test key, from a key file of this gate's own (root's own
    authorized_keys is never touched). stock_auth: Debian's own auth stack (a password) in place
    of our module, everything else the same: the benchmarks' baseline.
    """

    def __init__(self, *args, root_key: bool = False, stock_auth: bool = False, **options):
        super().__init__(*args, **options)
        self.root_key, self.stock_auth = root_key, stock_auth

    def _sshd_files(self) -> list[str]:
        if self.root_key:
            keys = self.root / "etc" / "keys"
            keys.mkdir()
            (keys / "root").write_text(self.key.with_suffix(".pub").read_text())
            # StrictModes would refuse a key file under /tmp, which others may write to.
            extra = {"AuthorizedKeysFile": f".ssh/authorized_keys {keys}/%u", "StrictModes": "no"}
            self.sshd_options = {**extra, **self.sshd_options}
        return super()._sshd_files()

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
        text = SYSTEM_STACK.read_text()
        if not self.stock_auth:
            text = render_pam_stack(text, str(module), str(self.socket), self.ttl)
        stack.write_text(text)
        program = self.root / "lib" / name
        program.symlink_to("/usr/sbin/sshd")
        self.pam_service = name
        return str(program)

    def prepare(self) -> None:
        """The deployment's files, and a person's ssh_config for its clients."""
        super().prepare()
        self.ssh_config = self.root / "etc" / "ssh_config"
        self.ssh_config.write_text(PERSON_CONFIG.format(key=self.key))

    def client_options(self) -> list[str]:
        """A person's client, from a config file (ProxyJump hands -F, and only -F, to its hop):
        keyboard-interactive allowed and the default LogLevel, at which the client prints what
        authentication tells the person."""
        return ["-F", str(self.ssh_config)]

    def batch_options(self) -> list[str]:
        """A script's client: BatchMode=yes, as cron jobs and CI run ssh."""
        return super().client_options()

    def login(self, user: str, command: str | None = None, options: tuple = (), **popen) -> TtyClient:
        """A person logging in at an 80x24 terminal (the client's prompts go to its /dev/tty)."""
        return self.at_terminal(self.ssh_argv(user, command, options=options), **popen)

    def at_terminal(self, argv: list[str], **popen) -> TtyClient:
        """Any client program (ssh, scp, sftp, rsync, git) started by a person at a terminal."""
        client = TtyClient(argv, **popen)
        self.sessions.append(client)
        return client


class PromptAnswerer(Watcher):
    """A person at the terminal with the right phone: for every prompt a client shows, scans its
    QR (the short URL), approves, then presses Enter (until stopped)."""

    def __init__(self, client: TtyClient, sim: str):
        def answer(url: str) -> None:
            PhoneHolder(sim).approve(url)
            client.press_enter()

        super().__init__(client.screen_text, SHORT_URL, answer)


def short_url(client: Session, timeout: float = 20.0) -> str:
    """The short URL under the QR the client shows."""
    return client.wait_for(SHORT_URL, timeout).group(0)
