"""The control methods of the MCP layer: ``mcp.tools``, ``mcp.call``, ``mcp.resources``, ``mcp.read`` (how
`village mcp` reaches the daemon's registry), ``mcp.status``, ``memory.export``, ``memory.forget`` and
``memory.purge_legacy``.

``mcp.call`` answers a failed tool call as a result with ``is_error`` (the message for the MCP client), not as a
JSON-RPC error: only a broken request is one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.control.rpc import APP_ERROR, NoParams, Notify, RpcError, param
from node.control.rpc import Registry as ControlRegistry
from node.mcp.errors import ToolError
from node.mcp.settings import TRANSPORTS

if TYPE_CHECKING:  # the registry (pydantic) and the service load with the first MCP call, not with the daemon
    from node.mcp.registry import Caller
    from node.mcp.service import McpService

MAX_CLIENT_ID_CHARS = 128
MAX_LISTENERS = 16  # `mcp.listen` subscriptions held at once (each is one `village mcp` with a listening client)
LISTEN_NOTIFY_TIMEOUT_S = 10.0  # a listening client that takes no notification for this long is dropped
LISTEN_KEEPALIVE_S = 10.0  # idle time after which mcp.listen writes a keepalive: a departed client is noticed


@dataclass(frozen=True, slots=True)
class ToolsParams:
    transport: str = param("stdio", doc="Transport the tools are listed for (stdio, http, local).")


@dataclass(frozen=True, slots=True)
class CallParams:
    tool: str = param(doc="Tool name (see mcp.tools).")
    arguments: str = param("{}", doc="The tool's arguments as a JSON object (text).")
    client: str = param("cli", doc="Client id (working memory and rate limits are per client).")
    transport: str = param("stdio", doc="Transport the call came over (stdio, http, local).")


@dataclass(frozen=True, slots=True)
class ReadParams:
    uri: str = param(doc="Resource URI (see mcp.resources).")
    client: str = param("cli", doc="Client id.")
    transport: str = param("stdio", doc="Transport the read came over.")


@dataclass(frozen=True, slots=True)
class ListenParams:
    keepalive_s: float = param(
        LISTEN_KEEPALIVE_S, doc="Seconds of quiet after which an mcp.keepalive notification is sent (1 to 60)."
    )


def register(reg: ControlRegistry, get_service: Callable[[], Awaitable[McpService | None]]) -> None:
    import json

    async def svc() -> McpService:
        s = await get_service()
        if s is None or s.registry is None:
            raise RpcError(APP_ERROR, "MCP is disabled on this node (mcp.enabled = false)")
        return s

    def caller(transport: str, client: str) -> Caller:
        from node.mcp.registry import Caller

        if transport not in TRANSPORTS or transport in ("gateway", "agents"):
            raise RpcError(APP_ERROR, f"transport must be stdio, http or local, not {transport!r}")
        return Caller(transport, client[:MAX_CLIENT_ID_CHARS])

    async def tools(p: ToolsParams, notify: Notify) -> Any:
        registry = (await svc()).registry
        assert registry is not None
        return [t.describe() for t in registry.listed(caller(p.transport, "list"))]

    async def call(p: CallParams, notify: Notify) -> Any:
        registry = (await svc()).registry
        assert registry is not None
        try:
            args = json.loads(p.arguments)
        except ValueError as exc:
            return {"is_error": True, "text": f"arguments are not valid JSON: {exc}", "structured": None}
        try:
            out = await registry.call(p.tool, args, caller=caller(p.transport, p.client))
        except ToolError as exc:
            return {"is_error": True, "text": str(exc), "structured": None}
        return {"is_error": False, "text": out.text, "structured": out.structured}

    async def resources(p: ToolsParams, notify: Notify) -> Any:
        registry = (await svc()).registry
        assert registry is not None
        return [r.describe() for r in registry.listed_resources(caller(p.transport, "list"))]

    async def read(p: ReadParams, notify: Notify) -> Any:
        registry = (await svc()).registry
        assert registry is not None
        res = registry.resources.get(p.uri)
        try:
            text = await registry.read(p.uri, caller=caller(p.transport, p.client))
        except ToolError as exc:
            raise RpcError(APP_ERROR, str(exc)) from None
        return {"uri": p.uri, "text": text, "mimeType": res.mime_type if res else "application/json"}

    async def listen(p: ListenParams, notify: Notify) -> Any:
        import trio

        from node.mcp.service import INBOX_URI

        s = await svc()
        if not 1.0 <= p.keepalive_s <= 60.0:
            raise RpcError(APP_ERROR, "keepalive_s must be from 1 to 60")
        if s.listeners >= MAX_LISTENERS:
            raise RpcError(APP_ERROR, f"too many MCP listeners (at most {MAX_LISTENERS}); try again later")
        node = s.node
        assert node is not None
        s.listener_count(+1)
        recv = node.subscribe_inbox()  # bounded queue; a follower that falls behind is dropped (channel closed)

        async def send(name: str, payload: dict[str, Any]) -> None:
            """One notification, never cut by the keepalive timer (a write cancelled halfway would corrupt the
            stream's framing); a client that does not take it within LISTEN_NOTIFY_TIMEOUT_S ends the call and
            its connection (BrokenResourceError: the control server drops the connection), freeing its slot."""
            with trio.move_on_after(LISTEN_NOTIFY_TIMEOUT_S) as scope:
                await notify(name, payload)
            if scope.cancelled_caught:
                raise trio.BrokenResourceError(f"the listener took no notification for {LISTEN_NOTIFY_TIMEOUT_S:g} s")

        try:
            await send("mcp.listening", {"uris": [INBOX_URI]})
            while True:
                changed = False
                with trio.move_on_after(p.keepalive_s):  # the timer covers the wait only, never a write
                    try:
                        await recv.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return {"ended": "the node closed the subscription (stopping, or this client was too slow)"}
                    changed = True
                if changed:
                    await send("mcp.resource_updated", {"uri": INBOX_URI})
                else:
                    await send("mcp.keepalive", {})  # fails once the client has gone, which ends this call
        finally:
            s.listener_count(-1)
            node.unsubscribe_inbox(recv)

    async def status(_: NoParams, notify: Notify) -> Any:
        s = await svc()
        registry = s.registry
        assert registry is not None and s.audit is not None and s.graph is not None
        return {
            "tools": len(registry.tools),
            "calls": registry.calls,
            "failures": registry.failures,
            "audit_records": s.audit.records,
            "http_url": s.http_url,
            "listeners": s.listeners,
            "memory": await s.graph.run("stats"),
        }

    async def export(_: NoParams, notify: Notify) -> Any:
        return await (await svc()).export()

    async def forget(_: NoParams, notify: Notify) -> Any:
        return await (await svc()).forget()

    async def purge_legacy(_: NoParams, notify: Notify) -> Any:
        return await (await svc()).purge_legacy()

    reg.add("mcp.tools", ToolsParams, "The MCP tools a transport may call: name, schemas, scope, changesState.", tools)
    reg.add(
        "mcp.call",
        CallParams,
        "Call an MCP tool (scope, allow/deny, rate limit, audit as for any MCP client); returns is_error, text, "
        "structured.",
        call,
    )
    reg.add("mcp.resources", ToolsParams, "The MCP resources (uri, name, title, description, mimeType).", resources)
    reg.add("mcp.read", ReadParams, "Read an MCP resource; returns uri, text, mimeType.", read)
    reg.add(
        "mcp.listen",
        ListenParams,
        "Stream change notifications for MCP clients of `village mcp`: mcp.listening, then mcp.resource_updated "
        "{uri} per new inbox message (node://inbox) and mcp.keepalive when quiet; runs until the client goes.",
        listen,
    )
    reg.add(
        "mcp.status", NoParams, "MCP layer: tools, calls, failures by cause, audit records, HTTP URL, memory.", status
    )
    reg.add(
        "memory.export",
        NoParams,
        "Everything in persistent (knowledge graph) and working memory, as JSON; under `other` the copy an earlier "
        "[anchor] mcp_memory setting left in the other store.",
        export,
    )
    reg.add("memory.forget", NoParams, "Erase persistent and working memory; returns what was erased.", forget)
    reg.add(
        "memory.purge_legacy",
        NoParams,
        "Delete rows of an old format a store refuses to serve (the anchor graph store's plaintext rows); returns "
        "the entities and relations deleted per store.",
        purge_legacy,
    )
