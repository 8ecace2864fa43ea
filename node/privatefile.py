"""Reading a private file (a key, a token, a secret) the one safe way: standard library only, so the CLI stays fast.

The file is opened without following a symlink (``O_NOFOLLOW``) and without blocking (a FIFO planted there cannot
hang a start), and every check is made on the opened descriptor (``fstat``), so the file checked is the file read.
It is refused unless it is a regular file of this user's that neither group nor others may read or write.
Callers turn :class:`PrivateFileRefused` into their own error with the advice that fits them.
"""

from __future__ import annotations

import errno
import os
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
