"""`village mcp`: an MCP server on stdin/stdout (launched by an MCP client) that forwards every list, call and
read to the running daemon over its control socket (``mcp.*`` methods). No daemon: a clear error, exit 1.

The stdio framing runs on the SDK's anyio streams under trio; each request takes one of a few control-socket
connections (a connection serves one request at a time).

Change notifications (``node://inbox``: a 2026-07-28 ``subscriptions/listen`` stream, or a 2025-11-25
``resources/subscribe``): while some client listens, :class:`Relay` holds one more connection with a running
``mcp.listen`` call and publishes each ``mcp.resource_updated`` it streams on the server's
:class:`~node.mcp.feed.ChangeFeed`; when nobody listens any more it closes that connection (the daemon drops the
subscription), and when `village mcp` exits the connection goes with it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

import trio
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server

from node.mcp.errors import ToolError, ToolNodeUnavailable
from node.mcp.feed import ChangeFeed
from node.mcp.server import CallResult, build_server

log = logging.getLogger("village.mcp.stdio")

MAX_CONNECTIONS = 4  # control-socket connections one `village mcp` keeps for concurrent requests
MAX_LINE_BYTES = 64 * 1024 * 1024


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.ids = itertools.count(1)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        req_id = next(self.ids)
        line = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}) + "\n"
        await self.stream.send_all(line.encode())
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                msg = json.loads(bytes(self.buf[:nl]))
                del self.buf[: nl + 1]
                if isinstance(msg, dict) and msg.get("id") in (req_id, None) and ("result" in msg or "error" in msg):
                    if "error" in msg:
                        raise ToolError(str(msg["error"].get("message", "the node refused the call")))
                    return msg["result"]
                continue
            if len(self.buf) > MAX_LINE_BYTES:
                raise ToolNodeUnavailable("the node sent an oversized reply")
            chunk = await self.stream.receive_some(65_536)
            if not chunk:
                raise ToolNodeUnavailable("the node closed the control connection (stopping?)")
            self.buf += chunk


class ControlPool:
    """A few async connections to the control socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[_Conn] = []
        self._slots = trio.Semaphore(MAX_CONNECTIONS)

    async def connect(self) -> _Conn:
        try:
            return _Conn(await trio.open_unix_socket(str(self.path)))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ToolNodeUnavailable(f"no node is running on {self.path} (start one with `village run`)") from None
        except PermissionError:
            raise ToolNodeUnavailable(
                f"permission denied on {self.path}: the control socket serves its owner"
            ) from None

    async def call(self, method: str, **params: Any) -> Any:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self.connect()
            try:
                result = await conn.call(method, params)
            except (
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                ValueError,
                ToolNodeUnavailable,
            ) as exc:
                await conn.stream.aclose()
                if isinstance(exc, ToolNodeUnavailable):
                    raise
                raise ToolNodeUnavailable(f"lost the node on {self.path}: {exc}") from None
            except BaseException:
                await conn.stream.aclose()
                raise
            self._idle.append(conn)
            return result

    async def aclose(self) -> None:
        for conn in self._idle:
            await conn.stream.aclose()
        self._idle.clear()


class RemoteBackend:
    def __init__(self, pool: ControlPool, client_id: str) -> None:
        self.pool = pool
        self.client_id = client_id

    async def tools(self, ctx: ServerRequestContext[Any]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.pool.call("mcp.tools", transport="stdio")
        return result

    async def call(self, ctx: ServerRequestContext[Any], name: str, args: dict[str, Any]) -> CallResult:
        r = await self.pool.call(
            "mcp.call", tool=name, arguments=json.dumps(args), client=self.client_id, transport="stdio"
        )
        return CallResult(r.get("structured"), str(r.get("text", "")), bool(r.get("is_error")))

    async def resources(self, ctx: ServerRequestContext[Any]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.pool.call("mcp.resources", transport="stdio")
        return result

    async def read(self, ctx: ServerRequestContext[Any], uri: str) -> tuple[str, str]:
        r = await self.pool.call("mcp.read", uri=uri, client=self.client_id, transport="stdio")
        return str(r["text"]), str(r.get("mimeType") or "application/json")


class Relay:
    """While the feed is wanted, stream ``mcp.listen`` from the daemon and publish what it says on the feed."""

    def __init__(self, pool: ControlPool, feed: ChangeFeed) -> None:
        self.pool = pool
        self.feed = feed
        self.connections = 0  # mcp.listen connections opened (tests read it)

    async def run(self) -> None:
        while True:
            await self.feed.wait_wanted(True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._cancel_when_unwanted, nursery.cancel_scope)
                try:
                    await self._follow()
                except ToolNodeUnavailable as exc:
                    log.warning("change notifications stopped: %s", exc)
                    self.feed.end_all()  # listening clients see their stream end and may listen again
                nursery.cancel_scope.cancel()
            await self.feed.wait_wanted(False)

    async def _cancel_when_unwanted(self, scope: trio.CancelScope) -> None:
        await self.feed.wait_wanted(False)
        scope.cancel()

    async def _follow(self) -> None:
        conn = await self.pool.connect()
        self.connections += 1
        async with conn.stream:
            try:
                await self._stream(conn)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
                raise ToolNodeUnavailable(f"lost the node on {self.pool.path}: {exc}") from None

    async def _stream(self, conn: _Conn) -> None:
        line = {"jsonrpc": "2.0", "id": 1, "method": "mcp.listen", "params": {}}
        await conn.stream.send_all(json.dumps(line).encode() + b"\n")
        while True:
            nl = conn.buf.find(b"\n")
            if nl < 0:
                if len(conn.buf) > MAX_LINE_BYTES:
                    raise ToolNodeUnavailable("the node sent an oversized line")
                chunk = await conn.stream.receive_some(65_536)
                if not chunk:
                    raise ToolNodeUnavailable("the node closed the subscription (stopping?)")
                conn.buf += chunk
                continue
            msg = json.loads(bytes(conn.buf[:nl]))
            del conn.buf[: nl + 1]
            if not isinstance(msg, dict):
                continue
            if "error" in msg or "result" in msg:
                body = msg.get("error") or msg.get("result")
                said = body.get("message") or body.get("ended") if isinstance(body, dict) else None
                raise ToolNodeUnavailable(str(said or "the node ended the subscription"))
            params = msg.get("params")
            if msg.get("method") == "mcp.resource_updated" and isinstance(params, dict):
                uri = params.get("uri")
                if isinstance(uri, str):
                    await self.feed.publish(uri)


async def serve_stdio(socket_path: Path) -> None:
    """Check the daemon answers, then serve MCP on stdin/stdout until the client closes stdin."""
    pool = ControlPool(socket_path)
    try:
        await pool.call("mcp.tools", transport="stdio")  # raises ToolNodeUnavailable / ToolError (MCP disabled)
        backend = RemoteBackend(pool, f"stdio-{os.getpid()}")

        async def readable(ctx: ServerRequestContext[Any]) -> set[str]:
            return {str(r["uri"]) for r in await backend.resources(ctx)}

        feed = ChangeFeed(readable)
        server = build_server(backend, feed=feed)
        async with stdio_server() as (read_stream, write_stream), trio.open_nursery() as nursery:
            nursery.start_soon(Relay(pool, feed).run)
            await server.run(read_stream, write_stream, server.create_initialization_options())
            nursery.cancel_scope.cancel()
    finally:
        await pool.aclose()
