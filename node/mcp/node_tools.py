"""The node's own tools, each a thin call of one control method (``node/control/methods.py``,
``node/rag/rpc.py``): the same code path as the CLI, so a tool and its `village` command cannot disagree.

``rag_add`` is confined to ``[mcp] rag_roots`` and reads what it checked: files are opened under an opened root
with ``O_NOFOLLOW`` at every step (node.mcp.confine), so no symlink is followed and no path is reopened; their
text goes to the knowledge base (``add_text``). With no roots configured the tool is refused altogether.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field

from node.mcp import outputs as o
from node.mcp.errors import NotAllowed
from node.mcp.registry import Caller, Tool

# Calls one control method in-process: (method name, params) -> result; its errors are NodeErrors.
Invoke = Callable[[str, dict[str, Any]], Awaitable[Any]]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class SendArgs(_Args):
    peer: str = Field(description="Recipient: peer ID (16 hex), fingerprint or unique prefix, or nickname.")
    text: str = Field(description="Message text, 1 to 255 UTF-8 bytes.")


class BroadcastArgs(_Args):
    text: str = Field(description="Public message text for every node of the mesh.")


class InboxArgs(_Args):
    limit: int = Field(50, ge=1, le=10_000, description="Most messages to return (newest; listed oldest first).")
    after_seq: int = Field(0, ge=0, description="Only messages with a sequence number above this.")


class MessageIdArgs(_Args):
    id: str = Field(description="A message ID returned by messages_send or messages_broadcast.")


class ConnectArgs(_Args):
    addr: str = Field(description="Multiaddr of the peer, ending in /p2p/<libp2p peer id>.")


RAG_PRIVATE_SCOPE = "rag:private"  # a remote (gateway) caller with it also sees unshared documents


class RagQueryArgs(_Args):
    text: str = Field(description="The question or keywords.")
    k: int = Field(10, ge=1, le=10_000, description="How many results.")
    mode: Literal["hybrid", "bm25", "dense"] | None = Field(None, description="Retrieval mode (default: rag.mode).")
    mesh: bool = Field(False, description="Also ask reachable peers (their shared documents), merged by trust.")


class RagAddArgs(_Args):
    paths: list[str] = Field(min_length=1, description="Files and folders to ingest, inside the configured roots.")
    shared: bool = Field(False, description="Mark the documents shared: peers may find them with a mesh query.")


class RagDocArgs(_Args):
    id: int | None = Field(None, description="Document id (doc_id in rag_query results).")
    source: str | None = Field(None, description="Source path or URI; a folder means every document under it.")


class RagFeedbackArgs(_Args):
    verdict: Literal["good", "bad"] = Field(description="good or bad: updates the trust of the result's source.")
    ref: str = Field(description="A result's ref (local result id, or <peer hex>:<claim> for a peer's result).")


# Ingests one text into the knowledge base: (source, text, title, mime, shared) -> the outcome (rag add_text).
AddText = Callable[[str, str, str, str, bool], Awaitable[dict[str, Any]]]


class ByteBudget:
    """Bytes of files rag_add holds at once, node-wide (``[mcp] rag_add_max_held_bytes``): each call reserves a
    file's size before reading it and releases it once the file is ingested; a call waits while the others hold the
    budget. ``held`` and ``peak`` are what is reserved now and the most ever."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.held = 0
        self.peak = 0
        self._freed = trio.Event()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        while self.held + n > self.total_bytes:
            await self._freed.wait()
        self.held += n
        self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            self.held -= n
            self._freed.set()
            self._freed = trio.Event()


async def rag_add_confined(
    p: RagAddArgs,
    *,
    rag_roots: Sequence[str],
    add_text: AddText | None,
    max_file_bytes: int,
    limiter: trio.CapacityLimiter,
    budget: ByteBudget,
) -> dict[str, Any]:
    """rag_add: walk the files through descriptors opened under the roots (node.mcp.confine) and ingest them one
    at a time: reserve its size in ``budget``, read, extract, drop the bytes, add the text, release; the same
    counts as ``rag.add``."""
    from node.mcp.confine import ConfinedWalk, read_found
    from node.rag.errors import ExtractError
    from node.rag.extract import SUPPORTED_SUFFIXES, extract_bytes

    if add_text is None:
        raise NotAllowed("this node runs no knowledge base (rag.enabled = false)")
    walk = await trio.to_thread.run_sync(
        lambda: ConfinedWalk(
            list(p.paths), list(rag_roots), suffixes=SUPPORTED_SUFFIXES, max_file_bytes=max_file_bytes
        ),
        limiter=limiter,
    )
    counts: dict[str, int] = {}
    outcomes: list[dict[str, Any]] = []
    files = total = 0
    it = iter(walk)
    try:
        while True:
            found = await trio.to_thread.run_sync(next, it, None, limiter=limiter, abandon_on_cancel=True)
            if found is None:
                break
            if found.size > budget.total_bytes:
                walk.error(found.shown, f"{found.size} bytes is over mcp.rag_add_max_held_bytes")
                continue
            async with budget.hold(found.size):
                data = await trio.to_thread.run_sync(read_found, found, limiter=limiter)
                if data is None:
                    walk.error(found.shown, "larger than rag.max_file_bytes")  # it grew while we read
                    continue
                files += 1
                total += len(data)
                try:
                    extracted = await trio.to_thread.run_sync(extract_bytes, data, found.shown, limiter=limiter)
                except ExtractError as exc:
                    data = None
                    outcome: dict[str, Any] = {"source": found.shown, "status": "failed", "detail": str(exc)}
                else:
                    data = None  # the text stays under this file's reservation until it is added
                    outcome = await add_text(found.shown, extracted.text, extracted.title, extracted.mime, p.shared)
                    del extracted
            status = str(outcome.get("status", "failed"))
            counts[status] = counts.get(status, 0) + 1
            if len(outcomes) < 100:
                outcomes.append(outcome)
    finally:
        walk.cancel.set()  # a walk abandoned in its worker thread stops at its next entry
        with contextlib.suppress(ValueError):  # "generator already executing": it closes when that thread ends
            it.close()  # type: ignore[attr-defined]
    out = {"files": files, "bytes": total, **counts, "outcomes": outcomes, "errors": walk.errors}
    if walk.errors_more:
        out["errors_more"] = walk.errors_more
    return out


def node_tools(
    invoke: Invoke,
    *,
    rag_roots: Sequence[str],
    add_text: AddText | None = None,
    max_file_bytes: int = 50 * 1024 * 1024,
    max_held_bytes: int = 64 * 1024 * 1024,
) -> list[Tool]:
    def passthrough(method: str, wrap: str | None = None) -> Callable[[Any, Caller], Awaitable[Any]]:
        async def handler(p: BaseModel, caller: Caller) -> Any:
            result = await invoke(method, p.model_dump(exclude_none=True))
            return {wrap: result} if wrap else result

        return handler

    read_limiter = trio.CapacityLimiter(1)  # rag_add reads and extracts files in one worker thread at a time
    budget = ByteBudget(max_held_bytes)  # file bytes all rag_add calls hold at once

    async def rag_add(p: RagAddArgs, caller: Caller) -> Any:
        return await rag_add_confined(
            p,
            rag_roots=rag_roots,
            add_text=add_text,
            max_file_bytes=max_file_bytes,
            limiter=read_limiter,
            budget=budget,
        )

    async def rag_query(p: RagQueryArgs, caller: Caller) -> Any:
        args = p.model_dump(exclude_none=True)
        if caller.transport == "gateway":
            if p.mesh:
                raise NotAllowed("mesh queries are not open to remote (gateway) clients; ask without mesh")
            # A remote client sees only shared documents unless its key explicitly holds rag:private.
            args["shared_only"] = not caller.has_scope(RAG_PRIVATE_SCOPE)
        return await invoke("rag.query", args)

    async def rag_feedback(p: RagFeedbackArgs, caller: Caller) -> Any:
        return await invoke("rag.feedback", {"verdict": p.verdict, "ref": p.ref})

    def t(
        name: str,
        desc: str,
        args: type[BaseModel],
        scope: str,
        handler: Any,
        *,
        out: type[BaseModel],
        write: bool = False,
        destructive: bool = False,
    ) -> Tool:
        return Tool(name, desc, args, scope, write, handler, output_model=out, destructive=destructive)

    return [
        t(
            "node_status",
            "This node: peer ID, nickname, uptime, transports, listen addresses, peers, counters.",
            NoArgs,
            "node:read",
            passthrough("node.status"),
            out=o.NodeStatusOut,
        ),
        t(
            "peers_list",
            "Peers this node knows: ID, nickname, fingerprint, reachable, transport, address, session.",
            NoArgs,
            "peers:read",
            passthrough("peers.list", "peers"),
            out=o.PeersOut,
        ),
        t(
            "routes_list",
            "The path table: destination, next hop, transport, hops, cost, how learned, expiry.",
            NoArgs,
            "peers:read",
            passthrough("routes.list", "routes"),
            out=o.RoutesOut,
        ),
        t(
            "betanet_connect",
            "Dial a peer over BetaNet (libp2p) and keep the link.",
            ConnectArgs,
            "peers:connect",
            passthrough("peers.connect"),
            out=o.ConnectOut,
            write=True,
        ),
        t(
            "messages_send",
            "Send an end-to-end encrypted private message to a peer; returns its ID (state pending "
            "until the delivery ack: see messages_status).",
            SendArgs,
            "messages:send",
            passthrough("messages.send"),
            out=o.SentOut,
            write=True,
        ),
        t(
            "messages_broadcast",
            "Send a signed public message to the whole mesh; returns its ID.",
            BroadcastArgs,
            "messages:send",
            passthrough("messages.broadcast"),
            out=o.BroadcastOut,
            write=True,
        ),
        t(
            "messages_status",
            "Delivery state of a message this node sent: pending, delivered or failed.",
            MessageIdArgs,
            "messages:status",
            passthrough("messages.status"),
            out=o.MessageStatusOut,
        ),
        t(
            "inbox_list",
            "Messages this node received: id, from, nickname, text, private, received_at_ms, hops.",
            InboxArgs,
            "messages:read",
            passthrough("inbox.list", "messages"),
            out=o.InboxOut,
        ),
        t(
            "rag_query",
            "Search the local knowledge base (BM25 + embeddings); with mesh, also peers' shared "
            "documents. Each result: ref, source, title, score, trust, snippet.",
            RagQueryArgs,
            "rag:read",
            rag_query,
            out=o.RagQueryOut,
        ),
        t(
            "rag_add",
            "Ingest files or folders (text, Markdown, HTML, PDF) into the knowledge base; only inside the "
            "folders the node's owner opened (mcp.rag_roots).",
            RagAddArgs,
            "rag:write",
            rag_add,
            out=o.RagAddOut,
            write=True,
        ),
        t(
            "rag_remove",
            "Remove a document (by id) or every document from a source.",
            RagDocArgs,
            "rag:write",
            passthrough("rag.remove"),
            out=o.RagRemoveOut,
            write=True,
            destructive=True,
        ),
        t(
            "rag_share",
            "Share a document (by id or source) with peers' mesh queries.",
            RagDocArgs,
            "rag:write",
            passthrough("rag.share"),
            out=o.RagShareOut,
            write=True,
        ),
        t(
            "rag_unshare",
            "Stop sharing a document (by id or source) with peers.",
            RagDocArgs,
            "rag:write",
            passthrough("rag.unshare"),
            out=o.RagShareOut,
            write=True,
        ),
        t(
            "rag_feedback",
            "Mark a result good or bad; the trust of its source changes.",
            RagFeedbackArgs,
            "rag:write",
            rag_feedback,
            out=o.RagFeedbackOut,
            write=True,
        ),
        t(
            "rag_stats",
            "Documents, chunks, vectors and model state of the knowledge base.",
            NoArgs,
            "rag:read",
            passthrough("rag.stats"),
            out=o.RagStatsOut,
        ),
    ]
