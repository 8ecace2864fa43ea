"""The dense index: hnswlib (inner product on L2-normalised vectors = cosine), a cache of ``chunks.embedding``.

SQLite is the source of truth. The index lives in ``rag.hnsw`` beside the database with a sidecar
``rag.hnsw.json`` holding the file's sha256, the dimension and the element count, written after the index file
(write to a temporary file, fsync, rename). :meth:`DenseIndex.open` trusts the file only when its hash matches
the sidecar (so a truncated or corrupt file is never handed to hnswlib's loader, which does not validate), and
then reconciles its labels with the chunk ids that have a vector in SQLite: ids missing from the index are
added, ids no longer in SQLite are marked deleted. A missing, stale or corrupt file is rebuilt from SQLite.
Labels are chunk ids. Blocking; the service calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np

from node.rag.embed import DIM, Vectors, from_blob
from node.rag.store import Store

log = logging.getLogger("village.rag")

INDEX_NAME = "rag.hnsw"


@dataclass(frozen=True, slots=True)
class IndexSettings:
    m: int = 16  # hnswlib M: graph degree (memory ~ 4*M*2 bytes per element plus the vector)
    ef_construction: int = 200
    ef_search: int = 100  # raised to k when k is larger
    initial_capacity: int = 1024


@dataclass(frozen=True, slots=True)
class OpenReport:
    rebuilt: bool
    reason: str
    added: int
    deleted: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class DenseIndex:
    def __init__(self, path: Path | None, settings: IndexSettings | None = None) -> None:
        """``path`` None keeps the index in memory only (never saved)."""
        self.path = path
        self.settings = settings or IndexSettings()
        self._index = self._new(self.settings.initial_capacity)
        self._live: set[int] = set()
        self.dirty = False

    def _new(self, capacity: int) -> hnswlib.Index:
        idx = hnswlib.Index(space="ip", dim=DIM)
        idx.init_index(max_elements=capacity, ef_construction=self.settings.ef_construction, M=self.settings.m)
        idx.set_ef(self.settings.ef_search)
        return idx

    @property
    def meta_path(self) -> Path | None:
        return None if self.path is None else self.path.with_name(self.path.name + ".json")

    def __len__(self) -> int:
        return len(self._live)

    # -- open / reconcile

    def open(self, store: Store) -> OpenReport:
        """Load the file if it is intact, then make it agree with SQLite; rebuild when it cannot be trusted."""
        reason = self._load()
        if reason:
            n = self.rebuild(store)
            log.info("rag: rebuilt the dense index from SQLite (%s): %d vectors", reason, n)
            return OpenReport(rebuilt=True, reason=reason, added=n, deleted=0)
        want = store.embedded_ids()
        missing = sorted(want - self._live)
        extra = sorted(self._live - want)
        if missing:
            self.add_blobs(store.embeddings_for(missing))
        self.remove(extra)
        return OpenReport(rebuilt=False, reason="", added=len(missing), deleted=len(extra))

    def _load(self) -> str:
        """Load the saved index; returns why it cannot be used ('' if loaded)."""
        if self.path is None or self.meta_path is None:
            return "in memory"
        if not self.path.exists() or not self.meta_path.exists():
            return "no index file"
        try:
            meta = json.loads(self.meta_path.read_text())
            if meta.get("dim") != DIM or meta.get("sha256") != _sha256(self.path):
                return "index file does not match its checksum"
            idx = hnswlib.Index(space="ip", dim=DIM)
            idx.load_index(str(self.path), max_elements=max(int(meta["capacity"]), self.settings.initial_capacity))
            idx.set_ef(self.settings.ef_search)
            live = set(int(i) for i in meta["live"])
            labels = set(int(i) for i in idx.get_ids_list())
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            return f"index file unreadable: {exc}"
        if not live <= labels:
            return "index file disagrees with its sidecar"
        self._index, self._live = idx, live
        return ""

    def rebuild(self, store: Store) -> int:
        n = store.stats()["embedded_chunks"]
        self._index = self._new(max(self.settings.initial_capacity, n + n // 4))
        self._live = set()
        for batch in store.embeddings():
            self.add_blobs(batch)
        self.dirty = True
        return len(self._live)

    # -- updates

    def add_blobs(self, items: Sequence[tuple[int, bytes]]) -> None:
        if items:
            self.add([i for i, _ in items], np.stack([from_blob(b) for _, b in items]))

    def add(self, ids: Sequence[int], vectors: Vectors) -> None:
        if not ids:
            return
        need = self._index.element_count + len(ids)
        cap = self._index.get_max_elements()
        if need > cap:
            self._index.resize_index(max(need, cap * 2))
        self._index.add_items(vectors.astype(np.float32), np.asarray(ids, dtype=np.int64))
        self._live.update(ids)
        self.dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        for i in ids:
            if i in self._live:
                with contextlib.suppress(RuntimeError):  # already marked deleted in a saved file
                    self._index.mark_deleted(i)
                self._live.discard(i)
                self.dirty = True

    # -- search / save

    def search(self, vector: Vectors, k: int) -> list[tuple[int, float]]:
        """Chunk ids and cosine similarity, best first."""
        k = min(k, len(self._live))
        if k <= 0:
            return []
        self._index.set_ef(max(self.settings.ef_search, k))
        labels, dists = self._index.knn_query(vector.reshape(1, -1).astype(np.float32), k=k)
        # hnswlib's "ip" distance is 1 - inner product.
        return [(int(lab), 1.0 - float(d)) for lab, d in zip(labels[0], dists[0], strict=True)]

    def save(self) -> None:
        if self.path is None or self.meta_path is None or not self.dirty:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        self._index.save_index(str(tmp))
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        # Invalidate the old sidecar first: a kill between the two renames leaves a file that fails its check.
        self.meta_path.unlink(missing_ok=True)
        os.replace(tmp, self.path)
        meta = {
            "dim": DIM,
            "sha256": _sha256(self.path),
            "capacity": self._index.get_max_elements(),
            "live": sorted(self._live),
        }
        mtmp = self.meta_path.with_name(self.meta_path.name + ".tmp")
        mtmp.write_text(json.dumps(meta))
        os.replace(mtmp, self.meta_path)
        self.dirty = False
