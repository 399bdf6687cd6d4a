"""Where everything lives on a server, and the names install gives it: one place for each.

Paths are relative to the root install works on ('/' on a server, a temporary root in tests).
"""

import re

from sshshim.protocol import DEFAULT_SOCKET, SERVICE_USER

from ..config import DEFAULT_CONFIG, DEFAULT_CREDENTIALS

__all__ = ["DEFAULT_SOCKET", "SERVICE_USER"]  # the two the shim knows too, from its protocol

CONFIG = DEFAULT_CONFIG.lstrip("/")  # the service's defaults, under the root
CREDENTIALS = DEFAULT_CREDENTIALS.lstrip("/")
SHIM = "usr/local/lib/ssh-auth/shim.pyz"
UNIT = "etc/systemd/system/ssh-auth.service"
MANIFEST = "var/lib/ssh-auth/install.json"
SSHD_CONFIG = "etc/ssh/sshd_config"
DROPIN = "etc/ssh/sshd_config.d/ssh-auth.conf"
TUTORIAL_DIR = "usr/local/bin/tru-id-ssh-auth"
TUTORIAL_BACKUP = "etc/ssh/sshd_confige"
PAM_DIR = "etc/pam.d"  # sshd's PAM stack is PAM_DIR/sshd (OpenSSH before 9.8 names no other)
PAM_STACK = f"{PAM_DIR}/sshd"
VENDOR_PAM_DIR = "usr/lib/pam.d"  # where libpam also looks for a stack (not for @include)
# Where libpam looks for modules by name: the directory that holds pam_unix.so, searched in this
# order ({multiarch} is this machine's, e.g. x86_64-linux-gnu).
PAM_MODULE_DIRS = (
    "lib/{multiarch}/security",
    "usr/lib/{multiarch}/security",
    "lib/x86_64-linux-gnu/security",
    "usr/lib/x86_64-linux-gnu/security",
    "lib64/security",
    "usr/lib64/security",
    "lib/security",
    "usr/lib/security",
)

FORCECOMMAND, PAM = "forcecommand", "pam"  # the install modes: the shim, or the PAM module
MODES = (FORCECOMMAND, PAM)

SSHD = "/usr/sbin/sshd"  # OpenSSH's server: what install and doctor run (-t, -T, -V) and look for
SHIM_PYTHON = "/usr/bin/python3"  # the system interpreter every login user can run
SHIM_PYTHON_MIN = (3, 9)
SHIM_PYTHON_CLAIM = "Debian 11+, Ubuntu 22.04+, RHEL 9+"
ADMIN_GROUPS = ("sudo", "wheel", "admin")

# Our marked blocks in sshd_config, where it has no Include of sshd_config.d.
BLOCK_BEGIN = "# BEGIN ssh-auth (written by `ssh-auth install`; `ssh-auth uninstall` removes it)\n"
MATCH_BEGIN = (
    "# BEGIN ssh-auth Match blocks (written by `ssh-auth install`, last: a Match runs to the "
    "end of the file)\n"
)
BLOCK_END = "# END ssh-auth\n"
OUR_BLOCKS = re.compile(r"(?ms)^# BEGIN ssh-auth\b.*?^# END ssh-auth\n")
INCLUDES_DROPINS = re.compile(r"(?im)^\s*Include\s+\S*sshd_config\.d/\*\.conf\s*$")
TUTORIAL_FORCECOMMAND = re.compile(r"(?im)^\s*ForceCommand\s+\S*tru-id-ssh-auth.*\n?")
