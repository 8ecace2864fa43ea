"""Received messages, kept in SQLite (``<data dir>/state.db``, WAL) so the inbox survives restarts.

Each row is unique by (sender, message ID): a retransmitted private message is stored once. The table is
pruned to ``mesh.inbox_max_messages`` rows (oldest first). Writes are single small statements on a local
file, done inline on the event loop.

Durable receipt (issue 13): the database runs with ``synchronous=FULL``, so a row is on disk when :meth:`Inbox.add`
returns; the node lets a private message's delivery ack (and a mailbox ack) leave only after that. A failed insert
(disk full, I/O error) raises :class:`InboxError` instead of a bare ``sqlite3`` error.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.sqlitedb import Database

SCHEMA_VERSION = 1
PRUNE_EVERY = 100  # inserts between prune passes


class InboxError(NodeError):
    """A message could not be stored (the disk is full, or failing)."""


@dataclass(frozen=True, slots=True)
class InboxMessage:
    seq: int
    id: str
    sender: str  # peer ID hex
    nickname: str
    text: str
    private: bool
    received_at_ms: int
    sent_at_ms: int
    hops: int

    def to_json(self) -> dict[str, Any]:
        """The answer's shape (``inbox.list``, the ``inbox.message`` notification, the MCP tool ``inbox_list``,
        whose outputSchema node.mcp.outputs derives from this record and :data:`JSON_NAMES`)."""
        return {JSON_NAMES.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}


# The answer's names where they differ from the record's (the record cannot call a field ``from``).
JSON_NAMES = {"sender": "from"}


class Inbox:
    def __init__(self, path: Path | None, *, max_messages: int) -> None:
        """``path`` None keeps the inbox in memory (simulations)."""
        conn = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self.db = Database(conn)
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut
        self.max_messages = max_messages
        self._inserts = 0
        self.db.execute("""
            CREATE TABLE IF NOT EXISTS inbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL,
                sender TEXT NOT NULL,
                nickname TEXT NOT NULL,
                text TEXT NOT NULL,
                private INTEGER NOT NULL,
                received_at_ms INTEGER NOT NULL,
                sent_at_ms INTEGER NOT NULL,
                hops INTEGER NOT NULL,
                UNIQUE (sender, id)
            )""")
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.conn.close()

    def add(
        self,
        *,
        id: str,
        sender: str,
        nickname: str,
        text: str,
        private: bool,
        received_at_ms: int,
        sent_at_ms: int,
        hops: int,
    ) -> InboxMessage | None:
        """Store a message; returns it, or None if (sender, id) is already there."""
        try:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO inbox (id, sender, nickname, text, private, received_at_ms, sent_at_ms, hops)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [id, sender, nickname, text, int(private), received_at_ms, sent_at_ms, hops],
            )
        except sqlite3.Error as exc:
            raise InboxError(f"could not store message {id!r} from {sender}: {exc}") from exc
        if cur.rowcount == 0:
            return None
        seq = int(cur.lastrowid or 0)
        self._inserts += 1
        if self._inserts % PRUNE_EVERY == 0:
            with contextlib.suppress(sqlite3.Error):  # the row is stored; pruning is retried PRUNE_EVERY inserts later
                self.prune()
        return InboxMessage(seq, id, sender, nickname, text, private, received_at_ms, sent_at_ms, hops)

    def prune(self) -> None:
        self.db.execute("DELETE FROM inbox WHERE seq <= (SELECT MAX(seq) FROM inbox) - ?", [self.max_messages])

    def list(self, *, limit: int = 50, after_seq: int = 0) -> list[InboxMessage]:
        """The newest ``limit`` messages with seq > ``after_seq``, oldest first."""
        rows = self.db.execute(
            "SELECT seq, id, sender, nickname, text, private, received_at_ms, sent_at_ms, hops FROM inbox"
            " WHERE seq > ? ORDER BY seq DESC LIMIT ?",
            [after_seq, limit],
        ).fetchall()
        return [InboxMessage(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8]) for r in reversed(rows)]

    def count(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM inbox").fetchone()
        return int(row[0])
