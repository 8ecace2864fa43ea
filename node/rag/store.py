"""The knowledge base's SQLite file (``<data dir>/rag/rag.sqlite3``): the source of truth.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`; :func:`migrate` brings older files forward)::

    documents(id INTEGER PRIMARY KEY, source TEXT      -- path or URI
              content_hash TEXT                         -- sha256 hex of the extracted text
              origin_peer TEXT NULL                     -- hex peer ID, NULL for local documents
              added_at REAL, shared INTEGER 0/1, title TEXT, mime TEXT, size_bytes INTEGER, n_chunks INTEGER)
    chunks(id INTEGER PRIMARY KEY, doc_id INTEGER REFERENCES documents(id), ordinal INTEGER, text TEXT,
           start_char INTEGER, end_char INTEGER,
           embedding BLOB NULL)                         -- float32 little-endian, L2-normalised; NULL in BM25-only
    chunks_fts                                          -- FTS5 over chunks.text (porter stemming, unicode61),
                                                        -- external content kept in step by triggers
    shared_fts                                          -- v2: FTS5 over the chunks of shared documents only
    rag_meta(key TEXT PRIMARY KEY, value TEXT)          -- e.g. the embedding model id

Other modules add their own tables through the same connection (``node.rag.graph``: entities, mentions,
relations keyed by chunk id; ``node.rag.trust``: sources and opinions). A document and all its chunks are
written in one transaction (:meth:`Store.transaction`), so a kill at any moment leaves either the whole
document or none of it. The hnswlib file beside this database is only a cache of ``chunks.embedding`` and is
rebuilt from it (``node.rag.index``).

The connection is opened with ``check_same_thread=False``: the service runs every call in a worker thread
behind a ``CapacityLimiter(1)``, so one thread at a time uses it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.rag.errors import DocumentNotFound, RagStoreError
from node.sqlitedb import Database

SCHEMA_VERSION = 2
INDEX_STALE_KEY = "index_stale"  # rag_meta: "1" when the hnswlib file cannot be trusted by id (rebuild it)
CHUNK_SEQ_KEY = "chunk_id_seq"  # rag_meta: the highest chunk id ever given (ids are never reused)
DB_NAME = "rag.sqlite3"


@dataclass(frozen=True, slots=True)
class Document:
    id: int
    source: str
    content_hash: str
    origin_peer: str | None
    added_at: float
    shared: bool
    title: str
    mime: str
    size_bytes: int
    n_chunks: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "content_hash": self.content_hash,
            "origin_peer": self.origin_peer,
            "added_at": self.added_at,
            "shared": self.shared,
            "title": self.title,
            "mime": self.mime,
            "size_bytes": self.size_bytes,
            "n_chunks": self.n_chunks,
        }


@dataclass(frozen=True, slots=True)
class NewChunk:
    ordinal: int
    text: str
    start_char: int
    end_char: int
    embedding: bytes | None  # float32 bytes, or None in BM25-only mode


@dataclass(frozen=True, slots=True)
class ChunkRow:
    id: int
    doc_id: int
    ordinal: int
    text: str
    source: str
    title: str
    origin_peer: str | None
    shared: bool


_DOC_COLUMNS = "id, source, content_hash, origin_peer, added_at, shared, title, mime, size_bytes, n_chunks"

_SCHEMA_V1 = [
    """CREATE TABLE IF NOT EXISTS documents (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        origin_peer TEXT NULL,
        added_at REAL NOT NULL,
        shared INTEGER NOT NULL DEFAULT 0,
        title TEXT NOT NULL DEFAULT '',
        mime TEXT NOT NULL DEFAULT '',
        size_bytes INTEGER NOT NULL DEFAULT 0,
        n_chunks INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS documents_source ON documents(source, ifnull(origin_peer, ''))",
    "CREATE INDEX IF NOT EXISTS documents_hash ON documents(content_hash)",
    """CREATE TABLE IF NOT EXISTS chunks (
        id INTEGER PRIMARY KEY,
        doc_id INTEGER NOT NULL REFERENCES documents(id),
        ordinal INTEGER NOT NULL,
        text TEXT NOT NULL,
        start_char INTEGER NOT NULL DEFAULT 0,
        end_char INTEGER NOT NULL DEFAULT 0,
        embedding BLOB NULL
    )""",
    "CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id)",
    """CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
        text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_au AFTER UPDATE OF text ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    "CREATE TABLE IF NOT EXISTS rag_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]

# v2: shared_fts indexes the chunks of shared documents only, kept by triggers in the same transaction as the
# writes. A peer's (shared-only) BM25 query runs against it, so its statistics (IDF, average length) and its
# candidate list never depend on unshared content.
_SCHEMA_V2 = [
    # contentless (content=''): only rowids and statistics are read back, and a 'rebuild' (which would index every
    # chunk, shared or not) is impossible.
    """CREATE VIRTUAL TABLE IF NOT EXISTS shared_fts USING fts5(
        text, content='', tokenize='porter unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER IF NOT EXISTS chunks_shared_ai AFTER INSERT ON chunks
        WHEN (SELECT shared FROM documents WHERE id = new.doc_id) = 1 BEGIN
        INSERT INTO shared_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_shared_ad AFTER DELETE ON chunks
        WHEN (SELECT shared FROM documents WHERE id = old.doc_id) = 1 BEGIN
        INSERT INTO shared_fts(shared_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_shared_au AFTER UPDATE OF text ON chunks
        WHEN (SELECT shared FROM documents WHERE id = new.doc_id) = 1 BEGIN
        INSERT INTO shared_fts(shared_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO shared_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS documents_share AFTER UPDATE OF shared ON documents
        WHEN old.shared = 0 AND new.shared = 1 BEGIN
        INSERT INTO shared_fts(rowid, text) SELECT id, text FROM chunks WHERE doc_id = new.id;
    END""",
    """CREATE TRIGGER IF NOT EXISTS documents_unshare AFTER UPDATE OF shared ON documents
        WHEN old.shared = 1 AND new.shared = 0 BEGIN
        INSERT INTO shared_fts(shared_fts, rowid, text) SELECT 'delete', id, text FROM chunks WHERE doc_id = new.id;
    END""",
    """INSERT INTO shared_fts(rowid, text)
        SELECT c.id, c.text FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.shared = 1""",
]

# Words too common to help a BM25 query (they only slow the OR query down). Written for this module.
_STOPWORDS_TEXT = """a about above after again against all am an and any are as at be because been before being
    below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_TOKEN = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str, *, max_terms: int = 64) -> str:
    """An FTS5 MATCH expression: the text's distinct non-stopword tokens, each quoted, joined by OR."""
    seen: dict[str, None] = {}
    for tok in _TOKEN.findall(text.lower()):
        if tok not in STOPWORDS and tok not in seen:
            seen[tok] = None
            if len(seen) >= max_terms:
                break
    return " OR ".join(f'"{t}"' for t in seen)


def migrate(conn: sqlite3.Connection) -> None:
    """Create or upgrade the schema to :data:`SCHEMA_VERSION`."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RagStoreError(f"rag store schema version {version} is newer than this program ({SCHEMA_VERSION})")
    if version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version < 1:
                for stmt in _SCHEMA_V1:
                    conn.execute(stmt)
            if version < 2:
                for stmt in _SCHEMA_V2:
                    conn.execute(stmt)
            if version == 1:
                # v1 reused the ids of deleted chunks, so its hnswlib file may hold another text's vector under a
                # live id: the service rebuilds the index once from SQLite.
                conn.execute("INSERT OR REPLACE INTO rag_meta(key, value) VALUES (?, '1')", (INDEX_STALE_KEY,))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class Store:
    """The SQLite side of the knowledge base. Blocking; the service calls it from one worker thread at a time."""

    def __init__(self, path: Path | None) -> None:
        """``path`` None keeps everything in memory (tests)."""
        try:
            conn = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
            if path is not None:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
        except sqlite3.Error as exc:
            raise RagStoreError(f"cannot open the rag store {path}: {exc}") from exc
        self.conn = conn
        self.db = Database(conn)
        self.path = path

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT, ROLLBACK on any error)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM rag_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO rag_meta(key, value) VALUES (?, ?)", (key, value))

    # -- documents

    @staticmethod
    def _doc(row: Sequence[Any]) -> Document:
        return Document(
            id=row[0],
            source=row[1],
            content_hash=row[2],
            origin_peer=row[3],
            added_at=row[4],
            shared=bool(row[5]),
            title=row[6],
            mime=row[7],
            size_bytes=row[8],
            n_chunks=row[9],
        )

    def document(self, doc_id: int) -> Document:
        row = self.conn.execute(f"SELECT {_DOC_COLUMNS} FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            raise DocumentNotFound(f"no document with id {doc_id}")
        return self._doc(row)

    def document_by_source(self, source: str, origin_peer: str | None = None) -> Document | None:
        row = self.conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE source = ? AND ifnull(origin_peer, '') = ?",
            (source, origin_peer or ""),
        ).fetchone()
        return None if row is None else self._doc(row)

    def document_by_hash(self, content_hash: str, origin_peer: str | None = None) -> Document | None:
        row = self.conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE content_hash = ? AND ifnull(origin_peer, '') = ? "
            "ORDER BY id LIMIT 1",
            (content_hash, origin_peer or ""),
        ).fetchone()
        return None if row is None else self._doc(row)

    def documents(self, *, limit: int = 1000, offset: int = 0) -> list[Document]:
        rows = self.conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        return [self._doc(r) for r in rows]

    def chunk_ids(self, doc_id: int) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ? ORDER BY id", (doc_id,))]

    def insert_document(
        self,
        conn: sqlite3.Connection,
        *,
        source: str,
        content_hash: str,
        origin_peer: str | None,
        added_at: float,
        shared: bool,
        title: str,
        mime: str,
        size_bytes: int,
        chunks: Sequence[NewChunk],
    ) -> tuple[int, list[int]]:
        """Insert a document and its chunks inside the caller's :meth:`transaction`; returns (doc id, chunk ids)."""
        cur = conn.execute(
            "INSERT INTO documents(source, content_hash, origin_peer, added_at, shared, title, mime, size_bytes, "
            "n_chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (source, content_hash, origin_peer, added_at, int(shared), title, mime, size_bytes, len(chunks)),
        )
        doc_id = int(cur.lastrowid or 0)
        # Chunk ids are never reused (a deleted chunk's id could otherwise come back for another text while the
        # hnswlib file, reconciled by id, still holds the old vector): the highest id ever given is kept in
        # rag_meta, in the same transaction as the rows.
        row = conn.execute("SELECT max(id) FROM chunks").fetchone()
        last = max(int(self.get_meta(CHUNK_SEQ_KEY) or 0), int(row[0] or 0))
        ids: list[int] = []
        for c in chunks:
            last += 1
            conn.execute(
                "INSERT INTO chunks(id, doc_id, ordinal, text, start_char, end_char, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (last, doc_id, c.ordinal, c.text, c.start_char, c.end_char, c.embedding),
            )
            ids.append(last)
        self.set_meta(CHUNK_SEQ_KEY, str(last))
        return doc_id, ids

    def delete_document(self, conn: sqlite3.Connection, doc_id: int) -> list[int]:
        """Delete a document and its chunks inside the caller's transaction; returns the chunk ids removed."""
        ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        return ids

    def set_shared(self, doc_id: int, shared: bool) -> None:
        with self.transaction() as conn:
            if conn.execute("UPDATE documents SET shared = ? WHERE id = ?", (int(shared), doc_id)).rowcount == 0:
                raise DocumentNotFound(f"no document with id {doc_id}")

    # -- chunks and search

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            "SELECT c.id, c.doc_id, c.ordinal, c.text, d.source, d.title, d.origin_peer, d.shared "
            f"FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})",
            list(ids),
        ).fetchall()
        return {
            r[0]: ChunkRow(
                id=r[0],
                doc_id=r[1],
                ordinal=r[2],
                text=r[3],
                source=r[4],
                title=r[5],
                origin_peer=r[6],
                shared=bool(r[7]),
            )
            for r in rows
        }

    def chunk_docs(self, ids: Sequence[int]) -> dict[int, tuple[int, bool]]:
        """chunk id -> (document id, shared), without the texts (to pick results before reading them)."""
        out: dict[int, tuple[int, bool]] = {}
        for i in range(0, len(ids), 500):
            part = list(ids[i : i + 500])
            marks = ",".join("?" * len(part))
            for r in self.conn.execute(
                f"SELECT c.id, c.doc_id, d.shared FROM chunks c JOIN documents d ON d.id = c.doc_id "
                f"WHERE c.id IN ({marks})",
                part,
            ):
                out[int(r[0])] = (int(r[1]), bool(r[2]))
        return out

    def bm25(self, text: str, limit: int, *, shared_only: bool = False) -> list[tuple[int, float]]:
        """Chunk ids and BM25 scores (higher is better) for the query text, best first. ``shared_only`` searches
        the shared documents' own FTS table: candidates and statistics never depend on unshared content."""
        q = fts_query(text)
        if not q:
            return []
        t = "shared_fts" if shared_only else "chunks_fts"
        rows = self.conn.execute(
            f"SELECT rowid, -bm25({t}) FROM {t} WHERE {t} MATCH ? ORDER BY bm25({t}) LIMIT ?",
            (q, limit),
        ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def embeddings(self, *, after_id: int = 0, batch: int = 2048) -> Iterator[list[tuple[int, bytes]]]:
        """All stored chunk vectors in id order, in batches (for rebuilding the hnswlib index)."""
        last = after_id
        while True:
            rows = self.conn.execute(
                "SELECT id, embedding FROM chunks WHERE embedding IS NOT NULL AND id > ? ORDER BY id LIMIT ?",
                (last, batch),
            ).fetchall()
            if not rows:
                return
            yield [(int(r[0]), bytes(r[1])) for r in rows]
            last = rows[-1][0]

    def shared_embeddings(self, *, batch: int = 2048) -> Iterator[list[tuple[int, bytes]]]:
        """The vectors of shared documents' chunks, in batches (brute-force dense search for peers)."""
        last = 0
        while True:
            rows = self.conn.execute(
                "SELECT c.id, c.embedding FROM chunks c JOIN documents d ON d.id = c.doc_id "
                "WHERE d.shared = 1 AND c.embedding IS NOT NULL AND c.id > ? ORDER BY c.id LIMIT ?",
                (last, batch),
            ).fetchall()
            if not rows:
                return
            yield [(int(r[0]), bytes(r[1])) for r in rows]
            last = rows[-1][0]

    def embedded_ids(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE embedding IS NOT NULL")}

    def embeddings_for(self, ids: Sequence[int]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for i in range(0, len(ids), 500):
            part = list(ids[i : i + 500])
            marks = ",".join("?" * len(part))
            out += [
                (int(r[0]), bytes(r[1]))
                for r in self.conn.execute(
                    f"SELECT id, embedding FROM chunks WHERE embedding IS NOT NULL AND id IN ({marks})", part
                )
            ]
        return out

    def stats(self) -> dict[str, int]:
        one = self.conn.execute(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks), "
            "(SELECT count(*) FROM chunks WHERE embedding IS NOT NULL), "
            "(SELECT count(*) FROM documents WHERE shared = 1), "
            "(SELECT count(*) FROM documents WHERE origin_peer IS NOT NULL), "
            "(SELECT ifnull(sum(size_bytes), 0) FROM documents)"
        ).fetchone()
        return {
            "documents": one[0],
            "chunks": one[1],
            "embedded_chunks": one[2],
            "shared_documents": one[3],
            "remote_documents": one[4],
            "source_bytes": one[5],
        }
