"""The outbox: private messages this node accepted for sending, in SQLite (WAL, ``synchronous=FULL``).

A message is written here — and the write is on disk — before ``village send`` returns its ID, so a crash at
any moment after that (``kill -9``, power loss) loses nothing: at start the node queues every ``pending`` row
again. Its state follows the mesh: ``delivered`` on the recipient's end-to-end receipt, ``failed`` with the
reason on expiry. The recipient stores by (sender, message ID), so a message resent after a restart still
lands in its inbox exactly once.

The file is the node's ``state.db`` (beside the inbox). Writes are small and rare (one per message sent or
settled), so they run on the caller's thread; a lock makes the connection safe to share.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.sqlitedb import Database

STATES = ("pending", "delivered", "failed")
FINISHED_KEPT = 1000  # delivered/failed rows kept for `village message` / `village outbox`; older ones go


class OutboxError(NodeError):
    """The outbox could not be written (disk full, database locked or damaged)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: str
    peer: str  # recipient peer ID, hex
    text: str
    state: str
    created_at_ms: int
    updated_at_ms: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "to": self.peer,
            "text": self.text,
            "state": self.state,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "detail": self.detail,
        }


_COLUMNS = "id, peer, text, state, created_at_ms, updated_at_ms, detail"


class Outbox:
    def __init__(self, path: Path | None) -> None:
        """``path`` None keeps the outbox in memory (simulations and tests of other parts)."""
        conn = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
        self.db = Database(conn)
        self._lock = threading.Lock()
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # durable on return, not just after the next checkpoint
        self.db.execute("""
            CREATE TABLE IF NOT EXISTS outbox (
                id TEXT PRIMARY KEY,
                peer TEXT NOT NULL,
                text TEXT NOT NULL,
                state TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL,
                updated_at_ms INTEGER NOT NULL,
                detail TEXT NOT NULL DEFAULT ''
            )""")
        self.db.execute("CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, created_at_ms)")

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def _run(self, sql: str, params: list[Any]) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise OutboxError(f"the outbox could not be written: {exc}") from exc

    def add(self, *, id: str, peer: str, text: str, created_at_ms: int) -> None:
        self._run(
            f"INSERT INTO outbox ({_COLUMNS}) VALUES (?, ?, ?, 'pending', ?, ?, '')",
            [id, peer, text, created_at_ms, created_at_ms],
        )

    def settle(self, id: str, state: str, now_ms: int, detail: str = "") -> None:
        """Mark a pending message delivered or failed (a later settle of the same message is ignored)."""
        if state not in STATES[1:]:
            raise ValueError(f"state must be delivered or failed, not {state!r}")
        cur = self._run(
            "UPDATE outbox SET state = ?, updated_at_ms = ?, detail = ? WHERE id = ? AND state = 'pending'",
            [state, now_ms, detail, id],
        )
        if cur.rowcount:
            self._run(
                "DELETE FROM outbox WHERE state != 'pending' AND id NOT IN "
                "(SELECT id FROM outbox WHERE state != 'pending' ORDER BY updated_at_ms DESC LIMIT ?)",
                [FINISHED_KEPT],
            )

    def get(self, id: str) -> OutboxEntry | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", [id]).fetchall()
        return OutboxEntry(*rows[0]) if rows else None

    def pending(self) -> list[OutboxEntry]:
        rows = self._run(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY created_at_ms, id", []
        ).fetchall()
        return [OutboxEntry(*r) for r in rows]

    def list(self, *, state: str | None = None, limit: int = 50) -> list[OutboxEntry]:
        """The newest ``limit`` messages (of one state, if given), oldest first."""
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self._run(
            f"SELECT {_COLUMNS} FROM outbox {where} ORDER BY created_at_ms DESC, id DESC LIMIT ?", [*params, limit]
        ).fetchall()
        return [OutboxEntry(*r) for r in reversed(rows)]

    def counts(self) -> dict[str, int]:
        rows = self._run("SELECT state, COUNT(*) FROM outbox GROUP BY state", []).fetchall()
        return {state: 0 for state in STATES} | {str(s): int(n) for s, n in rows}
