"""The node's side of the app channel (node.routing.app) and its config-change hooks, composed into :class:`Node`.

:class:`AppRequests` serves peers' app requests with the handler a service registered for each service name (at most
``APP_MAX_RUNNING_HANDLERS`` at once, ``APP_MAX_RUNNING_PER_PEER`` per peer, each within ``APP_HANDLER_TIMEOUT_S``)
and makes the node's own requests (resent every ``APP_RESEND_INTERVAL_S`` until answered or timed out).
:class:`ConfigListeners` tells the parts that read the configuration only at start about a certified change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from node.errors import MeshError, NodeError
from node.routing.app import AppRemoteError, AppRequestReceived, AppResponseReceived, AppTimeout

if TYPE_CHECKING:
    from node.routing.mesh import MeshCore
    from node.settings import Config

log = logging.getLogger("village.node")

APP_MAX_RUNNING_HANDLERS = 16  # app requests served at once; more are answered "busy"
APP_MAX_RUNNING_PER_PEER = 4  # ... and at most this many for one peer, so one peer cannot take every slot
APP_HANDLER_TIMEOUT_S = 30.0  # an app handler running longer is cancelled and its request answered an error
APP_RESEND_INTERVAL_S = 1.0  # an unanswered app request is sent again this often until its timeout

# An app-channel handler: (the requesting peer's ID, request body) -> response body. A NodeError it raises is
# answered to the peer as an error with its message; anything else as "internal error" (and logged).
AppHandler = Callable[[bytes, bytes], Awaitable[bytes]]


@dataclass
class _AppWaiter:
    done: trio.Event
    answer: AppResponseReceived | None = None


class ConfigListeners:
    """Listeners of the running configuration (``Node.on_config_change``), called in order on each change."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Config], None]] = []

    def add(self, listener: Callable[[Config], None]) -> None:
        self._listeners.append(listener)

    def changed(self, config: Config) -> None:
        for listener in self._listeners:
            listener(config)


class AppRequests:
    """App requests to and from peers over the node's mesh core. ``core`` gives the running core, ``flush`` sends
    what it queued, ``now`` is the node's clock and ``nursery`` the node's root nursery (None when not running)."""

    def __init__(
        self,
        *,
        core: Callable[[], MeshCore],
        flush: Callable[[], object],
        now: Callable[[], float],
        nursery: Callable[[], trio.Nursery | None],
    ) -> None:
        self._core = core
        self._flush = flush
        self._now = now
        self._nursery = nursery
        self._handlers: dict[str, AppHandler] = {}
        self._waiters: dict[bytes, _AppWaiter] = {}
        self._running: dict[bytes, int] = {}  # peer -> app requests of it being served

    def register(self, service: str, handler: AppHandler) -> None:
        self._handlers[service] = handler

    async def request(self, peer: bytes, service: str, body: bytes, *, timeout_s: float) -> bytes:
        """See :meth:`node.node.Node.app_request`."""
        core = self._core()
        request_id, plaintext = core.app.request(peer, service, body)
        waiter = _AppWaiter(trio.Event())
        self._waiters[request_id] = waiter
        timed_out = False  # only a wait that ran out counts as a timeout (not an error or a cancelled caller)
        try:
            with trio.move_on_after(timeout_s) as deadline:
                while True:
                    core.send_app(peer, plaintext, self._now())
                    self._flush()
                    with trio.move_on_after(APP_RESEND_INTERVAL_S):
                        await waiter.done.wait()
                    if waiter.done.is_set():
                        break
                    core.app.resend(request_id)
            timed_out = deadline.cancelled_caught
        finally:
            del self._waiters[request_id]
            core.app.forget(request_id, timed_out=timed_out)
        if waiter.answer is None:
            raise AppTimeout(f"peer {peer.hex()} did not answer {service!r} within {timeout_s:g} s")
        if waiter.answer.error is not None:
            raise AppRemoteError(f"peer {peer.hex()} answered {service!r} with an error: {waiter.answer.error}")
        return waiter.answer.body

    def on_response(self, event: AppResponseReceived) -> None:
        waiter = self._waiters.get(event.request_id)
        if waiter is not None:
            waiter.answer = event
            waiter.done.set()

    def on_request(self, event: AppRequestReceived) -> None:
        core = self._core()
        handler = self._handlers.get(event.service)
        nursery = self._nursery()
        if handler is None:
            core.app.counters.no_handler += 1
            self._answer(
                event, core.app.error(event.peer_id, event.request_id, f"no handler for service {event.service!r}")
            )
        elif (
            sum(self._running.values()) >= APP_MAX_RUNNING_HANDLERS
            or self._running.get(event.peer_id, 0) >= APP_MAX_RUNNING_PER_PEER
            or nursery is None
        ):
            core.app.counters.busy += 1
            self._answer(event, core.app.error(event.peer_id, event.request_id, "busy: too many requests at once"))
        else:
            self._running[event.peer_id] = self._running.get(event.peer_id, 0) + 1
            nursery.start_soon(self._serve, handler, event)

    async def _serve(self, handler: AppHandler, event: AppRequestReceived) -> None:
        core = self._core()
        try:
            reply: bytes | None = None
            with trio.move_on_after(APP_HANDLER_TIMEOUT_S):
                try:
                    reply = core.app.response(event.peer_id, event.request_id, await handler(event.peer_id, event.body))
                except NodeError as exc:
                    reply = core.app.error(event.peer_id, event.request_id, str(exc))
                except Exception:  # a supervised task ends here: log it, answer the peer, keep the node up
                    log.exception("app handler for %r failed (request from %s)", event.service, event.peer_id.hex())
                    reply = core.app.error(event.peer_id, event.request_id, "internal error")
            if reply is None:
                reply = core.app.error(
                    event.peer_id, event.request_id, f"handler took longer than {APP_HANDLER_TIMEOUT_S:g} s"
                )
            self._answer(event, reply)
        finally:
            left = self._running.pop(event.peer_id) - 1
            if left:
                self._running[event.peer_id] = left

    def _answer(self, event: AppRequestReceived, plaintext: bytes) -> None:
        try:
            self._core().send_app(event.peer_id, plaintext, self._now())
        except MeshError as exc:
            log.warning("app answer to %s not sent: %s", event.peer_id.hex(), exc)
            return
        self._flush()
