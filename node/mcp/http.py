"""Streamable HTTP MCP on loopback, served by the daemon (``[mcp] http_listen``): the SDK's Starlette app behind a
bearer-token check, served by hypercorn's trio worker inside the service's nursery.

The token lives in ``<data dir>/mcp/http.token`` (0600, created on first use; `village mcp token` prints it).
Requests without ``Authorization: Bearer <token>`` get 401. Working memory is per authenticated client (the token)
and ``Mcp-Session-Id`` (2025-11-25 sessions); stateless 2026-07-28 clients holding the token share its scratch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from mcp.server.subscriptions import SubscriptionBus

from node.httpserve import ConnectionCap, serve_capped, short_timeouts
from node.mcp.registry import Caller, Registry
from node.mcp.server import LocalBackend, build_server
from node.mcp.settings import McpSettings

log = logging.getLogger("village.mcp.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BearerAuth:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <token>``; lifespan events pass through."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                self.rejected += 1
                body = json.dumps({"error": "unauthorized: send Authorization: Bearer <village mcp token>"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="aivillage-mcp"'),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def rebinding_protection(host: str) -> Any:
    """Host/Origin checks (DNS rebinding) for the address we listen on. The SDK turns them on by itself only for
    127.0.0.1, localhost and ::1; any other loopback address (127.0.0.2, ...) is named here explicitly."""
    from mcp.server.transport_security import TransportSecuritySettings

    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(f"{n}:*" for n in names),
        allowed_origins=sorted(f"http://{n}:*" for n in names),
    )


def token_id(token: str) -> str:
    """A name for the bearer token (audit records, rate limits, working memory): not the token itself."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def caller_for(token: str) -> Callable[[Any], Caller]:
    """Callers of the loopback endpoint: the authenticated client (the bearer token it presented; the middleware
    refused any other) and its ``Mcp-Session-Id`` if it has one (2025-11-25 sessions)."""
    client = token_id(token)

    def caller(ctx: Any) -> Caller:
        request = getattr(ctx, "request", None)
        session = request.headers.get("mcp-session-id") if request is not None else None
        return Caller("http", client, session=session or None)

    return caller


async def serve_http(
    registry: Registry,
    settings: McpSettings,
    token: str,
    *,
    bus: SubscriptionBus | None = None,
    connections: ConnectionCap | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started(url)`` with the bound URL (port 0 picks one). At most
    ``mcp.http_max_connections`` connections at once (``connections``: the cap to use, default a new one)."""
    host, port = settings.host_port()
    server = build_server(LocalBackend(registry, caller_for(token)), bus=bus)
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        max_sessions=settings.http_max_sessions,
        host=host,
        transport_security=rebinding_protection(host),
    )
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    short_timeouts(config)
    cap = connections if connections is not None else ConnectionCap(settings.http_max_connections)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve_capped, BearerAuth(app, token), config, cap))
        url = binds[0] + "/mcp"
        log.info("MCP over Streamable HTTP at %s (bearer token in the data dir)", url)
        task_status.started(url)
