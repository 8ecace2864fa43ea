"""The local audit log of tool calls: one JSON line per call, in ``<data dir>/mcp/audit.jsonl`` (0600).

A record names the time, the transport and client, the tool, whether it changes state, the outcome (ok, or the
error class and message) and the duration. Arguments are not copied into the log (they may be personal: message
texts, memory contents); their SHA-256 and size are, so a record can be matched to a known call. The file is
rotated at ``mcp.audit_max_bytes`` (one old file, ``audit.jsonl.1``, is kept).

Each record is one ``write`` of a short line on a local file, done in place: appending a few hundred bytes costs
microseconds, less than handing it to a thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.mcp.errors import ToolError
    from node.mcp.registry import Caller

log = logging.getLogger("village.mcp.audit")


def args_digest(args: Any) -> tuple[str, int]:
    """(SHA-256 hex, size in bytes) of the arguments' canonical JSON: what audit records keep instead of them."""
    try:
        raw = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    except (TypeError, ValueError):
        raw = repr(args).encode()
    return hashlib.sha256(raw).hexdigest(), len(raw)


class AuditLog:
    def __init__(self, path: Path | None, *, max_bytes: int, wall_ms: Callable[[], int]) -> None:
        """``path`` None: keep the records in memory only (tests, in-process simulations)."""
        self.path = path
        self.max_bytes = max_bytes
        self._wall_ms = wall_ms
        self.records = 0
        self.write_errors = 0
        self.last: dict[str, Any] | None = None
        self._fd: int | None = None
        self._size = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def record(
        self,
        *,
        tool: str,
        caller: Caller,
        changes_state: bool | None,
        args: Any,
        error: ToolError | None,
        duration_s: float,
    ) -> None:
        digest, size = args_digest(args)
        entry: dict[str, Any] = {
            "at_ms": self._wall_ms(),
            "transport": caller.transport,
            "client": caller.client_id,
            "tool": tool,
            "changes_state": changes_state,
            "ok": error is None,
            "args_sha256": digest,
            "args_bytes": size,
            "duration_ms": round(duration_s * 1000.0, 3),
        }
        if caller.session is not None:
            entry["session"] = caller.session[:128]
        if error is not None:
            entry["error"] = type(error).__name__
            entry["message"] = str(error)[:500]
        self.records += 1
        self.last = entry
        if self._fd is None:
            return
        line = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
        try:
            if self._size + len(line) > self.max_bytes:
                self._rotate()
            os.write(self._fd, line)
            self._size += len(line)
        except OSError as exc:  # a full disk must not fail the tool call; count and log it
            self.write_errors += 1
            log.warning("could not write the MCP audit log %s: %s", self.path, exc)

    def _rotate(self) -> None:
        assert self.path is not None
        self.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._open()
