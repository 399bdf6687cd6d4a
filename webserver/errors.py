"""The project's own errors, and the exit codes the commands end with.

Each error is one sentence for the person at the terminal, never a traceback. Anything else that
escapes a command is a bug, and the command says so.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """How a command ended."""

    OK = 0
    FAILED = 1  # it looked and refused, or failed: a refused install, a ✗ from doctor, a denial
    CANNOT = 2  # it could not do what was asked: bad input, a file it cannot read or write
    BUG = 70  # something the code did not expect (sysexits' EX_SOFTWARE)


class SshAuthError(Exception):
    """A problem the user can fix; str() says what, and how."""

    exit_code = ExitCode.FAILED


class InstallError(SshAuthError):
    """The install or uninstall cannot go ahead; the message says why and what to do."""
