"""Ingestion steps: find files, read and chunk them, and write one document per SQLite transaction.

The service drives these blocking functions from worker threads:

1. :func:`walk` expands the given paths (folders recursively, hidden entries and unsupported suffixes skipped
   inside folders, symlinked folders not followed) into files, in a stable order.
2. :func:`prepare` extracts the text, hashes it (sha256 of the text) and chunks it.
3. The service embeds the chunks (unless in BM25-only mode), then :func:`write` decides against the store:
   *unchanged* (same source, same hash: nothing to do, so an interrupted ``add`` resumes where it stopped),
   *duplicate* (the same text is already stored under another source), else it inserts the document and
   its chunks (replacing the old version's chunks when the source was stored with another hash) and indexes
   the chunks in the knowledge graph — all in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.rag.chunking import Chunk, chunk_text
from node.rag.errors import ExtractError
from node.rag.extract import SUPPORTED_SUFFIXES, Extracted, extract_file
from node.rag.store import NewChunk, Store

log = logging.getLogger("village.rag")

GraphIndexFn = Callable[[Any, Sequence[tuple[int, str]]], None]
GraphRemoveFn = Callable[[Any, Sequence[int]], None]

ADDED, REPLACED, UNCHANGED, DUPLICATE, EMPTY, FAILED = "added", "replaced", "unchanged", "duplicate", "empty", "failed"
SHARED, UNSHARED = "shared", "unshared"  # an unchanged (or duplicate) document whose shared flag was changed


@dataclass(frozen=True, slots=True)
class Prepared:
    source: str
    extracted: Extracted
    content_hash: str
    size_bytes: int
    chunks: list[Chunk]


@dataclass(frozen=True, slots=True)
class Outcome:
    source: str
    status: str  # added, replaced, unchanged, duplicate, empty, failed
    doc_id: int | None = None
    chunks: int = 0
    detail: str = ""
    new_chunk_ids: list[int] = field(default_factory=list)
    old_chunk_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source, "status": self.status, "doc_id": self.doc_id}
        d["chunks"] = self.chunks
        if self.detail:
            d["detail"] = self.detail
        return d


def walk(paths: Sequence[Path], *, max_files: int) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files to ingest, [(path, error)]) for the given files and folders."""
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def push(p: Path) -> None:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            files.append(rp)

    for p in paths:
        if p.is_dir():
            root = p.resolve()
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    fp = Path(dirpath) / name
                    if not name.startswith(".") and fp.suffix.lower() in SUPPORTED_SUFFIXES and fp.is_file():
                        if fp.is_symlink() and not fp.resolve().is_relative_to(root):
                            # a link inside the folder to a file outside it: never ingested by adding the folder
                            log.warning("rag: skipping %s: a symlink pointing outside %s", fp, p)
                            errors.append((str(fp), "symlink pointing outside the folder; skipped"))
                            continue
                        push(fp)
        elif p.is_file():
            push(p)
        else:
            errors.append((str(p), "no such file or folder"))
        if len(files) > max_files:
            errors.append((str(p), f"more than {max_files} files in one call; add folders separately"))
            return files[:max_files], errors
    return files, errors


def prepare_or_fail(path: Path, max_bytes: int, chunk_chars: int, overlap_chars: int) -> Prepared | Outcome:
    """:func:`prepare`, or a *failed* outcome naming the reason (unreadable, unsupported, too large)."""
    try:
        return prepare(path, max_bytes=max_bytes, chunk_chars=chunk_chars, overlap_chars=overlap_chars)
    except ExtractError as exc:
        return Outcome(str(path), FAILED, detail=str(exc))


def prepare_text(
    source: str, extracted: Extracted, size_bytes: int, *, chunk_chars: int, overlap_chars: int
) -> Prepared:
    digest = hashlib.sha256(extracted.text.encode()).hexdigest()
    chunks = chunk_text(extracted.text, chunk_chars=chunk_chars, overlap_chars=overlap_chars)
    return Prepared(source, extracted, digest, size_bytes, chunks)


def prepare(path: Path, *, max_bytes: int, chunk_chars: int, overlap_chars: int) -> Prepared:
    extracted = extract_file(path, max_bytes=max_bytes)
    return prepare_text(str(path), extracted, path.stat().st_size, chunk_chars=chunk_chars, overlap_chars=overlap_chars)


def precheck(store: Store, prep: Prepared, origin_peer: str | None, shared: bool | None = None) -> Outcome | None:
    """An outcome that needs no embedding (unchanged, duplicate, empty), or None: the document must be written.

    With ``shared`` given (the caller holds a transaction), an unchanged or duplicate document whose shared flag
    differs gets the new flag, and the outcome is "shared" or "unshared" instead."""
    if not prep.chunks:
        return Outcome(prep.source, EMPTY, detail="no text")
    old = store.document_by_source(prep.source, origin_peer)
    if old is not None and old.content_hash == prep.content_hash:
        if shared is not None and old.shared != shared:
            _set_shared(store, old.id, shared)
            return Outcome(prep.source, SHARED if shared else UNSHARED, doc_id=old.id, chunks=old.n_chunks)
        return Outcome(prep.source, UNCHANGED, doc_id=old.id, chunks=old.n_chunks)
    dup = None if old is not None else store.document_by_hash(prep.content_hash, origin_peer)
    if dup is not None and dup.source != prep.source:
        status, detail = DUPLICATE, f"same text as {dup.source}"
        if shared is not None and dup.shared != shared:
            _set_shared(store, dup.id, shared)
            status, detail = (
                (SHARED if shared else UNSHARED),
                f"same text as {dup.source}, now {'' if shared else 'un'}shared",
            )
        return Outcome(prep.source, status, doc_id=dup.id, chunks=dup.n_chunks, detail=detail)
    return None


def _set_shared(store: Store, doc_id: int, shared: bool) -> None:
    store.conn.execute("UPDATE documents SET shared = ? WHERE id = ?", (int(shared), doc_id))


def settle(store: Store, prep: Prepared, origin_peer: str | None, shared: bool) -> Outcome | None:
    """:func:`precheck` with the shared flag applied, in its own transaction."""
    with store.transaction():
        return precheck(store, prep, origin_peer, shared)


def write(
    store: Store,
    prep: Prepared,
    embeddings: Sequence[bytes] | None,
    *,
    origin_peer: str | None,
    shared: bool,
    added_at: float,
    graph_index: GraphIndexFn | None,
    graph_remove: GraphRemoveFn | None,
) -> Outcome:
    """Store one prepared document in one transaction (re-checking :func:`precheck` inside it)."""
    with store.transaction() as conn:
        early = precheck(store, prep, origin_peer, shared)
        if early is not None:
            return early
        old = store.document_by_source(prep.source, origin_peer)
        old_ids: list[int] = []
        if old is not None:
            old_ids = store.delete_document(conn, old.id)
            if graph_remove is not None and old_ids:
                graph_remove(conn, old_ids)
        new_chunks = [
            NewChunk(c.ordinal, c.text, c.start_char, c.end_char, None if embeddings is None else embeddings[i])
            for i, c in enumerate(prep.chunks)
        ]
        doc_id, ids = store.insert_document(
            conn,
            source=prep.source,
            content_hash=prep.content_hash,
            origin_peer=origin_peer,
            added_at=added_at,
            shared=shared,
            title=prep.extracted.title,
            mime=prep.extracted.mime,
            size_bytes=prep.size_bytes,
            chunks=new_chunks,
        )
        if graph_index is not None:
            graph_index(conn, [(cid, c.text) for cid, c in zip(ids, new_chunks, strict=True)])
    return Outcome(
        prep.source,
        REPLACED if old is not None else ADDED,
        doc_id=doc_id,
        chunks=len(ids),
        new_chunk_ids=ids,
        old_chunk_ids=old_ids,
    )
