"""sshd's PAM stack run by libpam itself, since no reading of ours can promise to be libpam's."""

import ctypes
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from sshshim.protocol import EVENT_VERDICT, MAX_LINE, OP_PAM_LOGIN, ProtocolError, decode, encode

from .layout import PAM_DIR, PAM_STACK, VENDOR_PAM_DIR
from .pam_files import module_path
from .pam_service import SERVICE
from .pam_stack import MODULE
from .proof import PLAIN_USER, PROBE_ADDRESSES

TIMEOUT = 30  # seconds for one run: the module waits at most 10 s for the service's first line
PAM_TTY, PAM_RHOST, PAM_FAIL_DELAY = 3, 4, 10
PAM_SUCCESS, PAM_CONV_ERR = 0, 19
PROMPTS = (1, 2)  # PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON
OURS = f"(?<![^ \\t])(?:\\S*/)?{re.escape(MODULE)}(?![^ \\t])"
SOCKET_ARGUMENT = re.compile(r"(?<![^ \t])socket=\S*")
RELATIVE_INCLUDE = re.compile(r"(?im)^([ \t]*@include[ \t]+)(?=[^/ \t\n#])")
COPY = f"libpam, running a copy of /{PAM_STACK},"
OTHERS_DECIDE = "something other than ssh-auth's module decides"


def stack_proof(root: Path) -> str | None:
    """Why libpam, running a copy of the root's stack, would not leave the login to ssh-auth's
    service (None: deny kept the login out, allow let it in, and the service was asked both times)."""
    directory = tempfile.mkdtemp(prefix="ssh-auth-pam-")
    try:
        with _Service(f"{directory}/proof.sock") as service:
            confdir = f"{directory}/pam.d"
            _copy(root, confdir, service.path)
            for allow in (False, True):
                service.allow, asked = allow, service.asked
                refusal = _judge(allow, *_authenticate(confdir), service.asked > asked)
                if refusal:
                    return refusal
        return None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _judge(allow: bool, started: bool, code: int | None, said: str, asked: bool) -> str | None:
    if code is None:
        return f"{COPY} {said}"
    if not started:
        return f"{COPY} could not start ({said})"
    if not allow and code == PAM_SUCCESS:
        return f"{COPY} let a login in with ssh-auth's service answering deny: {OTHERS_DECIDE}"
    if not asked:
        return f"{COPY} never asked ssh-auth's service: {OTHERS_DECIDE}"
    if allow and code != PAM_SUCCESS:
        return f"{COPY} kept out a login with ssh-auth's service answering allow ({said})"
    return None


def _copy(root: Path, confdir: str, socket_path: str) -> None:
    """The root's PAM files in confdir, the vendor's first and /etc's over them (as libpam looks).
    Debian's `@include` reads /etc/pam.d whatever confdir says: relative ones go to the copies."""
    Path(confdir).mkdir(mode=0o700)
    for directory in (VENDOR_PAM_DIR, PAM_DIR):
        for path in sorted((root / directory).glob("*")):
            if path.is_file():
                text = path.read_bytes().decode(errors="surrogateescape")
                text = RELATIVE_INCLUDE.sub(lambda m: f"{m[1]}{confdir}/", text)
                text = "\n".join(_pointed(root, line, socket_path) for line in text.split("\n"))
                Path(confdir, path.name).write_bytes(text.encode(errors="surrogateescape"))


def _pointed(root: Path, line: str, socket_path: str) -> str:
    """A line naming ssh-auth's module with the module where the root has it and the proof's
    socket first among its arguments (the module takes the last socket=, so others go)."""
    code, mark, comment = line.partition("#")
    found = re.search(OURS, code)
    if not found:
        return line
    relative = module_path(root, found[0])
    module = str(root / relative) if relative else found[0]
    rest = SOCKET_ARGUMENT.sub("", code[found.end() :])
    return f"{code[: found.start()]}{module} socket={socket_path}{rest}{mark}{comment}"


def _authenticate(confdir: str) -> tuple[bool, int | None, str]:
    """One pam_authenticate through the copy, in a child process, since a module (or libpam, on a
    bare `@include`) may crash and an install must still roll back: (started, libpam's code or
    None if the child failed, what libpam or the child said)."""
    argv = [sys.executable, "-I", "-m", __name__, confdir]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd="/")
    except subprocess.TimeoutExpired:
        return False, None, f"did not finish within {TIMEOUT} s"
    try:  # the last line: a module may have printed something of its own before it
        answer = json.loads((result.stdout.strip().splitlines() or [""])[-1])
        return answer["started"], answer["code"], answer["said"]
    except (ValueError, KeyError, TypeError):
        if result.returncode < 0:
            return False, None, f"crashed (signal {-result.returncode})"
        last = (result.stderr.strip().splitlines() or [""])[-1][:200]
        return False, None, f"failed (exit {result.returncode}: {last})"


class _Service:
    """A stand-in for ssh-auth's service: answers each pam-login with `allow`, and counts them."""

    def __init__(self, path: str):
        self.path, self.allow, self.asked = path, False, 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "_Service":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()
        self.listener.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        connection.settimeout(5)
        try:
            request = decode(connection.makefile("rb").readline(MAX_LINE + 1))
            if request.get("op") != OP_PAM_LOGIN:
                return
            self.asked += 1
            reason = "allowed by the proof" if self.allow else "denied by the proof"
            connection.sendall(encode({"event": EVENT_VERDICT, "allow": self.allow, "reason": reason}))
        except (OSError, ProtocolError):
            return


# --- the child: libpam through ctypes ------------------------------------------------------------


class _Message(ctypes.Structure):
    _fields_ = [("style", ctypes.c_int), ("text", ctypes.c_char_p)]


_CONVERSE = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(ctypes.POINTER(_Message)),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_void_p,
)
_NO_DELAY = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)


class _Conversation(ctypes.Structure):
    _fields_ = [("conv", _CONVERSE), ("appdata", ctypes.c_void_p)]


def child(confdir: str) -> dict:
    """pam_start_confdir + pam_authenticate as sshd would call them, nobody answering prompts."""
    libpam, libc = ctypes.CDLL("libpam.so.0"), ctypes.CDLL(None)
    libc.calloc.restype = ctypes.c_void_p
    libc.calloc.argtypes = (ctypes.c_size_t, ctypes.c_size_t)
    libpam.pam_strerror.restype = ctypes.c_char_p
    libpam.pam_strerror.argtypes = (ctypes.c_void_p, ctypes.c_int)
    libpam.pam_set_item.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)

    def converse(count, messages, responses, _):
        styles = [messages[i].contents.style for i in range(count)]
        if any(style in PROMPTS for style in styles):
            return PAM_CONV_ERR  # a stack that asks for anything else is not ssh-auth's
        responses[0] = libc.calloc(count, 2 * ctypes.sizeof(ctypes.c_void_p))
        return PAM_SUCCESS

    conversation = _Conversation(_CONVERSE(converse), None)
    no_delay = _NO_DELAY(lambda *_: None)  # no pause after a failure (pam_unix asks for 2 s)
    handle = ctypes.c_void_p()
    user, conv = PLAIN_USER.encode(), ctypes.byref(conversation)
    code = libpam.pam_start_confdir(SERVICE.encode(), user, conv, confdir.encode(), ctypes.byref(handle))
    if code != PAM_SUCCESS:
        return {"started": False, "code": code, "said": libpam.pam_strerror(None, code).decode()}
    libpam.pam_set_item(handle, PAM_RHOST, PROBE_ADDRESSES[0].encode())
    libpam.pam_set_item(handle, PAM_TTY, b"ssh")
    libpam.pam_set_item(handle, PAM_FAIL_DELAY, ctypes.cast(no_delay, ctypes.c_void_p))
    code = libpam.pam_authenticate(handle, 0)
    said = libpam.pam_strerror(handle, code).decode()
    libpam.pam_end(handle, code)
    return {"started": True, "code": code, "said": said}


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1])))
