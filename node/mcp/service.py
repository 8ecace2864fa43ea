"""The MCP service of a node: builds the tool registry (node tools, memory, scratch), opens persistent memory,
and serves Streamable HTTP on loopback when ``[mcp] http_listen`` is set.

Started in the node's root nursery (``await nursery.start(service.run, node)``). The twin and agents call
``service.registry.call(name, args, caller=Caller("local", ...))``; `village mcp` reaches the same registry
through the ``mcp.*`` control methods (node.mcp.rpc).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.errors import NodeError
from node.mcp.ask_tools import ask_tools
from node.mcp.audit import AuditLog
from node.mcp.errors import NotAllowed
from node.mcp.graph import Changes, GraphStore, KnowledgeGraph, SqliteStorage, Storage
from node.mcp.memory_tools import memory_resource, memory_tools, scratch_tools
from node.mcp.node_tools import node_tools
from node.mcp.registry import Caller, Registry, Resource
from node.mcp.settings import McpSettings
from node.mcp.vote_tools import vote_tools
from node.mcp.working import WorkingMemory

if TYPE_CHECKING:
    from node.control.rpc import Registry as ControlRegistry
    from node.node import Node

log = logging.getLogger("village.mcp")

INBOX_URI = "node://inbox"
INBOX_RESOURCE_LIMIT = 50  # newest messages shown by node://inbox
# Key in the ASGI scope where a front end that authenticates requests itself (the anchor gateway's /mcp mount)
# puts the request's Caller; a request without one gets no scopes (every tool refused).
ASGI_CALLER_KEY = "aivillage.mcp.caller"


def _asgi_caller(ctx: Any) -> Caller:
    request = getattr(ctx, "request", None)
    caller = request.scope.get(ASGI_CALLER_KEY) if request is not None else None
    if not isinstance(caller, Caller):
        return Caller("gateway", "unauthenticated", frozenset())
    session = request.headers.get("mcp-session-id") if request is not None else None
    return dataclasses.replace(caller, session=session) if session else caller


class McpService:
    name = "mcp"

    def __init__(self, settings: McpSettings, *, persistent: bool = True) -> None:
        self.settings = settings
        self.persistent = persistent
        self.node: Node | None = None
        self.registry: Registry | None = None
        self.graph: GraphStore | None = None
        self._other_memory: Callable[[], Any] | None = None  # the store the memory is not in (forget wipes it too)
        self.stale_checked = trio.Event()  # set once the start-up look at the other store is done
        self.working: WorkingMemory | None = None
        self.audit: AuditLog | None = None
        self.http_url: str | None = None
        self.http_connections: Any = None  # node.httpserve.ConnectionCap of the HTTP listener, once it runs
        # The Streamable HTTP app a gateway mounts (its session manager runs in this service's nursery).
        self.mounted_app: Any = None
        # Events for `subscriptions/listen` (2026-07-28 clients of the loopback HTTP endpoint), with http_listen.
        self.bus: Any = None
        self._nursery: trio.Nursery | None = None
        self._mount_lock = trio.Lock()
        self._control: ControlRegistry | None = None
        self._ready = trio.Event()
        self.listeners = 0  # open mcp.listen control calls (`village mcp` processes with a listening client)
        self._listeners_changed = trio.Event()

    def listener_count(self, delta: int) -> int:
        """Count an mcp.listen call starting (+1) or ending (-1); returns the new count."""
        self.listeners += delta
        self._listeners_changed.set()
        self._listeners_changed = trio.Event()
        return self.listeners

    async def wait_listeners(self, n: int) -> None:
        while self.listeners != n:
            await self._listeners_changed.wait()

    def data_dir(self) -> Path:
        assert self.node is not None
        return self.node.config.data_dir / "mcp"

    async def _invoke(self, method: str, params: dict[str, Any]) -> Any:
        """Call one of the node's control methods in-process (same validation as over the socket)."""
        node = self.node
        assert node is not None
        if self._control is None:
            if node.control_server is not None:
                self._control = node.control_server.registry
            else:
                from node.control.methods import build_registry

                self._control = build_registry(node)
        reg = self._control
        m = reg.lookup(method)

        async def no_notify(_method: str, _params: Any) -> None:
            return None

        return await m.handler(reg.bind_params(m, params), no_notify)

    def build(self, node: Node) -> Registry:
        """Build the registry and stores for ``node`` (run() does this; tests may call it directly)."""
        self.node = node
        s = self.settings
        d = self.data_dir() if self.persistent else None
        self.audit = AuditLog(d / "audit.jsonl" if d else None, max_bytes=s.audit_max_bytes, wall_ms=node.clock.wall_ms)
        storage = self._memory_storage(node)
        self._other_memory = self._other_memory_storage(node, d, active_is_local=storage is None)
        self.graph = GraphStore(
            d / "memory.sqlite3" if d else None,
            s,
            storage=storage,
            run_blocking=getattr(storage, "run_blocking", None),  # a networked store's deadline-bound runner
        )
        self.working = WorkingMemory(
            max_bytes_per_client=s.working_max_bytes_per_client,
            max_clients=s.working_max_clients,
            max_ttl_s=s.working_max_ttl_s,
        )
        reg = Registry(s, now=node.clock.now, audit=self.audit)
        from node.rag.settings import RagSection

        async def add_text(source: str, text: str, title: str, mime: str, shared: bool) -> dict[str, Any]:
            from node.rag.plugin import load_rag_service

            rag = await load_rag_service(node)
            if rag is None:
                raise NotAllowed("this node runs no knowledge base (rag.enabled = false, or it is starting)")
            return await rag.add_text(source, text, title=title, shared=shared, mime=mime)

        max_file_bytes = node.config.section(RagSection).max_file_bytes
        reg.extend(
            node_tools(
                self._invoke,
                rag_roots=s.rag_roots,
                add_text=add_text,
                max_file_bytes=max_file_bytes,
                max_held_bytes=s.rag_add_max_held_bytes,
            )
        )
        reg.extend(vote_tools(self._invoke))
        reg.extend(memory_tools(self.graph))
        reg.extend(scratch_tools(self.working, node.clock.now))
        reg.extend(ask_tools(self._invoke, node))  # ask, twin_*, agents_* (node.mcp.ask_tools)

        def via(method: str, **params: Any) -> Any:
            async def read(_: Caller) -> str:
                return json.dumps(await self._invoke(method, params), indent=2, ensure_ascii=False)

            return read

        reg.add_resource(memory_resource(self.graph))
        reg.add_resource(
            Resource(
                "node://status",
                "status",
                "Node status",
                "This node's identity, uptime, transports and peers.",
                "node:read",
                via("node.status"),
            )
        )
        reg.add_resource(
            Resource("node://peers", "peers", "Peers", "The peers this node knows.", "peers:read", via("peers.list"))
        )
        reg.add_resource(
            Resource(
                INBOX_URI,
                "inbox",
                "Inbox",
                f"The {INBOX_RESOURCE_LIMIT} newest received messages.",
                "messages:read",
                via("inbox.list", limit=INBOX_RESOURCE_LIMIT),
            )
        )
        self.registry = reg
        return reg

    def _memory_storage(self, node: Node) -> Callable[[], Storage] | None:
        """Persistent memory in a store a service of the node offers (``mcp_memory_storage(node)``: the anchor's
        Bolt graph store), else None (the SQLite file). Not for a non-persistent service (tests, simulations)."""
        if not self.persistent:
            return None
        for service in node.services:
            offer = getattr(service, "mcp_memory_storage", None)
            if callable(offer):
                factory: Callable[[], Storage] | None = offer(node)
                if factory is not None:
                    log.info("MCP memory lives in %s's store", getattr(service, "name", "a service"))
                    return factory
        return None

    def _other_memory_storage(self, node: Node, d: Path | None, *, active_is_local: bool) -> Callable[[], Any] | None:
        """The store the memory is *not* in (a copy an earlier setting left): the SQLite file when the memory is on
        a service's store, else that store (``mcp_memory_graph(node)``: the anchor's graph namespace), or None."""
        if not self.persistent or d is None:
            return None
        if not active_is_local:
            path = d / "memory.sqlite3"
            return (lambda: SqliteStorage(path)) if path.exists() else None
        for service in node.services:
            offer = getattr(service, "mcp_memory_graph", None)
            if callable(offer):
                with contextlib.suppress(NodeError):  # not configured or refused: nothing to look at
                    factory: Callable[[], Any] | None = offer(node)
                    if factory is not None:
                        return factory
        return None

    async def _on_other(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(storage)`` on the other store, in a worker thread (through its runner when it has one)."""
        factory = self._other_memory
        assert factory is not None

        def job() -> Any:
            storage = factory()
            try:
                return fn(storage)
            finally:
                storage.close()

        runner = getattr(factory, "run_blocking", None)
        if runner is not None:
            return await runner(job)
        return await trio.to_thread.run_sync(job)

    async def _warn_stale_copy(self) -> None:
        """One warning at start when the other store still holds this node's memory (``village memory forget``
        erases both)."""
        try:
            if self._other_memory is None:
                return
            rows = await self._on_other(lambda st: (st.name, st.count()))
        except NodeError as exc:
            log.info("MCP memory: the other store could not be checked for a stale copy: %s", exc)
            return
        finally:
            self.stale_checked.set()
        if rows[1]:
            log.warning(
                "MCP memory: the %s store still holds %d rows of this node's memory from an earlier "
                "[anchor] mcp_memory setting; they are not used. `village memory forget` erases both stores.",
                rows[0],
                rows[1],
            )

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The SDK (a second or two of imports on a small machine) is loaded only for what is configured: the
        # loopback HTTP endpoint here, the gateway's mount on its first request; `village mcp` needs neither.
        try:
            reg = self.build(node)  # inside: what it opened before a failure is closed below
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.settings.http_listen:
                    from mcp.server.subscriptions import InMemorySubscriptionBus

                    from node.mcp.http import serve_http
                    from node.tokenfile import ensure_token, token_path

                    self.bus = InMemorySubscriptionBus()
                    token = ensure_token(token_path(node.config.data_dir))
                    from node.httpserve import ConnectionCap

                    self.http_connections = ConnectionCap(self.settings.http_max_connections)
                    serve = partial(
                        serve_http, reg, self.settings, token, bus=self.bus, connections=self.http_connections
                    )
                    self.http_url = await nursery.start(serve)
                    nursery.start_soon(self._publish_inbox, node)
                self._ready.set()
                task_status.started()
                await self._warn_stale_copy()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            if self.audit is not None:
                self.audit.close()
            if self.graph is not None:
                with trio.CancelScope(shield=True):
                    await self.graph.aclose()

    async def mounted(self) -> Any:
        """The ASGI app a front end that authenticates callers itself mounts (the anchor gateway's ``/mcp``),
        started on first use; None when the service is not running."""
        async with self._mount_lock:
            if self.mounted_app is None and self._nursery is not None and self.registry is not None:
                await self._nursery.start(self._serve_mounted, self.registry)
        return self.mounted_app

    async def _publish_inbox(self, node: Node) -> None:
        """Tell listening clients that ``node://inbox`` changed, once per received message."""
        from mcp.shared.subscriptions import ResourceUpdated

        recv = node.subscribe_inbox()
        try:
            async for _ in recv:
                await self.bus.publish(ResourceUpdated(uri=INBOX_URI))
        finally:
            node.unsubscribe_inbox(recv)

    async def _serve_mounted(
        self, reg: Registry, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep an ASGI app for a front end that authenticates callers itself (the anchor gateway's ``/mcp``):
        callers come from the ASGI scope (``ASGI_CALLER_KEY``), so nothing is allowed without one."""
        from node.mcp.server import LocalBackend, build_server

        server = build_server(LocalBackend(reg, _asgi_caller), name="aivillage-gateway")
        # Not a loopback host: the front end's own auth guards it, and its clients come from anywhere.
        app = server.streamable_http_app(
            streamable_http_path="/", max_sessions=self.settings.http_max_sessions, host="0.0.0.0"
        )
        async with server.session_manager.run():
            self.mounted_app = app
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.mounted_app = None

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def export(self) -> dict[str, Any]:
        """The active store's knowledge graph, working memory, and under ``other`` the copy an earlier ``[anchor]
        mcp_memory`` setting left in the other store (its store name, knowledge graph and the rows it refused to
        load, e.g. rows sealed by a key this node no longer has; or why it could not be read); no ``other`` when
        there is no other store."""
        assert self.graph is not None and self.working is not None and self.node is not None
        out: dict[str, Any] = {
            "store": (await self.graph.run("stats"))["backend"],
            "knowledge_graph": await self.graph.run("read_graph"),
            "working_memory": self.working.export(self.node.clock.now()),
        }
        if self._other_memory is not None:
            settings = self.settings

            def read(st: Any) -> dict[str, Any]:
                kg = KnowledgeGraph(st, settings)
                return {"store": st.name, "knowledge_graph": kg.read_graph(), "refused": kg.refused}

            try:
                out["other"] = await self._on_other(read)
            except NodeError as exc:
                out["other"] = {"error": str(exc)}
        return out

    async def purge_legacy(self) -> dict[str, Any]:
        """Delete rows of an old format a store refuses to serve (the anchor graph's plaintext rows) from the active
        store and the other one; per store, the entities and relations deleted (or why it could not be reached)."""
        assert self.graph is not None
        out: dict[str, Any] = {"active": await self.graph.run("purge_legacy")}
        if self._other_memory is not None:

            def purge(st: Any) -> dict[str, int]:
                fn = getattr(st, "purge_legacy", None)
                return fn() if fn is not None else {"entities": 0, "relations": 0}

            try:
                out["other"] = await self._on_other(purge)
            except NodeError as exc:
                out["other"] = {"error": str(exc)}
        return out

    async def forget(self) -> dict[str, Any]:
        """Erase the active store, working memory and the other store's copy (``other``: its name and the rows
        erased, or why it could not be reached: the active store is erased all the same)."""
        assert self.graph is not None and self.working is not None
        out: dict[str, Any] = {
            "knowledge_graph": await self.graph.run("forget"),
            "working_memory": self.working.forget(),
        }
        if self._other_memory is not None:

            def wipe(st: Any) -> dict[str, Any]:
                rows = int(st.count())
                if rows:
                    st.apply(Changes(wipe=True))
                return {"store": st.name, "rows": rows}

            try:
                out["other"] = await self._on_other(wipe)
            except NodeError as exc:
                out["other"] = {"error": str(exc)}
        return out
