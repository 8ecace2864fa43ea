"""The bearer token of the loopback HTTP endpoint: ``<data dir>/mcp/http.token``, 0600, created on first use.
(Standard library only: `village mcp token` stays fast.)

Never follows a symlink: the file is opened with ``O_NOFOLLOW`` (and without blocking, so a FIFO planted there
cannot hang a start), and refused unless it is a regular file of this user's, 0600 or tighter, in a directory of
this user's that no one else may write to (someone who could would choose the token)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from node.errors import StartupError
from node.privatefile import LOOSE_MODE, OTHER_OWNER, SYMLINK, PrivateFileRefused, read_private_file

TOKEN_BYTES = 32  # 256 bits of randomness
MAX_TOKEN_FILE_BYTES = 4096


def token_path(data_dir: Path) -> Path:
    return data_dir / "mcp" / "http.token"


def ensure_token(path: Path) -> str:
    """The bearer token in ``path`` (created 0600 with a fresh random token if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_directory(path.parent)
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = _read_token(path)
        if token:
            return token
        fd = os.open(path, flags | os.O_TRUNC)  # an empty file of ours (checked above): fill it
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _check_directory(directory: Path) -> None:
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"{directory} is not a directory (a symbolic link?); the MCP token cannot be kept there")
    if st.st_uid != os.geteuid():
        raise StartupError(f"{directory} belongs to another user (uid {st.st_uid}); the MCP token cannot be kept")
    if st.st_mode & 0o022:
        raise StartupError(f"{directory} is writable by group or others; run: chmod 700 {directory}")


def _read_token(path: Path) -> str:
    try:
        data = read_private_file(path, MAX_TOKEN_FILE_BYTES)
    except PrivateFileRefused as exc:
        advice = {
            SYMLINK: "the MCP token must be a regular file",
            OTHER_OWNER: "it is not this node's MCP token",
            LOOSE_MODE: f"run: chmod 600 {path}",
        }.get(exc.reason)
        raise StartupError(f"{exc}; {advice}" if advice else str(exc)) from None
    except OSError as exc:
        raise StartupError(f"{path} cannot be read: {exc.strerror}") from None
    if data is None:
        raise StartupError(f"{path} disappeared while it was being read")
    return data.decode("utf-8", "replace").strip()
