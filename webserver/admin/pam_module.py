"""The one builder of the PAM module (make pam, the installer and the tests all use it): its C
source ships with the package and is compiled with the system's cc against libpam and json-c."""

import os
import shutil
import subprocess
import sys
import tempfile
from importlib.resources import as_file, files

from ..errors import InstallError

CFLAGS = ("-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared")
HARDENING = ("-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-Wl,-z,relro,-z,now")
LIBRARIES = ("-lpam", "-ljson-c")
BUILD_PACKAGES = "gcc libc6-dev libpam0g-dev libjson-c-dev"  # Debian's names


def source() -> bytes:
    """The module's C source, as packaged."""
    return files("webserver.admin").joinpath("data/pam_ssh_auth.c").read_bytes()


def build(output: str) -> None:
    """Compile the module to `output` (mode 0644); InstallError saying what to install if cc fails."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise InstallError(
            f"cannot build the PAM module: no C compiler (apt-get install {BUILD_PACKAGES})"
        )
    with as_file(files("webserver.admin").joinpath("data/pam_ssh_auth.c")) as path:
        with tempfile.TemporaryDirectory(prefix="ssh-auth-pam-") as directory:
            built = os.path.join(directory, "pam_ssh_auth.so")
            result = subprocess.run(
                [compiler, *CFLAGS, *HARDENING, "-o", built, str(path), *LIBRARIES],
                capture_output=True,
                text=True,
            )
            if result.returncode:
                last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
                raise InstallError(
                    f"cannot build the PAM module ({last}): apt-get install {BUILD_PACKAGES}"
                )
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            os.chmod(built, 0o644)
            shutil.move(built, output)


if __name__ == "__main__":
    try:
        build(sys.argv[1])
    except InstallError as error:
        sys.exit(f"ssh-auth: {error}")
