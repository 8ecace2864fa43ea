"""Identity pins on disk: the ``pins`` table of the node's ``state.db`` (see :mod:`node.routing.pins`).

The mesh core keeps pins in memory and reports changes; the node loads the table when it builds the core and
hands the changes to a worker thread, which applies each batch in one transaction (``synchronous=FULL``).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from node.errors import NodeError
from node.routing.pins import Pin, PinChange


class PinFileError(NodeError):
    """The pin table could not be read or written (disk full, database locked or damaged)."""


class PinFile:
    def __init__(self, path: Path | None) -> None:
        """``path`` None keeps the pins in memory (tests and simulations)."""
        self._conn = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        if path is not None:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS pins "
            "(peer BLOB PRIMARY KEY, noise_key BLOB NOT NULL, signing_key BLOB NOT NULL)"
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def load(self) -> tuple[Pin, ...]:
        with self._lock:
            rows = self._conn.execute("SELECT peer, noise_key, signing_key FROM pins ORDER BY rowid").fetchall()
        return tuple(Pin(bytes(p), bytes(n), bytes(s)) for p, n, s in rows)

    def apply(self, changes: list[PinChange]) -> None:
        try:
            with self._lock:
                self._conn.execute("BEGIN")  # one transaction (one fsync) per batch
                try:
                    for ch in changes:
                        if ch.pin is None:
                            self._conn.execute("DELETE FROM pins WHERE peer = ?", [ch.peer_id])
                        else:
                            self._conn.execute(
                                "INSERT OR REPLACE INTO pins (peer, noise_key, signing_key) VALUES (?, ?, ?)",
                                [ch.peer_id, ch.pin.noise_public_key, ch.pin.signing_public_key],
                            )
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise PinFileError(f"identity pins could not be written: {exc}") from exc
