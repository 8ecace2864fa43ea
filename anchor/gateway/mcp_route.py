"""``/mcp`` on the gateway: the node's MCP tools (Streamable HTTP, both protocol eras) for remote clients, with the
gateway's auth. A request needs a bearer token (401 without a valid one; the per-IP and per-key rate limits
apply) that holds at least one scope opening a tool (403 otherwise); each tool then requires its own scope,
mapped from the gateway's:

==================  ==========================================================
gateway scope       tools it opens
==================  ==========================================================
``node:read``       node_status, peers_list, routes_list (+ node://status, node://peers)
``messages:send``   messages_send, messages_broadcast, messages_status (never the inbox)
``events:read``     inbox_list, messages_status (+ node://inbox)
``rag:query``       rag_query (local shared documents only: no ``mesh``), rag_stats
``rag:private``     with rag:query, rag_query also over unshared documents
``agents:ask``      ask (agents narrowed to the key's scopes, no personal context), agents_list
``twin:owner``      twin_suggest, twin_status, agents_trace, and the personal context in ask
``vote:read``       vote_status, vote_evidence
``vote:propose``    vote_propose
``vote:cast``       vote_cast (the full proposal hash)
==================  ==========================================================

No gateway scope opens memory, scratch, rag writes or BetaNet dialing: those stay with the node's owner. State
changes are rate limited and audited by the node's tool registry, as for every transport, and, as every state
change through the gateway, written to the anchor's audit log (PostgreSQL) before they take effect: actor
``key:<API key id>``, action ``mcp.<tool>``, target ``mcp``, detail the SHA-256 and size of the arguments (never
the arguments). The state changes the agents make during the key's ``ask`` are written the same way (action
``mcp.<agent tool>``, e.g. ``mcp.mesh.broadcast``: node.twin.ask.RemoteTools passes the key's audit to the agents'
registry caller). If that row cannot be written the tool does not run (an MCP tool error). Reads (tools that do not
change state, resources) are not written there, as over REST; the node's local audit log has them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from anchor.gateway.auth import Principal
from anchor.gateway.errors import Forbidden, GatewayError, NodeUnavailable
from anchor.stores.errors import StoreUnavailable
from node.mcp.errors import McpLoadFailed
from node.mcp.plugin_service import running_service
from node.mcp.registry import Caller
from node.mcp.service import ASGI_CALLER_KEY

if TYPE_CHECKING:
    from anchor.gateway.app import GatewayContext

log = logging.getLogger("village.anchor.gateway")

MOUNT = "/mcp"
SCOPE_MAP: dict[str, frozenset[str]] = {
    "node:read": frozenset({"node:read", "peers:read"}),
    # Sending opens only sending and the delivery state of a message ID; the inbox (received messages, private
    # ones included) stays behind events:read, as over REST.
    "messages:send": frozenset({"messages:send", "messages:status"}),
    "events:read": frozenset({"messages:read", "messages:status"}),
    "rag:query": frozenset({"rag:read"}),
    "rag:private": frozenset({"rag:private"}),  # rag_query also over unshared documents (shared only without it)
    "agents:ask": frozenset({"agents:ask", "agents:read"}),
    # The owner's: the twin's tools, the traces (the user's requests) and the personal context of an ask.
    "twin:owner": frozenset({"twin:read", "twin:personal", "agents:trace"}),
    # Governance: reading, and (explicit admin grants) proposing and voting as this node.
    "vote:read": frozenset({"vote:read"}),
    "vote:propose": frozenset({"vote:propose"}),
    "vote:cast": frozenset({"vote:cast"}),
}


def tool_scopes(gateway_scopes: frozenset[str]) -> frozenset[str]:
    return frozenset().union(*(SCOPE_MAP.get(s, frozenset()) for s in gateway_scopes))


class McpMount:
    """ASGI wrapper: ``/mcp`` (and below) goes to the node's MCP app after auth; everything else to ``app``."""

    def __init__(
        self, app: ASGIApp, ctx: GatewayContext, authenticate: Callable[[Request], Awaitable[Principal]]
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == MOUNT or path.startswith(MOUNT + "/")):
            await self.app(scope, receive, send)
            return
        from anchor.gateway.app import error_response, unavailable_response

        try:
            principal = await self.authenticate(Request(scope, receive))
            scopes = tool_scopes(principal.scopes)
            if not scopes:
                raise Forbidden(
                    "this token has no scope that opens an MCP tool (node:read, messages:send, events:read, "
                    "rag:query, agents:ask, twin:owner or vote:*)"
                )
            try:
                service = await running_service(self.ctx.node)
            except McpLoadFailed as exc:  # a broken install: why is for the node's log only
                log.warning("gateway: %s", exc)
                raise NodeUnavailable("MCP could not be loaded on this node") from None
            inner = await service.mounted() if service is not None else None
            if inner is None:
                raise NodeUnavailable("MCP is not running on this node (mcp.enabled = false, or starting)")
        except GatewayError as exc:
            self.ctx.count(str(exc.status))
            await error_response(exc)(scope, receive, send)
            return
        except StoreUnavailable as exc:
            self.ctx.count("503")
            await unavailable_response(exc)(scope, receive, send)
            return
        child = dict(scope)
        child["path"] = "/"
        child["raw_path"] = b"/"
        child["root_path"] = scope.get("root_path", "") + MOUNT
        audit = self._auditor(principal)
        child[ASGI_CALLER_KEY] = Caller("gateway", f"key:{principal.key_id}", scopes, pre_audit=audit)
        await inner(child, receive, send)

    def _auditor(self, principal: Principal) -> Callable[[str, str, int], Awaitable[None]]:
        stores = self.ctx.stores
        actor = f"key:{principal.key_id}"

        async def pre_audit(tool: str, args_sha256: str, args_bytes: int) -> None:
            await stores.audit(actor, f"mcp.{tool}", "mcp", {"args_sha256": args_sha256, "args_bytes": args_bytes})

        return pre_audit
