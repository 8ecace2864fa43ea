"""The bearer token of the loopback HTTP endpoint: ``<data dir>/mcp/http.token``, 0600, created on first use.
(Standard library only: `village mcp token` stays fast.)"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_BYTES = 32  # 256 bits of randomness


def token_path(data_dir: Path) -> Path:
    return data_dir / "mcp" / "http.token"


def ensure_token(path: Path) -> str:
    """The bearer token in ``path`` (created 0600 with a fresh random token if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
