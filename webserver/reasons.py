"""Every line a user can be shown, in one place: the terminal's verdicts and the network's errors."""

APPROVED = "approved on your phone."
EXEMPT = "this account is exempt from the phone check."
ALLOW_ONCE = "an administrator exempted this account from the phone check until {until}."
UNREGISTERED_ALLOWED = "no phone is registered for this account; let in by policy."
REUSED = "approved earlier on this SSH connection."
FAILSAFE = "the phone check service is unreachable; let in by failmode = safe."
NOT_VERIFIED = "the phone check service is unreachable; nothing was verified."
NO_MATCH = "No match: the phone that answered is not using the registered SIM. Access denied."
EXPIRED = "the phone check expired before it was completed. Access denied."
DENIED_ON_PHONE = "the login was denied on the phone. Access denied."
WRONG_PICK = "the wrong number was picked on the phone. Access denied."
ABANDONED = "the login was abandoned (the SSH session went away)."
SFTP_NEEDS_MASTER = (
    "sftp and scp (in SFTP mode) cannot show the phone check: sshd discards their messages. "
    "Approve an ssh ControlMaster connection first and run them over it, or use scp -O. "
    "Access denied."
)
UNREGISTERED = "no phone is registered for this account; ask your administrator. Access denied."
BAD_REGISTRATION = (
    "the phone number registered for this account is not valid; ask your administrator. Access denied."
)
NO_REGISTRY = "the ssh-auth service cannot read its user registry. Access denied."
API_DOWN = "the phone check service cannot be reached right now. Access denied."
API_REFUSED = "the phone check could not be started ({detail}). Access denied."
API_BUSY = "the phone check service is busy; try again in {seconds} s. Access denied."
PATCH_FAILED = "the phone check could not be completed ({detail}). Access denied."
COMPLETED_ELSEWHERE = "the phone check was completed outside this service. Access denied."
MALFORMED = "the login request was malformed. Access denied."
COMMAND_TOO_LONG = (
    "the command is too long to show on the phone ({length} characters; at most {limit}). Access denied."
)
NOT_SSH = "this request does not come from an SSH login. Access denied."
ADDRESS_CHANGED = "the client address does not match this SSH connection. Access denied."
UNKNOWN_UID = "this account is not in the password database. Access denied."
TOO_MANY_WAITING = "too many logins are waiting at once. Access denied."
TOO_MANY_ATTEMPTS = "too many attempts; try again in {seconds} s. Access denied."
TOO_MANY_CHECKS = "too many phone checks are being started; try again in {seconds} s. Access denied."
NO_PUBLIC_URL = "the ssh-auth service has no public URL for the phone. Access denied."
ROOT_KEY_ONLY = (
    "sshd lets root in only with a key (PermitRootLogin), so the phone cannot approve root here. "
    "Access denied."
)
RETRY_ON_CONNECTION = (
    "the client retried on a connection that already had its answer; reconnect to try again. "
    "Access denied."
)
INTERNAL = "internal error in the ssh-auth service. Access denied."
# Fleet mode: what an agent says when its hub cannot decide. None of these ever lets anyone in.
HUB_UNREACHABLE = "the ssh-auth hub cannot be reached. Access denied."
HUB_DATABASE_DOWN = "the ssh-auth hub cannot reach its database. Access denied."
HUB_REFUSED_HOST = (
    "the ssh-auth hub does not accept this server (not enrolled, or revoked). Access denied."
)
HUB_CLOCK = "this server's clock and the ssh-auth hub's differ by more than 5 minutes. Access denied."
HUB_BUSY = (
    "the ssh-auth hub is refusing this server's requests for now (over its limits). Access denied."
)
HUB_NO_ANSWER = "the ssh-auth hub gave no verdict in time. Access denied."
HOST_REVOKED = "this server was revoked from the fleet. Access denied."
VERIFY_ON_HUB = "phone numbers are registered on the fleet's hub, not on its hosts. Access denied."

# The mobile network's error codes, each with a fixed line: the network's own free text is never
# shown (a forged redirect could otherwise write into the victim's terminal).
NETWORK_ERRORS = {
    "not_mobile_ip": (
        "the phone was not on mobile data. Turn off Wi-Fi on the phone and try again. Access denied."
    ),
    "ip_msisdn_mismatch": (
        "the phone's mobile data is not the registered number's SIM. Use the phone with the "
        "registered SIM, with Wi-Fi off. Access denied."
    ),
    "mno_not_supported": (
        "the mobile network of the registered number does not support SIM checks; ask your "
        "administrator. Access denied."
    ),
}
NETWORK_OTHER = (
    "the mobile network could not confirm the SIM. Turn off Wi-Fi on the phone and try again. "
    "Access denied."
)


def network_error(code: str | None) -> str:
    """The fixed line for a mobile network error code (unknown codes share one line)."""
    return NETWORK_ERRORS.get(code or "", NETWORK_OTHER)


# What the phone's page says for each network error: fixed text, never the network's own words.
NETWORK_PAGES = {
    "not_mobile_ip": "The phone was not on mobile data.",
    "ip_msisdn_mismatch": "This phone's mobile data is not the registered number's SIM.",
    "mno_not_supported": "The registered number's mobile network does not support this check.",
}
NETWORK_PAGE_OTHER = "The mobile network could not confirm this phone's SIM."


def network_page(code: str | None) -> str:
    """What the phone's page says for a network error code (unknown codes share one sentence)."""
    return NETWORK_PAGES.get(code or "", NETWORK_PAGE_OTHER)


# What the phone's page says when a redirect is refused: one fixed sentence per reason, never
# text from the request (a crafted link would otherwise put its words on our domain).
SIGNATURE_REFUSALS = {
    "missing": "the redirect carries no signature",
    "damaged": "the signed redirect was damaged in transit",
    "malformed": "the signed redirect is malformed",
    "duplicate": "a parameter appears more than once",
    "algorithm": "the redirect is not signed with rsa-sha256",
    "headers": "the signature does not cover what it must",
    "unknown_key": "the API publishes no key by that name",
    "bad_signature": "the redirect's signature is not valid",
    "stale_date": "the redirect's signed date is more than 300 s from now",
    "wrong_url": "the redirect was signed for another webhook",
    "mismatch": "check_id or code differ from what the API signed",
    "jwks_unavailable": "the API's signing keys could not be fetched",
    "not_this_login": "the redirect was not made for this login",
}
