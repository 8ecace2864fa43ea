"""Reading a private file (a key, a token, a secret) the one safe way: standard library only, so the CLI stays fast.

The file is opened without following a symlink (``O_NOFOLLOW``) and without blocking (a FIFO planted there cannot
hang a start), and every check is made on the opened descriptor (``fstat``), so the file checked is the file read.
It is refused unless it is a regular file of this user's that neither group nor others may read or write.
Callers turn :class:`PrivateFileRefused` into their own error with the advice that fits them.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path


class PrivateFileRefused(Exception):
    """The file is there but must not be used; ``reason`` is one of the constants below, ``str()`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


SYMLINK = "symlink"
NOT_REGULAR = "not-regular"
OTHER_OWNER = "other-owner"
LOOSE_MODE = "loose-mode"


def read_private_file(path: Path, max_bytes: int) -> bytes | None:
    """At most ``max_bytes`` of ``path``; None if it does not exist. :class:`PrivateFileRefused` for a symlink,
    anything but a regular file, another user's file, or one group or others may read or write; OSError when it
    cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PrivateFileRefused(SYMLINK, f"{path} is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileRefused(NOT_REGULAR, f"{path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise PrivateFileRefused(OTHER_OWNER, f"{path} belongs to another user (uid {st.st_uid})")
        if st.st_mode & 0o077:
            raise PrivateFileRefused(
                LOOSE_MODE,
                f"{path} can be read or written by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            )
        return f.read(max_bytes)


def write_private_file_atomically(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` (0600) so a reader sees either no file or the whole of it, never a partial one.

    Writes a fresh temporary file (``.<name>.<random>.tmp``, O_EXCL|O_NOFOLLOW, 0600) in the same directory,
    fsyncs it, renames it into place (``os.replace``: no hard links, which Android's SELinux denies) and fsyncs the
    directory. The temporary file is removed if anything fails. The caller serialises creators (an ``flock``): a
    rename replaces whatever another creator put there. OSError on failure."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the new name survives a power cut
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files :func:`write_private_file_atomically` left for ``path`` when a process died
    mid-write. Call it only while holding the lock that serialises the creators (none is writing then)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
