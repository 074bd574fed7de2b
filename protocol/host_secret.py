"""The cluster owner's secret: what a task shows the kernel (in its OP_HELLO) to be given
the privileged host port, host_priv (DESIGN §8a).

It lives in the run directory as ``host_priv.secret``, hex text, mode 0600, made by
whoever makes the run directory (lab.rundir.RunDir) or by the kernel started alone.  Only
the owner's processes can read it; a file that others could read is not trusted.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

SECRET_FILE = "host_priv.secret"
SECRET_BYTES = 32
MAX_SECRET_BYTES = 64  # the longest secret an OP_HELLO may carry


class HostSecretError(Exception):
    """A secret file that must not be trusted (readable by others, malformed)."""


def secret_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / SECRET_FILE


def read_host_secret(run_dir: str | os.PathLike) -> bytes | None:
    """The secret of ``run_dir``, or None if there is none.  HostSecretError if the file
    is not a regular file of mode 0600 (or stricter) or does not hold a secret."""
    path = secret_path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostSecretError(f"{path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise HostSecretError(f"{path}: must be a regular file of mode 0600, "
                                  f"is {stat.filemode(st.st_mode)}")
        text = os.read(fd, 4 * MAX_SECRET_BYTES)
    finally:
        os.close(fd)
    try:
        secret = bytes.fromhex(text.decode("ascii").strip())
    except ValueError:
        raise HostSecretError(f"{path}: not a hex secret") from None
    if not 16 <= len(secret) <= MAX_SECRET_BYTES:
        raise HostSecretError(f"{path}: a secret is 16 to {MAX_SECRET_BYTES} bytes")
    return secret


def make_host_secret(run_dir: str | os.PathLike) -> bytes:
    """The secret of ``run_dir``, made (created exclusively, mode 0600 from the start:
    never readable by others, not even for a moment) if there is none yet."""
    path = secret_path(run_dir)
    secret = read_host_secret(run_dir)
    if secret is not None:
        return secret
    new = secrets.token_bytes(SECRET_BYTES)
    # Written whole to a private temporary file, then linked into place: a reader never
    # sees a partial file, and of two makers racing, the first link wins.
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, new.hex().encode() + b"\n")
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return read_host_secret(run_dir)
    finally:
        os.unlink(tmp)
    return new


def secret_matches(given, expected: bytes | None) -> bool:
    """Whether an OP_HELLO's secret is the owner's (constant-time comparison)."""
    if expected is None or type(given) is not bytes:
        return False
    return hmac.compare_digest(given, expected)
