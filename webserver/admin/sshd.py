"""sshd as install and doctor ask it about a root: is the configuration valid, what does it
really apply to a login, and does every login that matters run the phone check."""

import ipaddress
import os
import re
import subprocess
from pathlib import Path

from .dropin import forced_command
from .layout import DROPIN, FORCECOMMAND, OUR_BLOCKS, PAM, SSHD, SSHD_CONFIG
from .proof import (
    PLAIN_USER,
    Context,
    SshdConfigCopy,
    Verdict,
    exempt_by,
    probe_contexts,
    sshd_settings,
)
from .system import members, read


class Sshd:
    """The sshd configuration under a root ('/' on a server), asked through sshd itself."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def test(self) -> str | None:
        """sshd -t on the whole configuration: None if it is valid, else sshd's complaint."""
        # sshd -t insists on its privilege separation directory, which only its own unit makes.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with SshdConfigCopy(self.root, ours=True) as copy:
            result = subprocess.run([SSHD, "-t", "-f", copy.top], capture_output=True, text=True)
        if result.returncode == 0:
            return None
        return result.stderr.strip() or f"exit {result.returncode}"

    def effective(self, address: str, user: str = PLAIN_USER) -> dict[str, str]:
        """sshd's effective settings for a login as `user` from `address` (one `sshd -T -C`)."""
        with SshdConfigCopy(self.root, ours=True) as copy:
            label = f"a login as {user} from {address}"
            return sshd_settings(copy.top, Context(label, user=user, addr=address))

    def prove(
        self,
        socket: str,
        exempt_networks=(),
        allow_forwarding: bool = False,
        mode: str = FORCECOMMAND,
    ) -> tuple[list["Verdict"], list[str]]:
        """sshd's effective settings without and with our lines, for every login that matters."""
        exempt = [ipaddress.ip_network(n, strict=False) for n in exempt_networks]
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        verdicts = []
        with SshdConfigCopy(self.root, False) as admins, SshdConfigCopy(self.root, True) as ours:
            contexts, notes = probe_contexts(ours.matches, exempt, members(self.root))
            for context in contexts:
                before, after = sshd_settings(admins.top, context), sshd_settings(ours.top, context)
                network = exempt_by(context.addr, exempt)
                if mode == PAM:
                    verdicts.append(Verdict.judge_pam(context, before, after, network))
                    continue
                forced = forced_command(socket)
                verdicts.append(Verdict.judge(context, before, after, forced, network, allow_forwarding))
        return verdicts, notes

    def version(self) -> tuple[int, int] | None:
        """OpenSSH's version (major, minor) from `sshd -V`, else `ssh -V`; None if neither says."""
        for argv in ([SSHD, "-V"], ["ssh", "-V"]):
            try:
                result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                continue
            found = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stdout + result.stderr)
            if found:
                return int(found.group(1)), int(found.group(2))
        return None

    def our_lines(self) -> str:
        """ssh-auth's own lines: the drop-in, and the marked blocks in sshd_config."""
        ours = (read(self.root, DROPIN) or b"").decode(errors="replace")
        config = (read(self.root, SSHD_CONFIG) or b"").decode(errors="replace")
        return ours + "".join(OUR_BLOCKS.findall(config))

    def installed_mode(self) -> str | None:
        """The mode our lines are in: pam (our PAM method), forcecommand (the shim), or None."""
        ours = self.our_lines()
        if re.search(r"(?im)^\s*AuthenticationMethods\s+\S*keyboard-interactive:pam", ours):
            return PAM
        if re.search(r"(?im)^\s*ForceCommand\s+\S", ours):
            return FORCECOMMAND
        return None

    def installed_exempt_networks(self) -> tuple[str, ...]:
        """The networks our own lines exempt (the drop-in, or the blocks in sshd_config)."""
        found = re.findall(r"(?im)^\s*Match\s+Address\s+(\S+)", self.our_lines())
        return tuple(network for line in found for network in line.split(","))
