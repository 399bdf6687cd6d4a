"""sshd as install and doctor ask it about a root: is the configuration valid, what does it
really apply to a login, and does every login that matters run the phone check."""

import ipaddress
import os
import re
import subprocess
from pathlib import Path

from .dropin import forced_command
from .layout import DROPIN, OUR_BLOCKS, SSHD_CONFIG
from .proof import (
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
            result = subprocess.run(
                ["/usr/sbin/sshd", "-t", "-f", copy.top], capture_output=True, text=True
            )
        if result.returncode == 0:
            return None
        return result.stderr.strip() or f"exit {result.returncode}"

    def effective(self, address: str) -> dict[str, str]:
        """sshd's effective settings for a login from `address` (one `sshd -T -C` run)."""
        with SshdConfigCopy(self.root, ours=True) as copy:
            return sshd_settings(copy.top, Context(f"a login from {address}", addr=address))

    def prove(
        self, socket: str, exempt_networks=(), allow_forwarding: bool = False
    ) -> tuple[list["Verdict"], list[str]]:
        """sshd's effective settings without and with our lines, for every login that matters."""
        exempt = [ipaddress.ip_network(n, strict=False) for n in exempt_networks]
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with SshdConfigCopy(self.root, False) as admins, SshdConfigCopy(self.root, True) as ours:
            contexts, notes = probe_contexts(ours.matches, exempt, members(self.root))
            verdicts = [
                Verdict.judge(
                    context,
                    sshd_settings(admins.top, context),
                    sshd_settings(ours.top, context),
                    forced_command(socket),
                    exempt_by(context.addr, exempt),
                    allow_forwarding,
                )
                for context in contexts
            ]
        return verdicts, notes

    def installed_exempt_networks(self) -> tuple[str, ...]:
        """The networks our own lines exempt (the drop-in, or the blocks in sshd_config)."""
        ours = (read(self.root, DROPIN) or b"").decode(errors="replace")
        ours += "".join(
            OUR_BLOCKS.findall((read(self.root, SSHD_CONFIG) or b"").decode(errors="replace"))
        )
        found = re.findall(r"(?im)^\s*Match\s+Address\s+(\S+)", ours)
        return tuple(network for line in found for network in line.split(","))
