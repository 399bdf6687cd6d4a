"""The project's own errors: each is one sentence for the user, never a traceback."""


class SshAuthError(Exception):
    """A problem the user can fix; str() says what and how."""


class InstallError(SshAuthError):
    """The install or uninstall cannot go ahead; the message says why and what to do."""
