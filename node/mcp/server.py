"""The MCP face of a tool registry: a low-level ``mcp.server.Server`` (official SDK) whose tools and resources come
from a :class:`Backend` — the registry itself inside the daemon (:class:`LocalBackend`, Streamable HTTP), or the
daemon's control socket (``node.mcp.stdio.RemoteBackend``, `village mcp`).

The SDK serves both protocol eras (2025-11-25 with ``initialize``; 2026-07-28 stateless with
``server/discover``). Every failure of a call reaches the client as an MCP tool error (``isError``) with a message,
never a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ListenHandler, SubscriptionBus
from mcp.shared.exceptions import MCPError

from node import __version__
from node.mcp.errors import ToolError
from node.mcp.registry import Registry

if TYPE_CHECKING:
    from node.mcp.feed import ChangeFeed

log = logging.getLogger("village.mcp")

INSTRUCTIONS = (
    "Tools of an AIVillage node: mesh messaging (messages_send, messages_broadcast, inbox_list, messages_status), "
    "peers and routes, the local knowledge base (rag_*), a persistent knowledge-graph memory (create_entities, "
    "search_nodes, ...) and per-client scratch (scratch_*)."
)


@dataclass(frozen=True, slots=True)
class CallResult:
    structured: dict[str, Any] | None
    text: str
    is_error: bool


class Backend(Protocol):
    async def tools(self, ctx: ServerRequestContext[Any]) -> list[dict[str, Any]]: ...
    async def call(self, ctx: ServerRequestContext[Any], name: str, args: dict[str, Any]) -> CallResult: ...
    async def resources(self, ctx: ServerRequestContext[Any]) -> list[dict[str, Any]]: ...
    async def read(self, ctx: ServerRequestContext[Any], uri: str) -> tuple[str, str]: ...


class LocalBackend:
    """The registry in this process; ``caller_of`` says who is calling (from the request, e.g. an HTTP header)."""

    def __init__(self, registry: Registry, caller_of: Any) -> None:
        self.registry = registry
        self.caller_of = caller_of

    async def tools(self, ctx: ServerRequestContext[Any]) -> list[dict[str, Any]]:
        return [t.describe() for t in self.registry.listed(self.caller_of(ctx))]

    async def call(self, ctx: ServerRequestContext[Any], name: str, args: dict[str, Any]) -> CallResult:
        try:
            out = await self.registry.call(name, args, caller=self.caller_of(ctx))
        except ToolError as exc:
            return CallResult(None, str(exc), True)
        return CallResult(out.structured, out.text, False)

    async def resources(self, ctx: ServerRequestContext[Any]) -> list[dict[str, Any]]:
        return [r.describe() for r in self.registry.listed_resources(self.caller_of(ctx))]

    async def read(self, ctx: ServerRequestContext[Any], uri: str) -> tuple[str, str]:
        res = self.registry.resources.get(uri)
        text = await self.registry.read(uri, caller=self.caller_of(ctx))
        return text, res.mime_type if res is not None else "application/json"


def _tool(d: dict[str, Any]) -> types.Tool:
    ann = d.get("annotations") or {}
    return types.Tool(
        name=d["name"],
        title=d.get("title"),
        description=d.get("description"),
        input_schema=d["inputSchema"],
        output_schema=d.get("outputSchema"),
        annotations=types.ToolAnnotations(
            read_only_hint=ann.get("readOnlyHint"),
            destructive_hint=ann.get("destructiveHint"),
            idempotent_hint=ann.get("idempotentHint"),
            open_world_hint=ann.get("openWorldHint"),
        ),
    )


def build_server(
    backend: Backend,
    *,
    name: str = "aivillage-node",
    bus: SubscriptionBus | None = None,
    feed: ChangeFeed | None = None,
) -> Server[Any]:
    """The MCP server for ``backend``; with ``bus``, 2026-07-28 clients may ``subscriptions/listen`` to the events
    published on it (``node://inbox`` updates); with ``feed`` (instead), they may, and 2025-11-25 clients may
    ``resources/subscribe`` too (node.mcp.feed)."""
    schemas: dict[str, dict[str, Any]] = {}  # input schema by tool name, from the last listing

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        described = await backend.tools(ctx)
        schemas.update({d["name"]: d["inputSchema"] for d in described})
        return types.ListToolsResult(tools=[_tool(d) for d in described])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            res = await backend.call(ctx, params.name, dict(params.arguments or {}))
        except ToolError as exc:
            res = CallResult(None, str(exc), True)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=res.text)],
            structured_content=res.structured,
            is_error=res.is_error,
        )

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri=d["uri"],
                    name=d["name"],
                    title=d.get("title"),
                    description=d.get("description"),
                    mime_type=d.get("mimeType"),
                )
                for d in await backend.resources(ctx)
            ]
        )

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            text, mime = await backend.read(ctx, uri)
        except ToolError as exc:
            raise MCPError(code=types.INVALID_PARAMS, message=str(exc)) from None
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type=mime, text=text)])

    listen = feed.listen_handler if feed is not None else ListenHandler(bus) if bus is not None else None
    return Server(
        name,
        version=__version__,
        instructions=INSTRUCTIONS,
        get_tool_input_schema=schemas.get,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_subscriptions_listen=listen,
        on_subscribe_resource=feed.on_subscribe if feed is not None else None,
        on_unsubscribe_resource=feed.on_unsubscribe if feed is not None else None,
    )
