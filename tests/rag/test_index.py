"""The hnswlib index is a cache of the vectors in SQLite: reconciled at open, rebuilt when missing or corrupt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from node.rag.embed import DIM, Vectors, to_blob
from node.rag.index import DenseIndex
from node.rag.store import NewChunk, Store


def _vectors(n: int, seed: int = 7) -> Vectors:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    out: Vectors = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def _store_with(path: Path, vecs: Vectors) -> tuple[Store, list[int]]:
    store = Store(path)
    with store.transaction() as conn:
        _, ids = store.insert_document(
            conn,
            source="vectors",
            content_hash="h",
            origin_peer=None,
            added_at=0.0,
            shared=False,
            title="",
            mime="text/plain",
            size_bytes=0,
            chunks=[NewChunk(i, f"chunk {i}", 0, 0, to_blob(v)) for i, v in enumerate(vecs)],
        )
    return store, ids


def _nearest(index: DenseIndex, vecs: Vectors) -> list[int]:
    return [index.search(v, 1)[0][0] for v in vecs]


def test_corrupt_or_truncated_index_file_is_rebuilt_from_sqlite(tmp_path: Path) -> None:
    vecs = _vectors(300)
    store, ids = _store_with(tmp_path / "rag.sqlite3", vecs)
    index = DenseIndex(tmp_path / "rag.hnsw")
    assert index.open(store).rebuilt  # no file yet
    assert _nearest(index, vecs[:50]) == ids[:50]
    index.save()
    assert not DenseIndex(tmp_path / "rag.hnsw").open(store).rebuilt  # intact: loaded

    raw = bytearray((tmp_path / "rag.hnsw").read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\xff" * 64  # flip bytes in the middle
    (tmp_path / "rag.hnsw").write_bytes(bytes(raw))
    reopened = DenseIndex(tmp_path / "rag.hnsw")
    report = reopened.open(store)
    assert report.rebuilt and "checksum" in report.reason
    assert _nearest(reopened, vecs[:50]) == ids[:50]
    reopened.save()

    (tmp_path / "rag.hnsw").write_bytes((tmp_path / "rag.hnsw").read_bytes()[:1000])  # truncated
    again = DenseIndex(tmp_path / "rag.hnsw")
    assert again.open(store).rebuilt and len(again) == 300
    assert _nearest(again, vecs[250:]) == ids[250:]
    store.close()


def test_stale_index_is_reconciled_with_sqlite(tmp_path: Path) -> None:
    vecs = _vectors(40)
    store, ids = _store_with(tmp_path / "rag.sqlite3", vecs[:30])
    index = DenseIndex(tmp_path / "rag.hnsw")
    index.open(store)
    index.save()
    # SQLite moves on without the index (as after a kill between the commit and the index save): 10 chunks
    # more, and the first document's chunks 0-4 deleted.
    with store.transaction() as conn:
        _, more = store.insert_document(
            conn,
            source="more",
            content_hash="h2",
            origin_peer=None,
            added_at=0.0,
            shared=False,
            title="",
            mime="text/plain",
            size_bytes=0,
            chunks=[NewChunk(i, f"more {i}", 0, 0, to_blob(v)) for i, v in enumerate(vecs[30:])],
        )
        conn.execute("DELETE FROM chunks WHERE id IN (?, ?, ?, ?, ?)", ids[:5])
    stale = DenseIndex(tmp_path / "rag.hnsw")
    report = stale.open(store)
    assert (report.rebuilt, report.added, report.deleted) == (False, 10, 5)
    assert len(stale) == 35
    assert _nearest(stale, vecs[30:]) == more
    assert {i for i, _ in stale.search(vecs[0], 40)}.isdisjoint(ids[:5])
    store.close()
