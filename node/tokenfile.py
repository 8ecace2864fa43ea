"""Bearer tokens of the node's loopback HTTP listeners, each a 0600 file in the data dir created on first use: MCP's
``<data dir>/mcp/http.token`` (node/mcp/http.py) and the metrics listener's ``<data dir>/metrics/token``
(node/metrics/service.py). (Standard library only: `village mcp token` and `village metrics token` stay fast.)

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
    """The MCP HTTP endpoint's token."""
    return data_dir / "mcp" / "http.token"


def metrics_token_path(data_dir: Path) -> Path:
    """The metrics listener's token (Prometheus: ``authorization: {credentials_file: <this path>}``)."""
    return data_dir / "metrics" / "token"


def ensure_token(path: Path, what: str = "MCP token") -> str:
    """The bearer token in ``path`` (created 0600 with a fresh random token if missing); ``what`` names it in errors."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_directory(path.parent, what)
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = _read_token(path, what)
        if token:
            return token
        fd = os.open(path, flags | os.O_TRUNC)  # an empty file of ours (checked above): fill it
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


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
        raise StartupError(f"{path} disappeared while it was being read")
    return data.decode("utf-8", "replace").strip()
