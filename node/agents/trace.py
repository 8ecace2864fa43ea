"""Traces: every step of a request (routing, plan, tool call, result, denial, answer, hidden thoughts) with
its request id, kept on this node only (``village agents trace ID``). The Auditor agent reads them as the
audit log of agent actions.

A :class:`Trace` collects steps in memory while a request runs (no I/O on the hot path); :class:`TraceStore`
persists finished traces in SQLite (0600), bounded to :data:`MAX_TRACES` of the owner's requests, oldest dropped
first. Requests served to other nodes (``caller`` = the peer ID) are bounded apart: :data:`MAX_REMOTE_TRACES_PER_PEER`
per peer and :data:`MAX_REMOTE_TRACES` in all, so no peer can evict the owner's audit trail (nor much of another
peer's).
Blocking: the service calls it through ``trio.to_thread`` behind one limiter.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_STEPS = 512  # per request; later steps are counted, not kept
MAX_DETAIL_CHARS = 16_000
MAX_TRACES = 10_000  # the owner's own requests
MAX_REMOTE_TRACES_PER_PEER = 50  # requests served to one remote peer
MAX_REMOTE_TRACES = 2_000  # requests served to all remote peers together


@dataclass(frozen=True, slots=True)
class Step:
    seq: int
    agent: str
    kind: str  # route | plan | call | result | error | denied | thought | answer | remote
    tool: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "agent": self.agent, "kind": self.kind, "tool": self.tool, "detail": self.detail}


@dataclass
class Trace:
    request_id: str
    request: str
    started_ms: int
    steps: list[Step] = field(default_factory=list)
    dropped: int = 0
    caller: str = ""  # the remote peer ID this request was served to; "" for the owner's own

    def step(self, agent: str, kind: str, *, tool: str = "", detail: str = "") -> None:
        if len(self.steps) >= MAX_STEPS:
            self.dropped += 1
            return
        self.steps.append(Step(len(self.steps), agent, kind, tool, detail[:MAX_DETAIL_CHARS]))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.request_id,
            "request": self.request,
            "started_ms": self.started_ms,
            "steps": [s.to_json() for s in self.steps],
            "dropped_steps": self.dropped,
            **({"caller": self.caller} if self.caller else {}),
        }


class TraceStore:
    def __init__(
        self,
        path: Path | None,
        *,
        max_traces: int = MAX_TRACES,
        max_remote_per_peer: int = MAX_REMOTE_TRACES_PER_PEER,
        max_remote: int = MAX_REMOTE_TRACES,
    ) -> None:
        self.max_traces = max_traces
        self.max_remote_per_peer = max_remote_per_peer
        self.max_remote = max_remote
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.touch(mode=0o600)
            os.chmod(path, 0o600)
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self.db.executescript(
            """CREATE TABLE IF NOT EXISTS traces (
                 n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, started_ms INTEGER NOT NULL,
                 request TEXT NOT NULL, body TEXT NOT NULL);
               CREATE TABLE IF NOT EXISTS steps (
                 id TEXT NOT NULL, seq INTEGER NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
                 tool TEXT NOT NULL, PRIMARY KEY (id, seq));
               CREATE INDEX IF NOT EXISTS steps_kind ON steps (kind, tool);"""
        )
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(traces)")}
        if "caller" not in columns:  # a store written before remote traces were kept apart
            self.db.execute("ALTER TABLE traces ADD COLUMN caller TEXT NOT NULL DEFAULT ''")
        self.db.execute("CREATE INDEX IF NOT EXISTS traces_caller ON traces (caller, n)")

    def close(self) -> None:
        self.db.close()

    def save(self, trace: Trace) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO traces (id, started_ms, request, body, caller) VALUES (?, ?, ?, ?, ?)",
                (trace.request_id, trace.started_ms, trace.request, json.dumps(trace.to_json()), trace.caller),
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?)",
                [(trace.request_id, s.seq, s.agent, s.kind, s.tool) for s in trace.steps],
            )
            if not trace.caller:
                self._trim("caller = ''", (), self.max_traces)
            else:
                self._trim("caller = ?", (trace.caller,), self.max_remote_per_peer)
                self._trim("caller != ''", (), self.max_remote)

    def _trim(self, where: str, params: tuple[Any, ...], keep: int) -> None:
        """Drop the oldest traces matching ``where`` beyond ``keep`` (inside the caller's transaction)."""
        (n,) = self.db.execute(f"SELECT COUNT(*) FROM traces WHERE {where}", params).fetchone()
        if n > keep:
            q = f"SELECT id FROM traces WHERE {where} ORDER BY n LIMIT ?"
            old = [r[0] for r in self.db.execute(q, (*params, n - keep))]
            self.db.executemany("DELETE FROM traces WHERE id = ?", [(i,) for i in old])
            self.db.executemany("DELETE FROM steps WHERE id = ?", [(i,) for i in old])

    def get(self, request_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT body FROM traces WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id, started_ms, request FROM traces ORDER BY n DESC LIMIT ?", (limit,))
        return [{"id": i, "started_ms": t, "request": r} for i, t, r in rows]

    def audit(self, *, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Tool calls across requests, newest first (``kind``: call, denied, error)."""
        q = "SELECT s.id, s.seq, s.agent, s.kind, s.tool, t.started_ms FROM steps s JOIN traces t ON t.id = s.id"
        q += " WHERE s.kind IN ('call', 'denied', 'error')" if kind is None else " WHERE s.kind = ?"
        q += " ORDER BY t.n DESC, s.seq LIMIT ?"
        params: tuple[Any, ...] = (limit,) if kind is None else (kind, limit)
        return [
            {"request": i, "seq": s, "agent": a, "kind": k, "tool": tool, "at_ms": ms}
            for i, s, a, k, tool, ms in self.db.execute(q, params)
        ]

    def vacuum(self) -> int:
        self.db.execute("VACUUM")
        (n,) = self.db.execute("SELECT COUNT(*) FROM traces").fetchone()
        return int(n)
