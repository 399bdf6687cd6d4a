"""A login from the PAM module (auth-time mode): its request, the key it names, and its prompt.

sshd runs the module as root inside authentication, before any channel exists, so the prompt is
all the person sees: the service draws all of it (the module only relays), sized for 80x24
because the client's terminal is unknown at that point (docs/architecture.md, auth-time mode).
"""

import base64
import hashlib
import ipaddress
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import SSHCertificate

from sshshim.protocol import HEADER, text_below

from . import qr

PROMPT_COLUMNS, PROMPT_ROWS = 80, 24  # the smallest terminal a person is likely to have
ASCII_ROWS = 200  # an ASCII QR is two characters per module and a row per row: let it scroll
ENTER = "Press Enter once your phone has approved: "
MAX_AUTH_INFO = 16 * 1024  # the module's bound for the first factor's line
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
NO_QR = "(No QR code fits here: open the URL below on the phone.)"


def valid_request(request: dict) -> bool:
    """The module's request line: op, user, rhost and auth_info, all strings, bounded."""
    return (
        isinstance(request.get("user"), str)
        and isinstance(request.get("rhost"), str)
        and isinstance(request.get("auth_info"), str)
        and len(request["auth_info"]) <= MAX_AUTH_INFO
    )


def client_address(rhost: str) -> str | None:
    """The client as sshd gave it in PAM_RHOST: its IP address (or, with UseDNS yes, its name)."""
    try:
        return str(ipaddress.ip_address(rhost))
    except ValueError:
        return rhost.lower() if HOSTNAME.fullmatch(rhost) else None


def key_fingerprint(auth_info: str) -> str | None:
    """The first factor's key from SSH_AUTH_INFO_0 ("publickey TYPE BASE64"), as `ssh-keygen -l`
    shows it (TYPE SHA256:...; a certificate's is its key's), or None when there is none."""
    words = auth_info.split("\n", 1)[0].split(" ")
    if len(words) < 3 or words[0] != "publickey":
        return None
    try:
        identity = serialization.load_ssh_public_identity(f"{words[1]} {words[2]}".encode())
    except (ValueError, UnsupportedAlgorithm):
        return None
    key = identity.public_key() if isinstance(identity, SSHCertificate) else identity
    blob = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    digest = hashlib.sha256(base64.b64decode(blob.split(b" ")[1])).digest()
    return f"{words[1][:64]} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def prompt(short_url: str, number: str | None, style: str) -> str:
    """The whole challenge as one prompt: header, QR, URL, number, and the Enter to press.

    It starts with a newline: the client prefixes "(user@host) " to a prompt's first line.
    """
    below = [*text_below(short_url, number), ENTER]
    if style == "ascii":
        drawing = qr.render(short_url, PROMPT_COLUMNS, ASCII_ROWS, unicode=False)
    else:
        reserved = len(below) + 2  # the header, and the client's "(user@host)" line
        drawing = qr.render(short_url, PROMPT_COLUMNS, PROMPT_ROWS, unicode=True, reserved=reserved)
    return "\n".join(["", HEADER, drawing or NO_QR, *below])
