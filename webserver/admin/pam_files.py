"""Auth-time mode's files under a root: where PAM modules live, our module (built here or given,
and checked before it goes where sshd loads it as root), and which auth lines sshd's PAM stack
really runs once its `@include`s are followed."""

import io
import struct
import sysconfig
import tempfile
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import InstallError
from .layout import PAM, PAM_DIR, PAM_MODULE_DIRS, PAM_STACK, VENDOR_PAM_DIR
from .pam_module import build
from .pam_stack import MODULE, OUR_LINE, libpam_words, render_pam_stack
from .root import Change, FileState, ServerRoot
from .sshd import Sshd
from .system import read

MAX_INCLUDE_DEPTH = 8  # deeper @includes are not followed: each counts as another auth line
TYPES = ("auth", "account", "password", "session")
LIBPAM_LINE = 1023  # libpam reads a line with fgets() into 1024 bytes: the rest is another line
SYMBOL = "pam_sm_authenticate"
UNREADABLE_ADVICE = (
    "(ssh-auth reads the stack as libpam does only without these: make each line whole and "
    "include only files that are there, then install again)"
)


def pam_changes(server: ServerRoot, mode: str, settings, given: str | None) -> list[Change]:
    """Auth-time mode: sshd's PAM stack with our module alone, and the module; in forcecommand
    mode, both given back as they were before."""
    stack, directory = server.state(PAM_STACK), module_dir(server.root)
    if mode != PAM:
        return _given_back(server, stack, directory)
    if stack is None:
        raise InstallError(
            f"{server.path(PAM_STACK)} not found: auth-time mode needs sshd's PAM stack "
            "(is openssh-server installed with PAM?)"
        )
    if directory is None:
        raise InstallError(
            f"no PAM module directory under {server.root} (none of "
            f"{', '.join(dict.fromkeys(PAM_MODULE_DIRS))} holds pam_unix.so): "
            "is libpam-modules installed?"
        )
    target, reference = f"{directory}/{MODULE}", server.read(f"{directory}/pam_unix.so")
    try:
        module = module_bytes(given, reference)
    except InstallError as error:
        # No compiler on a server that got its module with --pam-module: a later install (a new
        # administrator, another setting) keeps the module that is there.
        installed = server.read(target)
        if given is not None or installed is None or module_refusal(installed, reference):
            raise
        server.say(f"note: {error}; kept the installed /{target} (--pam-module FILE replaces it)")
        module = installed
    original = stack.data.decode(errors="surrogateescape")  # every other byte kept as it is
    problem = stack_problem(server.root, original)
    if problem:
        raise InstallError(f"refusing to install --mode pam: {problem} {UNREADABLE_ADVICE}")
    text = render_pam_stack(original, MODULE, settings.socket, settings.ttl)
    return [
        Change(PAM_STACK, text.encode(errors="surrogateescape"), stack.mode),
        Change(target, module, 0o644),
    ]


def _given_back(server: ServerRoot, stack: FileState | None, directory: str | None) -> list[Change]:
    recorded = (server.manifest() or {}).get("files", {})
    changes = []
    if stack is not None and our_module(stack.data.decode(errors="replace")):
        if recorded.get(PAM_STACK) is None:
            raise InstallError(
                f"/{PAM_STACK} runs ssh-auth's module, but the install record has no copy of "
                "it from before: restore it from a backup (the lines ssh-auth commented out "
                "start with '#ssh-auth# ') and install again"
            )
        changes.append(Change.giving_back(PAM_STACK, recorded[PAM_STACK], stack))
    module = f"{directory}/{MODULE}" if directory else None
    if module and module in recorded and server.read(module) is not None:
        changes.append(Change.giving_back(module, recorded[module], server.state(module)))
    return changes


def installed_mode(root: Path) -> str | None:
    """The mode installed under the root: pam if our PAM lines or our stack line are there."""
    if our_module((read(root, PAM_STACK) or b"").decode(errors="replace")):
        return PAM
    return Sshd(root).installed_mode()


def module_dir(root: Path) -> str | None:
    """The PAM module directory under the root (relative): the first that holds pam_unix.so."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    for candidate in PAM_MODULE_DIRS:
        relative = candidate.format(multiarch=multiarch)
        if (root / relative / "pam_unix.so").is_file():
            return relative
    return None


def module_path(root: Path, name: str) -> str | None:
    """Where the module a stack line names is under the root (relative), as libpam finds it."""
    if name.startswith("/"):
        return name.lstrip("/")
    directory = module_dir(root)
    return f"{directory}/{name}" if directory else None


def module_bytes(given: str | None, reference: bytes | None) -> bytes:
    """The module to install: `given` (checked), else built here from the packaged source."""
    if given is None:
        with tempfile.TemporaryDirectory(prefix="ssh-auth-pam-") as directory:
            build(f"{directory}/{MODULE}")
            return Path(f"{directory}/{MODULE}").read_bytes()
    try:
        data = Path(given).read_bytes()
    except OSError as error:
        raise InstallError(f"--pam-module {given}: {error.strerror}") from None
    refusal = module_refusal(data, reference)
    if refusal:
        raise InstallError(f"--pam-module {given}: {refusal}")
    return data


def module_refusal(data: bytes, reference: bytes | None) -> str | None:
    """Why `data` is not a PAM auth module sshd could load here (None: it is one)."""
    exported = elf_exports(data)
    if exported is None:
        return "not an ELF shared object (build it with `make pam`, or leave --pam-module out)"
    if SYMBOL not in exported:
        return f"exports no {SYMBOL}: not a PAM authentication module"
    # Class, byte order and machine, as pam_unix.so has them: a module for another machine
    # would fail to load and deny every login.
    if reference is not None and (data[4:6], data[18:20]) != (reference[4:6], reference[18:20]):
        return "built for another architecture than this server's PAM modules (pam_unix.so)"
    return None


def elf_exports(data: bytes) -> set[str] | None:
    """The functions an ELF shared object defines in its dynamic symbol table, None if not one."""
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.header["e_type"] != "ET_DYN":
            return None
        table = elf.get_section_by_name(".dynsym")
        symbols = table.iter_symbols() if table is not None else ()
        return {
            symbol.name
            for symbol in symbols
            if symbol["st_shndx"] != "SHN_UNDEF"
            and symbol["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")
            and symbol["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC")
        }
    except (ELFError, ValueError, KeyError, IndexError, struct.error):
        return None


def stack_problem(root: Path, text: str, name: str = f"/{PAM_STACK}", depth: int = 0) -> str | None:
    """Where libpam would read a stack file, or a file it includes, otherwise than the functions
    below do, or fail every login on it (None: nowhere)."""
    for number, line in enumerate(text.split("\n"), 1):
        words = libpam_words(line)
        problem = _line_problem(line, words)
        if problem:
            return f"{name} line {number} {problem}"
        included = _included(words) if depth < MAX_INCLUDE_DEPTH else None
        if included is None:
            continue
        target, candidates = included
        found = next((c for c in candidates if (root / c).is_file()), None)
        if found is None:
            shown = ", ".join(f"/{c}" for c in candidates)
            missing = f"includes {target or 'nothing'}, which libpam would not find ({shown})"
            return f"{name} line {number} {missing}"
        problem = stack_problem(root, _text(root, found), f"/{found}", depth + 1)
        if problem:
            return problem
    return None


def _line_problem(line: str, words: list[str]) -> str | None:
    if len(line.encode(errors="surrogateescape")) > LIBPAM_LINE:
        return (
            f"is longer than libpam reads at once ({LIBPAM_LINE} bytes): it would read the rest "
            "as another line"
        )
    if words and words[-1].endswith("\\"):
        return "ends in a backslash, so libpam reads the next line as part of it"
    if words and words[0].lower() != "@include" and words[0].lstrip("-").lower() not in TYPES:
        return f"starts with {words[0]}, which is no PAM type: libpam fails every login"
    return None


def stack_lines(text: str) -> list[str]:
    """A PAM file's lines as libpam reads them (once stack_problem finds nothing in it): comments
    stripped, words split at spaces and tabs only."""
    return [" ".join(words) for words in map(libpam_words, text.split("\n")) if words]


def auth_lines(root: Path, text: str, depth: int = 0) -> list[str]:
    """The auth lines a stack runs, each `@include` followed into the root's /etc/pam.d."""
    found = []
    for line in stack_lines(text):
        words = line.split()
        if words[0].lower() == "@include" and len(words) > 1:
            if depth >= MAX_INCLUDE_DEPTH:
                found.append(line)
                continue
            name = words[1] if words[1].startswith("/") else f"/{PAM_DIR}/{words[1]}"
            included = (read(root, name.lstrip("/")) or b"").decode(errors="replace")
            found += [f"{line}: {inner}" for inner in auth_lines(root, included, depth + 1)]
        elif words[0].lstrip("-").lower() == "auth":
            found.append(line)
    return found


def stack_refusal(root: Path, text: str) -> str | None:
    """Why sshd's PAM stack would not run our module alone (None: it would). Only for a stack
    stack_problem finds nothing in (install and doctor ask it first, with their own advice)."""
    found = auth_lines(root, text)
    if not any(OUR_LINE.match(line) for line in found):
        return f"the PAM stack /{PAM_STACK} has no line for ssh-auth's module"
    others = [line for line in found if not OUR_LINE.match(line)]
    if others:
        return (
            f"the PAM stack /{PAM_STACK} would still run other auth lines, which could let a "
            f"login in without the phone: {'; '.join(others)}"
        )
    return None


def our_module(text: str) -> str | None:
    """The module our line in a stack names (its name in the module directory, or a path)."""
    line = next((line for line in stack_lines(text) if OUR_LINE.match(line)), None)
    return line.split()[2] if line else None


def _included(words: list[str]) -> tuple[str, list[str]] | None:
    """For a line that includes another file: (the name it gives, where libpam looks for it, in
    order, relative to the root); None for any other line."""
    if words and words[0].lower() == "@include":  # Debian's: only ever /etc/pam.d
        name = words[1] if len(words) > 1 else ""
        return name, [name.lstrip("/") if name.startswith("/") else f"{PAM_DIR}/{name}"]
    if len(words) > 1 and words[1].lower() in ("include", "substack"):
        name = words[2] if len(words) > 2 else ""
        if name.startswith("/"):
            return name, [name.lstrip("/")]
        return name, [f"{PAM_DIR}/{name}", f"{VENDOR_PAM_DIR}/{name}"]
    return None


def _text(root: Path, relative: str) -> str:
    return (read(root, relative) or b"").decode(errors="surrogateescape")
