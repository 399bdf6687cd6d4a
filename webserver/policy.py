"""Login policy as pure functions: exemptions and unregistered users."""

from collections.abc import Iterable


def matches(name_list: Iterable[str], names: Iterable[str]) -> bool:
    """Duo-style list: true if any name is listed and none is negated with '!'."""
    names = set(names)
    negated = {entry[1:] for entry in name_list if entry.startswith("!")}
    listed = {entry for entry in name_list if not entry.startswith("!")}
    return not (names & negated) and bool(names & listed)


def is_exempt(user: str, groups: Iterable[str], exempt_users, exempt_groups) -> bool:
    """An explicit exemption by user name or group (break-glass and service accounts)."""
    if f"!{user}" in exempt_users:
        return False
    return matches(exempt_users, [user]) or matches(exempt_groups, groups)


SFTP_SERVERS = ("sftp-server", "internal-sftp")


def is_sftp_session(command: str | None, tty: bool) -> bool:
    """sftp (and scp in its default SFTP mode): a subsystem whose stderr sshd discards."""
    if tty or not command:
        return False
    return command.split()[0].rsplit("/", 1)[-1] in SFTP_SERVERS
