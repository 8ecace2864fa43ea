"""The knowledge base's control methods: rag.add, rag.query, rag.remove, rag.stats, rag.feedback, rag.documents,
rag.share, rag.unshare.

:func:`register` adds them to a node's registry (the rag plugin's ``rpc`` hook, :mod:`node.rag.plugin`). Each is a
thin call into the node's :class:`~node.rag.service.RagService`; its errors (``RagError``) reach the client as
JSON-RPC application errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.control.rpc import APP_ERROR, NoParams, Notify, Registry, RpcError, param
from node.rag import federated

if TYPE_CHECKING:  # the service (onnxruntime, hnswlib) loads only when the knowledge base runs
    from node.rag.service import RagService

PROGRESS_NOTIFICATION = "rag.progress"


@dataclass(frozen=True, slots=True)
class AddParams:
    paths: list[str] = param(doc="Files and folders to ingest (folders recursively), as absolute paths.")  # noqa: RUF009
    shared: bool = param(False, doc="Mark the documents shared: peers may find them with a --mesh query.")
    progress: bool = param(False, doc="Stream one `rag.progress` notification per file (done, total, source, status).")


@dataclass(frozen=True, slots=True)
class QueryParams:
    text: str = param(doc="The question or keywords.")
    k: int = param(10, doc="How many results (1 to rag.max_results).")
    mode: str | None = param(None, doc="hybrid, bm25 or dense (default: rag.mode).")
    graph: bool | None = param(None, doc="Expand through the knowledge graph (default: rag.graph).")
    per_doc: bool = param(True, doc="At most one result (the best chunk) per document.")
    mesh: bool = param(False, doc="Also ask reachable peers (their shared documents); merged by trust, with origin.")
    shared_only: bool = param(False, doc="Only documents shared with peers (what a remote client may see).")


@dataclass(frozen=True, slots=True)
class RemoveParams:
    id: int | None = param(None, doc="Document id (doc_id in results and rag.documents).")
    source: str | None = param(None, doc="Source path or URI; a folder removes every document under it.")


@dataclass(frozen=True, slots=True)
class ShareParams:
    id: int | None = param(None, doc="Document id (doc_id in results and rag.documents).")
    source: str | None = param(None, doc="Source path or URI; a folder changes every document under it.")


@dataclass(frozen=True, slots=True)
class FeedbackParams:
    verdict: str = param(doc="good or bad: updates the reputation of the result's source.")
    id: int | None = param(None, doc="A local result id (the chunk id shown by rag.query).")
    ref: str | None = param(
        None,
        doc="A result's `ref` from a mesh query: a local id, or <peer hex>:<claim> "
        "for a peer's result (updates peer:<hex> and records the stance on the claim).",
    )


@dataclass(frozen=True, slots=True)
class DocumentsParams:
    limit: int = param(100, doc="Most documents to list (1 to 10000).")
    offset: int = param(0, doc="Skip this many (ordered by id).")


def register(
    reg: Registry,
    get_service: Callable[[], RagService | Awaitable[RagService | None] | None],
    get_node: Callable[[], federated.MeshView] | None = None,
) -> None:
    """Add the rag.* methods; ``get_service`` returns the node's service (None when rag.enabled is false), or an
    awaitable of it (the node's: its modules load in a worker thread on first use)."""

    async def svc() -> RagService:
        got = get_service()
        s = await got if inspect.isawaitable(got) else got
        if s is None:
            raise RpcError(APP_ERROR, "the knowledge base is disabled on this node (rag.enabled = false)")
        return s

    async def add(p: AddParams, notify: Notify) -> Any:
        if not p.paths:
            raise RpcError(APP_ERROR, "give at least one path")

        async def progress(event: dict[str, Any]) -> None:
            await notify(PROGRESS_NOTIFICATION, event)

        return await (await svc()).add(p.paths, shared=p.shared, progress=progress if p.progress else None)

    async def query(p: QueryParams, notify: Notify) -> Any:
        if p.mesh:  # federated query (node.rag.federated, RAG-graph)
            service = await svc()
            if get_node is None:
                raise RpcError(APP_ERROR, "mesh queries need a running node")
            return await federated.mesh_query(get_node(), service, p.text, k=p.k, mode=p.mode, graph=p.graph)
        hits = await (await svc()).query(
            p.text, k=p.k, mode=p.mode, graph=p.graph, per_doc=p.per_doc, shared_only=p.shared_only
        )
        return {"query": p.text, "results": [h.to_json() for h in hits]}

    async def remove(p: RemoveParams, notify: Notify) -> Any:
        return await (await svc()).remove(doc_id=p.id, source=p.source)

    async def share(p: ShareParams, notify: Notify) -> Any:
        return await (await svc()).set_shared(True, doc_id=p.id, source=p.source)

    async def unshare(p: ShareParams, notify: Notify) -> Any:
        return await (await svc()).set_shared(False, doc_id=p.id, source=p.source)

    async def stats(_: NoParams, notify: Notify) -> Any:
        return await (await svc()).stats()

    async def feedback(p: FeedbackParams, notify: Notify) -> Any:
        if p.verdict not in ("good", "bad"):
            raise RpcError(APP_ERROR, f"verdict must be good or bad, not {p.verdict!r}")
        good = p.verdict == "good"
        if (p.id is None) == (p.ref is None):
            raise RpcError(APP_ERROR, "give exactly one of id or ref")
        if p.id is not None:
            return await (await svc()).feedback(p.id, good)
        assert p.ref is not None
        if p.ref.isdigit():
            return await (await svc()).feedback(int(p.ref), good)
        peer, sep, claim = p.ref.partition(":")
        if not sep:
            raise RpcError(APP_ERROR, f"ref is a local result id or <peer hex>:<claim>, not {p.ref!r}")
        return await (await svc()).feedback_peer(peer, claim, good)

    async def documents(p: DocumentsParams, notify: Notify) -> Any:
        if not 1 <= p.limit <= 10_000:
            raise RpcError(APP_ERROR, "limit must be from 1 to 10000")
        return await (await svc()).documents(limit=p.limit, offset=p.offset)

    reg.add(
        "rag.add",
        AddParams,
        "Ingest files and folders (text, Markdown, HTML, PDF) into the knowledge base: content-hash dedupe, a "
        "changed file replaces its chunks. Returns counts (added, replaced, unchanged, duplicate, empty, failed, "
        "shared, unshared: an unchanged file re-added with another shared flag takes the new flag).",
        add,
        streaming=True,
    )
    reg.add(
        "rag.query",
        QueryParams,
        "Search the knowledge base (BM25 + embeddings, fused). Each result: id, doc_id, source, title, score, "
        "trust, belief, disbelief, uncertainty, snippet.",
        query,
    )
    reg.add("rag.remove", RemoveParams, "Remove a document (by id) or every document from a source path.", remove)
    reg.add(
        "rag.share",
        ShareParams,
        "Mark a document (by id) or every document from a source shared: peers may find it with a mesh query. "
        "Returns documents, changed, doc_ids, shared.",
        share,
    )
    reg.add(
        "rag.unshare",
        ShareParams,
        "Mark a document (by id) or every document from a source not shared: peers no longer find it.",
        unshare,
    )
    reg.add("rag.stats", NoParams, "Documents, chunks, vectors, index and model state of the knowledge base.", stats)
    reg.add(
        "rag.feedback",
        FeedbackParams,
        "Mark a result good or bad; the Beta reputation of its source and the result's trust change.",
        feedback,
    )
    reg.add("rag.documents", DocumentsParams, "List stored documents (id, source, title, chunks, shared).", documents)
