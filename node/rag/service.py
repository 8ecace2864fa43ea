"""RagService: the knowledge base of one node, as trio sees it.

The Node owns one service and starts :meth:`RagService.run` in its nursery; the store and the dense index open
lazily on the first call (the embedding model loads on the first text that needs a vector). Every blocking call
runs in a worker thread: SQLite and hnswlib behind one ``CapacityLimiter(1)`` (one thread at a time uses the
connection), onnxruntime behind another, so a long ingest and a query interleave document by document.

Query pipeline: the query's FTS5 BM25 hits and its hnswlib nearest chunks (``rag.candidates`` each) are fused
(``node.rag.fusion``: convex combination of z-normalised scores, weights tuned on SciFact training claims, or RRF),
optionally expanded through the knowledge graph (``node.rag.graph.expand``, personalised PageRank), collapsed to
the best chunk per document, and annotated with trust (``node.rag.trust``: the subjective-logic opinion of the
chunk's claim; ``trust`` = its expected probability, plus belief, disbelief and uncertainty).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import trio

from node import malloc
from node.rag import fusion, ingest
from node.rag.embed import DIM, PLAN_WINDOW_CALLS, Embedder, EmbedderSettings, Vectors, from_blob, to_blob
from node.rag.errors import DocumentNotFound, RagError
from node.rag.extract import Extracted
from node.rag.index import DenseIndex, IndexSettings
from node.rag.settings import RagSection
from node.rag.store import DB_NAME, INDEX_STALE_KEY, Store, fts_query

log = logging.getLogger("village.rag")
_HEX = re.compile(r"[0-9a-f]+")

Progress = Callable[[dict[str, Any]], Awaitable[None]]
MAX_FILES_PER_ADD = 1_000_000  # files one rag.add may expand to
MAX_OUTCOMES_REPORTED = 1000  # per-file outcomes returned by one rag.add (the counts cover all)
MAX_QUERY_CHARS = 10_000
MODES = ("hybrid", "bm25", "dense")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    doc_id: int
    source: str
    title: str
    score: float
    snippet: str
    ordinal: int
    origin_peer: str | None
    shared: bool
    trust: float | None = None
    belief: float | None = None
    disbelief: float | None = None
    uncertainty: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.chunk_id,
            "doc_id": self.doc_id,
            "source": self.source,
            "title": self.title,
            "score": round(self.score, 6),
            "trust": self.trust,
            "belief": self.belief,
            "disbelief": self.disbelief,
            "uncertainty": self.uncertainty,
            "snippet": self.snippet,
            "ordinal": self.ordinal,
            "origin_peer": self.origin_peer,
            "shared": self.shared,
        }


@dataclass
class AddSummary:
    files: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    seconds: float = 0.0
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def note(self, o: ingest.Outcome) -> None:
        self.counts[o.status] = self.counts.get(o.status, 0) + 1
        if o.status in (ingest.ADDED, ingest.REPLACED):
            self.chunks += o.chunks
        if len(self.outcomes) < MAX_OUTCOMES_REPORTED:
            self.outcomes.append(o.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            **{
                k: self.counts.get(k, 0)
                for k in ("added", "replaced", "unchanged", "duplicate", "empty", "failed", "shared", "unshared")
            },
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
            "outcomes": self.outcomes,
            "errors": self.errors,
        }


def snippet(text: str, query: str, max_chars: int) -> str:
    """A window of ``text`` around the first query term it contains (whole text if short)."""
    if len(text) <= max_chars:
        return text
    terms = [t.strip('"') for t in fts_query(query).split(" OR ") if t]
    low = text.lower()
    pos = min((p for p in (low.find(t[:6]) for t in terms if len(t) >= 3) if p >= 0), default=0)
    start = max(0, min(pos - max_chars // 4, len(text) - max_chars))
    if start > 0:
        sp = text.find(" ", start)
        start = sp + 1 if 0 <= sp < start + 30 else start
    out = text[start : start + max_chars].rstrip()
    return ("…" if start > 0 else "") + out + ("…" if start + max_chars < len(text) else "")


class RagService:
    def __init__(
        self,
        settings: RagSection,
        root: Path | None,
        *,
        wall_s: Callable[[], float] = time.time,
        embedder: Embedder | None = None,
    ) -> None:
        """``root``: the folder for ``rag.sqlite3`` and ``rag.hnsw`` (None: in memory). ``wall_s``: the wall
        clock in seconds (``documents.added_at``, trust decay)."""
        self.settings = settings
        self.root = root
        self.wall_s = wall_s
        self.embedder = embedder or Embedder(
            EmbedderSettings(
                intra_op_threads=settings.embed_threads,
                batch_size=settings.embed_batch,
                batch_tokens=settings.embed_batch_tokens,
                cache_dir=None if root is None else root / "model",
            )
        )
        self._db = trio.CapacityLimiter(1)
        self._embed_limiter = trio.CapacityLimiter(1)
        self._open_lock = trio.Lock()
        self._store: Store | None = None
        self._index: DenseIndex | None = None
        self._trust: Any = None
        self._graph: Any = None
        self.counters: dict[str, int] = {"queries": 0, "adds": 0, "index_rebuilds": 0, "malloc_trims": 0}

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Owned by the Node's nursery: nothing runs until a call opens the store; closes it on cancellation."""
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        async with self._open_lock:
            if self._store is None:
                return
            # The store is detached inside the DB limiter, so a DB call already running never sees it vanish.
            await trio.to_thread.run_sync(self._close_sync, limiter=self._db)

    def _close_sync(self) -> None:
        store, index = self._store, self._index
        self._store = self._index = None
        if store is None:
            return
        try:
            if index is not None:
                index.save()
        finally:
            store.close()

    async def _open(self) -> Store:
        async with self._open_lock:
            if self._store is None:
                await trio.to_thread.run_sync(self._open_sync, limiter=self._db)
            assert self._store is not None
            return self._store

    def _open_sync(self) -> None:
        db_path = idx_path = None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            db_path, idx_path = self.root / DB_NAME, self.root / "rag.hnsw"
        store = Store(db_path)
        index = DenseIndex(
            idx_path,
            IndexSettings(
                m=self.settings.hnsw_m,
                ef_construction=self.settings.hnsw_ef_construction,
                ef_search=self.settings.hnsw_ef_search,
            ),
        )
        if store.get_meta(INDEX_STALE_KEY):  # a store upgraded from schema v1 (chunk ids were reused)
            n = index.rebuild(store)
            index.save()
            store.set_meta(INDEX_STALE_KEY, "")
            self.counters["index_rebuilds"] += 1
            log.info("rag: rebuilt the dense index from SQLite after the schema upgrade: %d vectors", n)
        elif index.open(store).rebuilt:
            self.counters["index_rebuilds"] += 1
        self._trust = self._make_trust(store)
        self._graph = self._load_graph()
        self._store, self._index = store, index

    def _make_trust(self, store: Store) -> Any:
        from node.rag.trust import TrustStore

        return TrustStore(store.conn, half_life_s=self.settings.trust_half_life_days * 86_400.0)

    @staticmethod
    def _load_graph() -> Any:
        """The knowledge graph (``node.rag.graph``): index_chunks / remove_chunks at ingest, expand at query."""
        from node.rag import graph

        return graph

    async def _run_db(self, fn: Callable[..., Any], *args: Any) -> Any:
        await self._open()
        return await trio.to_thread.run_sync(fn, *args, limiter=self._db)

    async def _embed(self, texts: Sequence[str]) -> Vectors:
        """Embed in windows of :data:`PLAN_WINDOW_CALLS` model calls' worth of texts: each window is planned by
        :meth:`Embedder.plan` (sorted by length, at most ``rag.embed_batch`` texts and ``rag.embed_batch_tokens``
        padded tokens per call) and its calls made by :meth:`Embedder.embed_group`, every plan and every call
        taking the (fair, FIFO) limiter on its own: a query's embedding waits for one step of a large document,
        never for the whole document, and the tokenizer's memory is bounded by a window, not by the document.
        Each text is tokenised twice (its window's plan, its model call); a lone text once."""
        out: Vectors = np.zeros((len(texts), DIM), dtype=np.float32)
        window = max(1, self.settings.embed_batch) * PLAN_WINDOW_CALLS
        for start in range(0, len(texts), window):
            part = list(texts[start : start + window])
            plan = [[0]] if len(part) == 1 else await self._run_model(self._plan, part)
            for idx in plan:
                vecs = await self._run_model(self.embedder.embed_group, [part[i] for i in idx])
                out[[start + i for i in idx]] = vecs
        return out

    def _plan(self, texts: Sequence[str]) -> list[list[int]]:
        s = self.settings
        return self.embedder.plan(texts, batch_size=s.embed_batch, batch_tokens=s.embed_batch_tokens)

    async def _run_model(self, fn: Callable[[Sequence[str]], _T], texts: Sequence[str]) -> _T:
        return await trio.to_thread.run_sync(fn, texts, limiter=self._embed_limiter)

    def embed_from_thread(self, texts: Sequence[str]) -> Vectors:
        """The knowledge base's vectors for a few ``texts``, for another service's code already running in a trio
        worker thread (the twin's engine): the model runs in that thread (its CPU is the caller's) while it holds
        this service's model limiter, so it never runs beside an ingest's model call. Blocks the thread meanwhile."""
        borrower = object()
        trio.from_thread.run(self._embed_limiter.acquire_on_behalf_of, borrower)
        try:
            return self.embedder.embed(texts)
        finally:
            trio.from_thread.run_sync(self._embed_limiter.release_on_behalf_of, borrower)

    @property
    def _uses_vectors(self) -> bool:
        return self.settings.mode != "bm25"

    # ------------------------------------------------------------------ ingest

    async def add(
        self, paths: Sequence[str], *, shared: bool = False, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Ingest files and folders; returns counts per outcome and the first outcomes (see ``ingest``)."""
        await self._open()
        start = trio.current_time()
        summary = AddSummary()
        files, errors = await trio.to_thread.run_sync(
            lambda: ingest.walk([Path(p).expanduser() for p in paths], max_files=MAX_FILES_PER_ADD)
        )
        summary.files = len(files)
        summary.errors = [{"path": p, "error": e} for p, e in errors]
        s = self.settings
        done = 0
        # Documents are prepared and embedded in groups (one model call for many small documents), then each is
        # written in its own transaction.
        group_chunks = max(s.embed_batch * 4, 64)
        i = 0
        while i < len(files):
            group: list[ingest.Prepared | ingest.Outcome] = []
            n_chunks = 0
            while i < len(files) and n_chunks < group_chunks:
                item = await trio.to_thread.run_sync(
                    ingest.prepare_or_fail, files[i], s.max_file_bytes, s.chunk_chars, s.chunk_overlap_chars
                )
                group.append(item)
                if isinstance(item, ingest.Prepared):
                    n_chunks += len(item.chunks)
                i += 1
            for o in await self._write_group(group, shared=shared, origin_peer=None):
                summary.note(o)
                done += 1
                if progress is not None:
                    await progress({"done": done, "total": len(files), "source": o.source, "status": o.status})
            if s.malloc_trim and malloc.available():  # the model's freed working memory back to the system
                await trio.to_thread.run_sync(malloc.trim)
                self.counters["malloc_trims"] += 1
        await self._run_db(self._save_index)
        summary.seconds = trio.current_time() - start
        self.counters["adds"] += 1
        return summary.to_json()

    async def add_text(
        self,
        source: str,
        text: str,
        *,
        title: str = "",
        shared: bool = False,
        origin_peer: str | None = None,
        mime: str = "text/plain",
    ) -> dict[str, Any]:
        """Ingest a text under a source name (a URI, or what a peer sent); same rules as files."""
        await self._open()
        s = self.settings
        prep = ingest.prepare_text(
            source,
            Extracted(text, title or source, mime),
            len(text.encode()),
            chunk_chars=s.chunk_chars,
            overlap_chars=s.chunk_overlap_chars,
        )
        (outcome,) = await self._write_group([prep], shared=shared, origin_peer=origin_peer)
        # The index file is not saved per text (it is rewritten whole): the next rag.add, remove or close saves
        # it, and a kill before that is repaired from SQLite at open.
        return outcome.to_json()

    async def _write_group(
        self, group: Sequence[ingest.Prepared | ingest.Outcome], *, shared: bool, origin_peer: str | None
    ) -> list[ingest.Outcome]:
        store = await self._open()
        todo: list[ingest.Prepared] = []
        for item in group:
            if isinstance(item, ingest.Prepared):
                early = await trio.to_thread.run_sync(ingest.precheck, store, item, origin_peer, limiter=self._db)
                if early is None:
                    todo.append(item)
        vectors: Vectors | None = None
        if self._uses_vectors and todo:
            vectors = await self._embed([c.text for p in todo for c in p.chunks])
        out: list[ingest.Outcome] = []
        pos = 0
        for item in group:
            if isinstance(item, ingest.Outcome):
                out.append(item)
                continue
            if item not in todo:
                settled = await self._run_db(ingest.settle, store, item, origin_peer, shared)
                # None: the document changed between the two checks (a concurrent add/remove); nothing was written
                out.append(settled or ingest.Outcome(item.source, ingest.FAILED, detail="changed meanwhile; add again"))
                continue
            vecs = None if vectors is None else vectors[pos : pos + len(item.chunks)]
            pos += len(item.chunks)
            blobs = None if vecs is None else [to_blob(v) for v in vecs]
            # Keyphrases are extracted here, outside the DB limiter and the write transaction.
            pre = (
                None
                if self._graph is None
                else await trio.to_thread.run_sync(self._graph.extract_texts, [c.text for c in item.chunks])
            )
            out.append(await self._run_db(self._write_sync, item, blobs, vecs, shared, origin_peer, self.wall_s(), pre))
        return out

    def _write_sync(
        self,
        prep: ingest.Prepared,
        blobs: list[bytes] | None,
        vecs: Vectors | None,
        shared: bool,
        origin_peer: str | None,
        now: float,
        pre: Sequence[Any] | None = None,
    ) -> ingest.Outcome:
        assert self._store is not None and self._index is not None
        g = self._graph
        outcome = ingest.write(
            self._store,
            prep,
            blobs,
            origin_peer=origin_peer,
            shared=shared,
            added_at=now,
            graph_index=None if g is None else (lambda conn, chunks: g.index_chunks(conn, chunks, pre)),
            graph_remove=None if g is None else g.remove_chunks,
        )
        # SQLite has committed; the hnswlib index follows (and is reconciled at open if we die in between).
        self._index.remove(outcome.old_chunk_ids)
        if vecs is not None and outcome.new_chunk_ids:
            self._index.add(outcome.new_chunk_ids, vecs)
        return outcome

    def _save_index(self) -> None:
        if self._index is not None:
            self._index.save()

    # ------------------------------------------------------------------ remove / stats / feedback

    async def remove(self, *, doc_id: int | None = None, source: str | None = None) -> dict[str, Any]:
        """Remove one document by id, or by source (a path removes that file or every file under that folder)."""
        if (doc_id is None) == (source is None):
            raise RagError("give exactly one of a document id or a source")
        return dict(await self._run_db(self._remove_sync, doc_id, source))

    async def set_shared(self, shared: bool, *, doc_id: int | None = None, source: str | None = None) -> dict[str, Any]:
        """Mark one document (by id) or every document from a source (file or folder) shared or not."""
        if (doc_id is None) == (source is None):
            raise RagError("give exactly one of a document id or a source")
        return dict(await self._run_db(self._set_shared_sync, shared, doc_id, source))

    def _set_shared_sync(self, shared: bool, doc_id: int | None, source: str | None) -> dict[str, Any]:
        assert self._store is not None
        store = self._store
        if doc_id is not None:
            docs = [store.document(doc_id)]
        else:
            assert source is not None
            docs = [store.document(i) for i in self._doc_ids_for_source(store, source)]
            if not docs:
                raise DocumentNotFound(f"no document with source {source!r}")
        changed = [d.id for d in docs if d.shared != shared]
        with store.transaction() as conn:
            for i in changed:
                conn.execute("UPDATE documents SET shared = ? WHERE id = ?", (int(shared), i))
        return {"documents": len(docs), "changed": len(changed), "doc_ids": [d.id for d in docs], "shared": shared}

    def _remove_sync(self, doc_id: int | None, source: str | None) -> dict[str, Any]:
        assert self._store is not None and self._index is not None
        store = self._store
        if doc_id is not None:
            ids = [store.document(doc_id).id]
        else:
            assert source is not None
            ids = self._doc_ids_for_source(store, source)
            if not ids:
                raise DocumentNotFound(f"no document with source {source!r}")
        removed: list[int] = []
        with store.transaction() as conn:
            for d in ids:
                removed += store.delete_document(conn, d)
            if self._graph is not None and removed:
                self._graph.remove_chunks(conn, removed)
        self._index.remove(removed)
        self._index.save()
        return {"documents": len(ids), "chunks": len(removed), "doc_ids": ids}

    @staticmethod
    def _doc_ids_for_source(store: Store, source: str) -> list[int]:
        candidates = [source]
        p = Path(source).expanduser()
        if not re.match(r"^[a-z][a-z0-9+.-]*://", source):
            candidates.append(str(p.resolve()))
        for c in candidates:
            doc = store.document_by_source(c)
            if doc is not None:
                return [doc.id]
        prefix = str(p.resolve()).rstrip("/") + "/"
        rows = store.conn.execute(
            "SELECT id FROM documents WHERE origin_peer IS NULL AND substr(source, 1, ?) = ? ORDER BY id",
            (len(prefix), prefix),
        ).fetchall()
        return [int(r[0]) for r in rows]

    async def stats(self) -> dict[str, Any]:
        return dict(await self._run_db(self._stats_sync))

    def _stats_sync(self) -> dict[str, Any]:
        assert self._store is not None and self._index is not None
        st: dict[str, Any] = dict(self._store.stats())
        st.update(
            {
                "dense_index_size": len(self._index),
                "mode": self.settings.mode,
                "fusion": self.settings.fusion,
                "graph": self.settings.graph and self._graph is not None,
                "model_loaded": self.embedder.loaded,
                "path": str(self.root) if self.root else None,
                **self.counters,
            }
        )
        if self._store.path is not None and self._store.path.exists():
            st["db_bytes"] = self._store.path.stat().st_size
        return st

    async def compact(self) -> dict[str, Any]:
        """Housekeeping (the Gardener agent): merge the FTS5 segments, VACUUM, rebuild the dense index from the
        stored vectors and save it. Returns the database size before and after."""
        await self._open()
        return dict(await self._run_db(self._compact_sync))

    def _compact_sync(self) -> dict[str, Any]:
        assert self._store is not None and self._index is not None
        path = self._store.path

        def size() -> int | None:
            return path.stat().st_size if path is not None and path.exists() else None

        before = size()
        for table in ("chunks_fts", "shared_fts"):
            self._store.conn.execute(f"INSERT INTO {table}({table}) VALUES('optimize')")
        if path is not None:
            self._store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._store.conn.execute("VACUUM")
        vectors = self._index.rebuild(self._store)
        self._save_index()
        self.counters["compactions"] = self.counters.get("compactions", 0) + 1
        return {"db_bytes_before": before, "db_bytes_after": size(), "vectors_reindexed": vectors}

    async def documents(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        store = await self._open()
        docs = await trio.to_thread.run_sync(lambda: store.documents(limit=limit, offset=offset), limiter=self._db)
        return [d.to_json() for d in docs]

    async def feedback(self, chunk_id: int, good: bool) -> dict[str, Any]:
        """The user marks a result good or bad; the chunk's source reputation is updated (``node.rag.trust``)."""
        return dict(await self._run_db(self._feedback_sync, chunk_id, good, self.wall_s()))

    async def feedback_peer(self, peer_hex: str, claim: str, good: bool) -> dict[str, Any]:
        """The user marks a peer's (mesh) result good or bad: ``peer:<hex>`` gains evidence and the user's stance
        on the result's claim is recorded; no local chunk is touched."""
        peer_hex, claim = peer_hex.lower(), claim.lower()
        if not _HEX.fullmatch(peer_hex) or len(peer_hex) != 16:
            raise RagError(f"a peer id is 16 hex digits, not {peer_hex!r}")
        if not _HEX.fullmatch(claim) or len(claim) != 32:
            raise RagError(f"a claim key is 32 hex digits, not {claim!r}")
        await self._open()
        return dict(await self._run_db(self._feedback_peer_sync, peer_hex, claim, good, self.wall_s()))

    def _feedback_peer_sync(self, peer_hex: str, claim: str, good: bool, now: float) -> dict[str, Any]:
        assert self._store is not None
        from node.rag.trust import peer_source_key

        key = peer_source_key(peer_hex)
        with self._store.transaction():
            rep = self._trust.feedback_claim(claim, key, good, now)
        ct = self._trust.opinion_for_claim(claim, now, extra_support=[key])
        return {"id": f"{peer_hex}:{claim}", "good": good, "source": rep.to_json(), "chunk": ct.to_json()}

    def _feedback_sync(self, chunk_id: int, good: bool, now: float) -> dict[str, Any]:
        assert self._store is not None
        if not self._store.chunks([chunk_id]):
            raise DocumentNotFound(f"no result with id {chunk_id} (use an `id` from rag.query)")
        with self._store.transaction():
            rep = self._trust.feedback_chunk(chunk_id, good, now)
        ct = self._trust.opinion_for_chunk(chunk_id, now)
        return {"id": chunk_id, "good": good, "source": rep.to_json(), "chunk": ct.to_json()}

    # ------------------------------------------------------------------ query

    async def query(
        self,
        text: str,
        *,
        k: int = 10,
        mode: str | None = None,
        graph: bool | None = None,
        per_doc: bool = True,
        shared_only: bool = False,
    ) -> list[Hit]:
        """The ``k`` best results for ``text`` (see the module docstring for the pipeline)."""
        text = text.strip()
        if not text:
            raise RagError("the query is empty")
        if len(text) > MAX_QUERY_CHARS:
            raise RagError(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= k <= self.settings.max_results:
            raise RagError(f"k must be from 1 to rag.max_results ({self.settings.max_results})")
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise RagError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode != "bm25" and self.settings.mode == "bm25":
            raise RagError("this node runs with rag.mode = bm25: no vectors are stored, only bm25 queries work")
        await self._open()
        qvec = (await self._embed([text]))[0] if mode != "bm25" else None
        use_graph = self.settings.graph if graph is None else graph
        self.counters["queries"] += 1
        hits: list[Hit] = await self._run_db(
            self._search_sync, text, qvec, k, mode, use_graph, per_doc, shared_only, self.wall_s()
        )
        return hits

    def ranked(
        self, text: str, qvec: Vectors | None, mode: str, use_graph: bool, shared_only: bool = False
    ) -> list[tuple[int, float]]:
        """Fused chunk scores, best first (blocking; inside the db limiter). Also used by bench/scifact.py.

        ``shared_only`` (a peer's query) computes everything over shared documents alone: BM25 on their own FTS
        table, dense by brute force over their vectors, normalisation over those candidates, no graph expansion
        (the graph is built from every document) -- so the answer does not depend on unshared content."""
        assert self._store is not None and self._index is not None
        n = self.settings.candidates
        bm = self._store.bm25(text, n, shared_only=shared_only) if mode != "dense" else []
        if qvec is None or mode == "bm25":
            de: list[tuple[int, float]] = []
        elif shared_only:
            de = self._shared_dense(qvec, n)
        else:
            de = self._index.search(qvec, n)
        if shared_only:
            use_graph = False
        if mode == "bm25":
            scores = dict(bm)
        elif mode == "dense":
            scores = dict(de)
        else:
            scores = fusion.fuse(
                bm,
                de,
                fusion.FusionSettings(method=self.settings.fusion, dense_weight=self.settings.dense_weight),
            )
        if use_graph and self._graph is not None and scores:
            scores = self._graph.expand(self._store.conn, text, scores)
        return fusion.top(scores, len(scores))

    def _shared_dense(self, qvec: Vectors, n: int) -> list[tuple[int, float]]:
        """Inner-product scores of the shared chunks' vectors (few; brute force), best ``n``."""
        assert self._store is not None
        scores: dict[int, float] = {}
        q = np.asarray(qvec, dtype=np.float32)
        for batch in self._store.shared_embeddings():
            mat = np.stack([from_blob(b) for _, b in batch])
            for (cid, _), sc in zip(batch, mat @ q, strict=True):
                scores[cid] = float(sc)
        return fusion.top(scores, n)

    def _search_sync(
        self,
        text: str,
        qvec: Vectors | None,
        k: int,
        mode: str,
        use_graph: bool,
        per_doc: bool,
        shared_only: bool,
        now: float,
    ) -> list[Hit]:
        assert self._store is not None
        ranked = self.ranked(text, qvec, mode, use_graph, shared_only)
        docs = self._store.chunk_docs([i for i, _ in ranked])
        picked: list[tuple[int, float]] = []
        seen_docs: set[int] = set()
        for cid, score in ranked:
            doc = docs.get(cid)
            if doc is None or (shared_only and not doc[1]):
                continue
            if per_doc:
                if doc[0] in seen_docs:
                    continue
                seen_docs.add(doc[0])
            picked.append((cid, score))
            if len(picked) >= k:
                break
        rows = self._store.chunks([c for c, _ in picked])
        opinions = self._trust.opinions_for_chunks([c for c, _ in picked], now) if picked else {}
        hits: list[Hit] = []
        for cid, score in picked:
            row = rows[cid]
            ct = opinions.get(cid)
            op = None if ct is None else ct.opinion
            hits.append(
                Hit(
                    chunk_id=cid,
                    doc_id=row.doc_id,
                    source=row.source,
                    title=row.title,
                    score=score if math.isfinite(score) else 0.0,
                    snippet=snippet(row.text, text, self.settings.snippet_chars),
                    ordinal=row.ordinal,
                    origin_peer=row.origin_peer,
                    shared=row.shared,
                    trust=None if ct is None else round(ct.trust, 6),
                    belief=None if op is None else round(op.b, 6),
                    disbelief=None if op is None else round(op.d, 6),
                    uncertainty=None if op is None else round(op.u, 6),
                )
            )
        return hits
