"""``POST /v1/rag/query``: the node's local knowledge base over HTTP.

The same search and the same result fields as the ``rag.query`` control method (the node's ``rag`` service), for
keys with the ``rag:query`` scope (roles user and admin): only documents shared with peers, unless the key also
holds ``rag:private`` (admin keys, only when asked for at creation). No ``mesh`` option: a gateway client does not fan
queries out to the node's peers. A node without a knowledge base (``rag.enabled = false``) or without its
embedding model (not installed) answers 503 with a message saying which; a query the knowledge base refuses
(empty, ``k`` over ``rag.max_results``, a mode this node cannot serve) answers 400. A query is a read: no audit row.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from anchor.gateway.auth import Principal
from anchor.gateway.errors import GatewayError, NodeUnavailable, RagUnavailable
from anchor.gateway.roles import SCOPE_RAG_PRIVATE, SCOPE_RAG_QUERY
from node.rag.errors import ModelMissing, RagError
from node.rag.plugin import load_rag_service
from node.rag.service import MAX_QUERY_CHARS

if TYPE_CHECKING:
    from anchor.gateway.app import GatewayContext

log = logging.getLogger("village.anchor.gateway")

MAX_K = 1000  # the schema's bound; the node's rag.max_results is checked by the service (400 above it)


class RagQueryIn(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="the question or keywords")
    k: int = Field(10, ge=1, le=MAX_K, description="how many results (at most the node's rag.max_results)")
    mode: Literal["hybrid", "bm25", "dense"] | None = Field(
        None, description="hybrid, bm25 or dense (default: the node's rag.mode)"
    )
    graph: bool | None = Field(None, description="expand through the knowledge graph (default: rag.graph)")
    per_doc: bool = Field(True, description="at most one result (the best chunk) per document")


class RagHit(BaseModel):
    id: int = Field(description="the chunk's id (rag.feedback takes it)")
    doc_id: int
    source: str
    title: str
    score: float
    trust: float | None
    belief: float | None
    disbelief: float | None
    uncertainty: float | None
    snippet: str
    ordinal: int = Field(description="the chunk's position in its document")
    origin_peer: str | None
    shared: bool


class RagQueryOut(BaseModel):
    query: str
    results: list[RagHit]


def add_rag_routes(
    app: FastAPI,
    ctx: "GatewayContext",
    scoped: Callable[[str], Callable[..., Awaitable[Principal]]],
    responses: dict[int | str, dict[str, Any]],
) -> None:
    @app.post("/v1/rag/query", response_model=RagQueryOut, responses=responses)
    async def rag_query(
        body: RagQueryIn, principal: Annotated[Principal, Depends(scoped(SCOPE_RAG_QUERY))]
    ) -> RagQueryOut:
        """Search the anchor node's knowledge base (BM25 + embeddings, fused); the fields of ``rag.query``."""
        if ctx.node.core is None:
            raise NodeUnavailable("the node is not running")
        try:
            service = await load_rag_service(ctx.node)
        except RagError as exc:  # its modules cannot be loaded (a broken install): why is for the node's log only
            log.warning("gateway: %s", exc)
            raise RagUnavailable("the knowledge base could not be loaded on this node") from None
        if service is None:
            raise RagUnavailable("the knowledge base is disabled on this node (rag.enabled = false)")
        try:
            hits = await service.query(
                body.text,
                k=body.k,
                mode=body.mode,
                graph=body.graph,
                per_doc=body.per_doc,
                shared_only=SCOPE_RAG_PRIVATE not in principal.scopes,
            )
        except ModelMissing as exc:
            raise RagUnavailable(f"the knowledge base cannot embed the query: {exc}") from exc
        except RagError as exc:
            raise GatewayError(str(exc), code="rag_rejected") from exc
        return RagQueryOut(query=body.text, results=[RagHit.model_validate(h.to_json()) for h in hits])
