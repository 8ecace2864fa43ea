"""Bearer tokens of the node's loopback HTTP listeners, each a 0600 file in the data dir created on first use: MCP's
``<data dir>/mcp/http.token`` (node/mcp/http.py) and the metrics listener's ``<data dir>/metrics/token``
(node/metrics/service.py). (Standard library only: `village mcp token` and `village metrics token` stay fast.)

Never follows a symlink: the file is opened with ``O_NOFOLLOW`` (and without blocking, so a FIFO planted there
cannot hang a start), and refused unless it is a regular file of this user's, 0600 or tighter, in a directory of
this user's that no one else may write to (someone who could would choose the token)."""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from pathlib import Path

from node.errors import StartupError
from node.privatefile import (
    LOOSE_MODE,
    OTHER_OWNER,
    SYMLINK,
    PrivateFileRefused,
    read_private_file,
    remove_stale_temporaries,
    write_private_file_atomically,
)

TOKEN_BYTES = 32  # 256 bits of randomness
MAX_TOKEN_FILE_BYTES = 4096


def token_path(data_dir: Path) -> Path:
    """The MCP HTTP endpoint's token."""
    return data_dir / "mcp" / "http.token"


def metrics_token_path(data_dir: Path) -> Path:
    """The metrics listener's token (Prometheus: ``authorization: {credentials_file: <this path>}``)."""
    return data_dir / "metrics" / "token"


def ensure_token(path: Path, what: str = "MCP token") -> str:
    """The bearer token in ``path`` (created 0600 with a fresh random token if missing); ``what`` names it in errors.

    The whole load-or-create runs under an exclusive ``flock`` on ``.<name>.lock`` beside the token, and a new token
    is written to a temporary file renamed into place (:func:`node.privatefile.write_private_file_atomically`), the
    scheme of the anchor's JWT secret: two first starts at once (the daemon and ``village mcp token``, say) agree
    on one token, and no reader ever sees a partial file. An **empty** token file (what an interrupted start of an
    older version left) authorised nothing and is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_directory(path.parent, what)
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartupError(f"{lock_path} cannot be opened: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StartupError(f"{lock_path} cannot be locked: {exc.strerror}") from None
        remove_stale_temporaries(path)  # left by a start that died mid-write (none is writing now)
        token = _read_token(path, what)
        if token:
            return token
        token = secrets.token_urlsafe(TOKEN_BYTES)
        try:
            write_private_file_atomically(path, (token + "\n").encode())
        except OSError as exc:
            raise StartupError(f"{path} cannot be created: {exc.strerror}") from None
        return token
    finally:
        os.close(lock_fd)  # releases the lock


def _check_directory(directory: Path, what: str) -> None:
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"{directory} is not a directory (a symbolic link?); the {what} cannot be kept there")
    if st.st_uid != os.geteuid():
        raise StartupError(f"{directory} belongs to another user (uid {st.st_uid}); the {what} cannot be kept")
    if st.st_mode & 0o022:
        raise StartupError(f"{directory} is writable by group or others; run: chmod 700 {directory}")


def _read_token(path: Path, what: str) -> str:
    try:
        data = read_private_file(path, MAX_TOKEN_FILE_BYTES)
    except PrivateFileRefused as exc:
        advice = {
            SYMLINK: f"the {what} must be a regular file",
            OTHER_OWNER: f"it is not this node's {what}",
            LOOSE_MODE: f"run: chmod 600 {path}",
        }.get(exc.reason)
        raise StartupError(f"{exc}; {advice}" if advice else str(exc)) from None
    except OSError as exc:
        raise StartupError(f"{path} cannot be read: {exc.strerror}") from None
    if data is None:
        return ""  # not there yet: the caller (holding the lock) creates it
    return data.decode("utf-8", "replace").strip()
