"""Change notifications for MCP clients, in both protocol eras, from one place (:class:`ChangeFeed`):

- 2026-07-28 clients open a ``subscriptions/listen`` stream (the SDK's :class:`ListenHandler` over our bus);
- 2025-11-25 clients ``resources/subscribe`` to a URI and get ``notifications/resources/updated`` on their session.

``publish(uri)`` reaches both. The feed counts who listens (``wanted``), so a front end that must fetch events
from elsewhere (`village mcp`, from the daemon's control socket) holds that subscription only while some client
wants it. Bounded: listen streams and their backlogs (``MAX_LISTEN_STREAMS``, ``MAX_BUFFERED_EVENTS``), legacy
sessions (``MAX_LEGACY_SESSIONS``) and URIs per session (``MAX_URIS_PER_SESSION``); a session that cannot be
written to any more is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
import trio
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ServerEvent
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated

log = logging.getLogger("village.mcp")

MAX_LISTEN_STREAMS = 64  # concurrent subscriptions/listen streams of one server
MAX_BUFFERED_EVENTS = 256  # events queued for one listen stream before it is ended (the client re-listens)
MAX_LEGACY_SESSIONS = 256  # 2025-11-25 sessions with resource subscriptions
MAX_URIS_PER_SESSION = 32  # resource subscriptions one 2025-11-25 session may hold

# Which URIs a caller may subscribe to: the resources it may list (scope-filtered), by the request's context.
Readable = Callable[[ServerRequestContext[Any]], Awaitable[set[str]]]


class _CountingBus:
    """An in-memory bus that tells the feed how many listen streams are open."""

    def __init__(self, changed: Callable[[int], None]) -> None:
        self._inner = InMemorySubscriptionBus()
        self._changed = changed
        self.listeners = 0

    async def publish(self, event: ServerEvent) -> None:
        await self._inner.publish(event)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = self._inner.subscribe(listener)
        self.listeners += 1
        self._changed(self.listeners)
        done = False

        def off() -> None:
            nonlocal done
            if not done:
                done = True
                unsubscribe()
                self.listeners -= 1
                self._changed(self.listeners)

        return off


class ChangeFeed:
    def __init__(self, readable: Readable | None = None) -> None:
        self._readable = readable
        self._changed = trio.Event()
        self.bus = _CountingBus(lambda _n: self._poke())
        self.listen_handler = ListenHandler(
            self.bus, max_subscriptions=MAX_LISTEN_STREAMS, max_buffered_events=MAX_BUFFERED_EVENTS
        )
        self._legacy: dict[int, tuple[Any, set[str]]] = {}  # id(session) -> (session, subscribed URIs)
        self.published = 0
        self.dropped_sessions = 0

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def wanted(self) -> bool:
        """Some client listens (a listen stream is open, or a legacy session subscribed to something)."""
        return self.bus.listeners > 0 or bool(self._legacy)

    async def wait_wanted(self, wanted: bool = True) -> None:
        """Wait until :attr:`wanted` is ``wanted``."""
        while self.wanted is not wanted:
            await self._changed.wait()

    async def publish(self, uri: str) -> None:
        self.published += 1
        await self.bus.publish(ResourceUpdated(uri=uri))
        for key, (session, uris) in list(self._legacy.items()):
            if uri not in uris:
                continue
            try:
                await session.send_resource_updated(uri)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:  # the session is gone
                log.debug("dropping a 2025-11-25 session's subscriptions: %r", exc)
                self._legacy.pop(key, None)
                self.dropped_sessions += 1
                self._poke()

    def end_all(self) -> None:
        """End every listen stream (gracefully: the client sees the end and may listen again) and legacy
        subscription; used when the source of events is lost."""
        self.listen_handler.close()
        if self._legacy:
            self._legacy.clear()
            self._poke()

    async def on_subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        uri = str(params.uri)
        if self._readable is not None and uri not in await self._readable(ctx):
            raise MCPError(code=types.INVALID_PARAMS, message=f"no resource {uri!r} this client may read")
        key = id(ctx.session)
        entry = self._legacy.get(key)
        if entry is None:
            if len(self._legacy) >= MAX_LEGACY_SESSIONS:
                raise MCPError(code=types.INTERNAL_ERROR, message="too many subscribed sessions; try again later")
            entry = self._legacy[key] = (ctx.session, set())
            self._poke()
        if uri not in entry[1] and len(entry[1]) >= MAX_URIS_PER_SESSION:
            raise MCPError(code=types.INVALID_PARAMS, message=f"at most {MAX_URIS_PER_SESSION} subscriptions")
        entry[1].add(uri)
        return types.EmptyResult()

    async def on_unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        key = id(ctx.session)
        entry = self._legacy.get(key)
        if entry is not None:
            entry[1].discard(str(params.uri))
            if not entry[1]:
                del self._legacy[key]
                self._poke()
        return types.EmptyResult()
