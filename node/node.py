"""The Node: the root nursery that owns every subsystem of one daemon.

``await nursery.start(node.run)`` brings up, in order: the inbox store, the control socket (if enabled), the
link acceptor, every transport and the mesh timer; it then reports readiness (log line, ``READY=1`` to
systemd). Each link gets a reader task (feeding :class:`~node.routing.mesh.MeshCore`) and a writer task
draining a bounded per-link queue, so one slow link never stalls the others.

:meth:`Node.shutdown` drains: a signed leave goes out on every link, queued frames get up to
``node.shutdown_deadline_s`` to leave, then everything is cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from node.clock import Clock
from node.control.methods import build_registry
from node.control.server import ControlServer
from node.errors import MeshError
from node.identity import Identity, fingerprint_from_noise_key
from node.inbox import Inbox, InboxError, InboxMessage
from node.logs import LOG_LINK
from node.node_app import AppHandler, AppRequests, ConfigListeners
from node.outbox import Outbox, OutboxError
from node.pinfile import PinFile, PinFileError
from node.routing.app import AppRequestReceived, AppResponseReceived
from node.routing.mesh import (
    DeliveryAcked,
    EnvelopeSealed,
    MeshCore,
    MeshEvent,
    MessageReceived,
    PeerAnnounced,
    PeerLeft,
    PrivateFailed,
)
from node.routing.names import describe
from node.routing.pins import PinChange
from node.routing.timers import TIMER_FAILURE_PAUSE_S
from node.settings import Config
from node.systemd import sd_notify, watchdog_interval_s, watchdog_pings
from node.transports.base import FrameSizeError, Link, LinkClosed, Transport
from node.transports.sendqueue import LinkSendQueue

if TYPE_CHECKING:
    from node.plugin import Plugin, Service

log = logging.getLogger("village.node")

LINK_SEND_QUEUE_FRAMES = 256  # frames queued per link before new ones are dropped (and counted); bytes: config
NEW_LINK_QUEUE = 64  # links handed over by transports, waiting for a reader task
SENT_MESSAGES_KEPT = 1000  # outgoing messages whose state (pending/delivered/failed) stays queryable


@dataclass
class OutgoingMessage:
    id: str
    to: str | None  # peer ID hex, None for a broadcast
    text: str
    private: bool
    state: str  # "sent" (broadcast), "pending", "delivered", "failed"
    created_at_ms: int
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "to": self.to,
            "text": self.text,
            "private": self.private,
            "state": self.state,
            "created_at_ms": self.created_at_ms,
            "detail": self.detail,
        }


class Node:
    def __init__(
        self,
        config: Config,
        identity: Identity,
        *,
        transports: Sequence[Transport] = (),
        clock: Clock | None = None,
        control: bool = True,
        persistent_inbox: bool = True,
        rng: random.Random | None = None,
        services: Sequence[Service] = (),
        plugins: Sequence[Plugin] = (),
    ) -> None:
        self.config = config
        self.identity = identity
        self.transports = list(transports)
        # Started in this order in the root nursery, after the control socket and before the transports.
        self.services: list[Service] = list(services)
        self.plugins = tuple(plugins)  # their `rpc` hooks add control methods (node.control.methods)
        self.clock = clock or Clock()
        self.nickname = config.node.nickname or f"village-{identity.peer_id.hex()[:4]}"
        self._rng = rng or random.Random()
        self._control_enabled = control
        self._persistent_inbox = persistent_inbox
        self.core: MeshCore | None = None
        self.inbox: Inbox | None = None
        self.outbox: Outbox | None = None
        self.links: dict[str, Link] = {}
        self._queues: dict[str, LinkSendQueue] = {}
        self._followers: list[trio.MemorySendChannel[InboxMessage]] = []
        # Each subscription's send end by its receive end, so unsubscribing drops it at once.
        self._follower_sends: dict[trio.MemoryReceiveChannel[InboxMessage], trio.MemorySendChannel[InboxMessage]] = {}
        self.outgoing: OrderedDict[str, OutgoingMessage] = OrderedDict()
        self.dropped_link_frames = 0
        self.inbox_store_failed = 0  # messages the inbox could not store (their acks withheld)
        self._overflowing: set[str] = set()  # links already warned about a full send queue
        self._nursery: trio.Nursery | None = None
        self._rearm = trio.Event()
        self._changed = trio.Event()
        self.stopped = trio.Event()  # set once run() has closed its stores (state.db, the inbox) on the way out
        # Pin changes the core reported, written to state.db off the event loop by _pin_writer (one transaction).
        self._pin_backlog: list[PinChange] = []
        self._pins_dirty = trio.Event()
        self._pin_limiter = trio.CapacityLimiter(1)  # one writer at a time (sqlite connection, in order)
        self._stop_requested = trio.Event()
        self.started_at: float | None = None
        self.control_server: ControlServer | None = None
        self._ready = trio.Event()
        # Hooks services register (the mailbox client): called on every link up / every envelope the core seals.
        self._link_up_listeners: list[Callable[[str], None]] = []
        self._services_started_listeners: list[Callable[[], None]] = []
        self._config_listeners = ConfigListeners()
        self._sealed_listeners: list[Callable[[bytes], None]] = []
        self._apps = AppRequests(
            core=self._require_core, flush=self._flush, now=lambda: self.clock.now(), nursery=lambda: self._nursery
        )

    # ------------------------------------------------------------ lifecycle
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        now = self.clock.now()
        self.pin_file = PinFile(cfg.data_dir / "state.db" if self._persistent_inbox else None)
        self.core = MeshCore(
            identity=self.identity,
            settings=cfg.mesh,
            limits=cfg.wire,
            nickname=self.nickname,
            wall_offset_ms=self.clock.wall_ms() - now * 1000.0,
            rng=self._rng,
            seal_for_mailbox=bool(self._sealed_listeners),
            initial_pins=self.pin_file.load(),  # identity bindings proven by handshakes (node.routing.pins)
        )
        state_db = cfg.data_dir / "state.db" if self._persistent_inbox else None
        self.inbox = Inbox(state_db, max_messages=cfg.mesh.inbox_max_messages)
        self.outbox = Outbox(state_db)
        try:
            self._restore_outbox()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._control_enabled:
                    self.control_server = ControlServer(
                        cfg.socket_path,
                        build_registry(self),
                        max_request_bytes=cfg.control.max_request_bytes,
                        max_connections=cfg.control.max_connections,
                    )
                    await nursery.start(self.control_server.run)
                link_send, link_recv = trio.open_memory_channel[Link](NEW_LINK_QUEUE)
                nursery.start_soon(self._accept_links, link_recv)
                for service in self.services:  # e.g. a BetaNet protocol handler is registered before transports run
                    await nursery.start(service.run, self)
                for started in self._services_started_listeners:  # no transport runs yet: no peer's input
                    started()
                for transport in self.transports:
                    await nursery.start(transport.run, link_send)
                nursery.start_soon(self._timer_task)
                nursery.start_soon(self._pin_writer)
                self.started_at = self.clock.now()
                log.info(
                    "node ready: peer %s (%s), transports: %s, control socket: %s",
                    self.identity.peer_id_hex,
                    self.nickname,
                    ", ".join(t.name for t in self.transports) or "none",
                    cfg.socket_path if self._control_enabled else "off",
                )
                sd_notify("READY=1")
                if (watchdog_s := watchdog_interval_s(os.environ, os.getpid())) is not None:
                    nursery.start_soon(watchdog_pings, watchdog_s)  # WatchdogSec= in the unit (node/systemd.py)
                self._ready.set()
                task_status.started()
                await self._stop_requested.wait()
                await self._drain()
                nursery.cancel_scope.cancel()
        finally:
            for ch in self._followers:
                ch.close()
            self.inbox.close()
            self.outbox.close()
            self._write_pins(self._take_pin_backlog())  # what the writer had not written yet
            self.pin_file.close()
            self.stopped.set()

    # ------------------------------------------------------------ hooks for services
    @property
    def persistent(self) -> bool:
        """Whether this node keeps its state on disk (False: in-memory inbox, outbox and knowledge base; tests)."""
        return self._persistent_inbox

    def on_config_change(self, listener: Callable[[Config], None]) -> None:
        """Call ``listener(new_config)`` whenever :meth:`set_config` changes the running configuration."""
        self._config_listeners.add(listener)

    def set_config(self, config: Config) -> None:
        """Replace the running configuration (a certified change) and tell the parts that read it only at start."""
        self.config = config
        self._config_listeners.changed(config)

    def on_services_started(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once :meth:`run` started every service, before it starts the transports (the daemon
        freezes the start-up heap there: node/heap.py)."""
        self._services_started_listeners.append(listener)

    def on_link_up(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(remote_address)`` whenever a link comes up."""
        self._link_up_listeners.append(listener)

    def on_envelope_sealed(self, listener: Callable[[bytes], None]) -> None:
        """Hand ``listener`` every courier envelope the mesh core seals for a peer nobody can reach (for a mailbox
        anchor); registering one makes the core seal held messages even with ``mesh.courier_copies = 0``."""
        self._sealed_listeners.append(listener)
        if self.core is not None:
            self.core.seal_held_for_mailbox()

    async def wait_ready(self) -> None:
        """Return once the node is up (transports started, readiness reported)."""
        await self._ready.wait()

    def deliver_mailbox_envelope(self, envelope: bytes) -> bool:
        """An envelope fetched from an anchor: opened into the inbox (committed on return). False if unopenable;
        :class:`InboxError` if it could not be stored (then the anchor must keep it: no mailbox ack)."""
        opened = self._require_core().receive_mailbox_envelope(envelope, self.clock.now())
        if not self._flush():
            raise InboxError("a mailbox envelope could not be stored in the inbox; it stays at the anchor")
        return opened

    def _restore_outbox(self) -> None:
        """Queue again every private message accepted before the last stop (or crash) and not yet settled."""
        core, outbox = self._require_core(), self._require_outbox()
        now, wall = self.clock.now(), self.clock.wall_ms()
        restored = 0
        for entry in outbox.pending():
            created = now - max(0.0, (wall - entry.created_at_ms) / 1000.0)
            try:
                core.queue_private(entry.id, bytes.fromhex(entry.peer), entry.text, now, created=created)
            except MeshError as exc:  # e.g. a queue limit lowered in the config: keep it for a later start
                log.warning("outbox: message %s stays on disk, not queued now: %s", entry.id, exc)
                continue
            self._remember_outgoing(
                OutgoingMessage(entry.id, entry.peer, entry.text, True, "pending", entry.created_at_ms)
            )
            restored += 1
        if restored:
            log.info("outbox: %d private message(s) from before the restart queued again", restored)

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def request_stop(self) -> None:
        """Begin a graceful stop: :meth:`run` drains and returns."""
        self._stop_requested.set()

    def service(self, name: str) -> Service | None:
        """The service named ``name`` (a plugin's), if this node runs one."""
        return next((s for s in self.services if s.name == name), None)

    async def wait_stop_requested(self) -> None:
        """Return once a stop was requested (front ends such as the anchor's gateway stop taking work then)."""
        await self._stop_requested.wait()

    async def _drain(self) -> None:
        sd_notify("STOPPING=1")
        log.info(
            "stopping: sending leave to %d link(s), draining for up to %.1f s",
            len(self.links),
            self.config.node.shutdown_deadline_s,
        )
        core = self._require_core()
        for ch in self._followers:
            ch.close()  # `inbox --follow` calls end with a final response
        self._followers.clear()
        core.leave(self.clock.now())
        self._flush()
        with trio.move_on_after(self.config.node.shutdown_deadline_s) as scope:
            for q in list(self._queues.values()):
                q.close()  # writers finish what is queued, then end
            while self._queues:
                await self._wait_changed()
            if self.control_server is not None:
                await self.control_server.wait_quiet()  # e.g. the reply to `village stop`
        if scope.cancelled_caught:
            log.warning("shutdown deadline reached with %d link queue(s) undrained", len(self._queues))

    # ------------------------------------------------------------ links
    async def _accept_links(self, link_recv: trio.MemoryReceiveChannel[Link]) -> None:
        assert self._nursery is not None
        async for link in link_recv:
            self._nursery.start_soon(self._serve_link, link)

    async def _serve_link(self, link: Link) -> None:
        core = self._require_core()
        link_id = link.link_id
        queue = LinkSendQueue(LINK_SEND_QUEUE_FRAMES, self.config.node.link_send_queue_bytes)
        self.links[link_id] = link
        self._queues[link_id] = queue
        LOG_LINK.set(link_id)  # this task's log lines (and its children's) name the link (node/logs.py)
        log.info("link up: %s to %s (mtu %d)", link_id, link.remote_address, link.mtu)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._link_writer, link, queue, nursery.cancel_scope)
                core.link_up(
                    link_id, link.mtu, self.clock.now(), link.authenticated_signing_key, rate_key=link.rate_key
                )
                self._flush()
                for listener in self._link_up_listeners:
                    listener(link.remote_address)
                while True:
                    try:
                        frame = await link.receive()
                    except LinkClosed:
                        break
                    core.receive_frame(link_id, frame, self.clock.now())
                    self._flush()
                nursery.cancel_scope.cancel()
        finally:
            self._queues.pop(link_id, None)
            self.links.pop(link_id, None)
            self._overflowing.discard(link_id)
            core.link_down(link_id, self.clock.now())
            self._flush()
            with trio.CancelScope(shield=True):
                await link.aclose()
            log.info("link down: %s", link_id)

    async def _link_writer(self, link: Link, frames: LinkSendQueue, link_scope: trio.CancelScope) -> None:
        try:
            async for frame in frames:
                try:
                    await link.send(frame)
                except FrameSizeError as exc:
                    log.error("dropped an outgoing frame on %s: %s", link.link_id, exc)
        except LinkClosed:
            pass
        # The link died, or a drain closed the queue after its last frame was sent: either way it is done.
        self._queues.pop(link.link_id, None)
        self._notify_changed()
        link_scope.cancel()

    # ------------------------------------------------------------ core plumbing
    def _require_core(self) -> MeshCore:
        if self.core is None:
            raise MeshError("the node is not running")
        return self.core

    def _flush(self) -> bool:
        """Hand the core's events and frames on. Durable receipt: the events go first, so a delivered message's inbox
        row is committed before the frames of the same step (its delivery ack among them) leave; if a row could
        not be stored, none of them leave (returns False) and the core forgets it delivered the message, so the
        sender's resend is delivered (and acked) again."""
        core = self._require_core()
        frames = core.frames_to_send()
        failed_before = self.inbox_store_failed  # (a counter: a flush nested in an event's handling counts too)
        while (event := core.next_event()) is not None:
            self._on_event(event)
        stored = self.inbox_store_failed == failed_before
        if not stored:
            core.output.hoparq.forget_frames(frames)  # nor by a hop retransmission
            frames = []
        for link_id, frame in frames:
            q = self._queues.get(link_id)
            if q is None:
                continue
            try:
                q.send_nowait(frame)
            except (trio.WouldBlock, trio.ClosedResourceError):
                self.dropped_link_frames += 1
                if link_id not in self._overflowing:
                    self._overflowing.add(link_id)
                    log.warning(
                        "link %s is not keeping up: its send queue (%d frames, %d bytes; node.link_send_queue_bytes) "
                        "is full, dropping frames",
                        link_id,
                        q.queued_frames,
                        q.queued_bytes,
                    )
        if changes := core.pins.take_changes():
            self._pin_backlog.extend(changes)
            self._pins_dirty.set()
        self._rearm.set()
        self._notify_changed()
        return stored

    def _notify_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _take_pin_backlog(self) -> list[PinChange]:
        batch, self._pin_backlog = self._pin_backlog, []
        return batch

    def _write_pins(self, batch: list[PinChange]) -> None:
        if not batch:
            return
        try:
            self.pin_file.apply(batch)
        except PinFileError as exc:  # the pins stay in memory for this run; the next proof pins them again
            log.warning("%s", exc)

    async def persist_pins(self) -> None:
        """Write every pin change so far (in order, after what the writer already took) and return when it is on
        disk. Raises PinFileError."""
        core = self._require_core()
        self._pin_backlog.extend(core.pins.take_changes())
        await trio.to_thread.run_sync(self.pin_file.apply, self._take_pin_backlog(), limiter=self._pin_limiter)

    async def _pin_writer(self) -> None:
        """Persist pin changes in batches (one transaction each) on a worker thread: an fsync never stalls the
        event loop, however fast remote peers make the core pin."""
        while True:
            await self._pins_dirty.wait()
            self._pins_dirty = trio.Event()
            await trio.to_thread.run_sync(self._write_pins, self._take_pin_backlog(), limiter=self._pin_limiter)

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait (event-driven, no polling) until ``predicate()`` holds after some node activity."""
        while not predicate():
            await self._changed.wait()

    async def _timer_task(self) -> None:
        core = self._require_core()
        paused_until = -math.inf  # after a failed timer task (TIMER_FAILURE_PAUSE_S)
        while True:
            deadline = core.get_timer()
            self._rearm = trio.Event()
            with trio.move_on_at(max(deadline, paused_until) if deadline is not None else math.inf):
                await self._rearm.wait()
            now = self.clock.now()
            if deadline is not None and now >= deadline and now >= paused_until:
                if not core.handle_timer(now):
                    paused_until = now + TIMER_FAILURE_PAUSE_S
                self._flush()

    def _on_event(self, event: MeshEvent) -> bool:
        """Act on one core event; False when a received message could not be stored."""
        if isinstance(event, MessageReceived):
            inbox = self.inbox
            assert inbox is not None
            try:
                stored = inbox.add(
                    id=event.message_id,
                    sender=event.sender_id.hex(),
                    nickname=event.sender_nickname,
                    text=event.text,
                    private=event.private,
                    received_at_ms=self.clock.wall_ms(),
                    sent_at_ms=event.timestamp_ms,
                    hops=event.hops,
                )
            except InboxError as exc:
                self.inbox_store_failed += 1
                self._forget_received(event)
                log.error("%s; no delivery ack is sent, the sender will resend", exc)
                return False
            if stored is None:
                return True
            log.info(
                "%s message %s from %s (%s)",
                "private" if event.private else "public",
                event.message_id,
                event.sender_nickname,
                event.sender_id.hex(),
                extra={"peer": event.sender_id.hex()},
            )
            for ch in list(self._followers):
                try:
                    ch.send_nowait(stored)
                except trio.WouldBlock:
                    log.warning("an `inbox --follow` client is too slow; disconnecting it")
                    ch.close()
                    self._followers.remove(ch)
                except (trio.ClosedResourceError, trio.BrokenResourceError):  # closed by either end
                    self._followers.remove(ch)
        elif isinstance(event, PeerAnnounced):
            if event.new:
                log.info(
                    "new peer %s (%s)%s",
                    event.peer_id.hex(),
                    event.nickname,
                    f" on {event.link_id}" if event.link_id else "",
                    extra={"peer": event.peer_id.hex()},
                )
        elif isinstance(event, PeerLeft):
            log.info("peer %s (%s) left", event.peer_id.hex(), event.nickname, extra={"peer": event.peer_id.hex()})
        elif isinstance(event, DeliveryAcked):
            self._set_outgoing(event.message_id, "delivered")
            self._settle(event.message_id, "delivered")
            log.info(
                "private message %s delivered to %s",
                event.message_id,
                event.peer_id.hex(),
                extra={"peer": event.peer_id.hex()},
            )
        elif isinstance(event, EnvelopeSealed):
            for sealed_listener in self._sealed_listeners:
                sealed_listener(event.envelope)
        elif isinstance(event, PrivateFailed):
            self._set_outgoing(event.message_id, "failed", event.reason)
            self._settle(event.message_id, "failed", event.reason)
            log.warning(
                "private message %s to %s failed: %s",
                event.message_id,
                event.peer_id.hex(),
                event.reason,
                extra={"peer": event.peer_id.hex()},
            )
        elif isinstance(event, AppRequestReceived):
            self._apps.on_request(event)
        elif isinstance(event, AppResponseReceived):
            self._apps.on_response(event)
        return True

    def _forget_received(self, event: MessageReceived) -> None:
        """The core must not take a resend of an unstored private message for a duplicate (it would ack it)."""
        if not event.private:
            return
        self._require_core().forget_received(event.sender_id, event.message_id)

    # ------------------------------------------------------------ app channel (node.routing.app)
    def register_app_handler(self, service: str, handler: AppHandler) -> None:
        """Serve app requests for ``service`` from peers (one handler per service; a new one replaces it)."""
        self._apps.register(service, handler)

    async def app_request(self, peer_ref: str | bytes, service: str, body: bytes, *, timeout_s: float) -> bytes:
        """Ask a peer's ``service`` handler and return its answer. Raises :class:`AppTimeout` after ``timeout_s``,
        :class:`AppRemoteError` if the peer answered an error, :class:`AppError`/:class:`MeshError` if the request
        cannot be made (unknown peer, oversize body)."""
        self._require_core()
        peer = peer_ref if isinstance(peer_ref, bytes) else self.resolve_peer(peer_ref)
        return await self._apps.request(peer, service, body, timeout_s=timeout_s)

    def _settle(self, message_id: str, state: str, detail: str = "") -> None:
        try:
            self._require_outbox().settle(message_id, state, self.clock.wall_ms(), detail)
        except OutboxError as exc:  # the message stays pending on disk: at worst it is resent after a restart
            log.error("outbox: could not record message %s as %s: %s", message_id, state, exc)

    def _set_outgoing(self, message_id: str, state: str, detail: str = "") -> None:
        msg = self.outgoing.get(message_id)
        if msg is not None:
            msg.state, msg.detail = state, detail

    def _remember_outgoing(self, msg: OutgoingMessage) -> None:
        self.outgoing[msg.id] = msg
        while len(self.outgoing) > SENT_MESSAGES_KEPT:
            self.outgoing.popitem(last=False)

    # ------------------------------------------------------------ API (control methods call these)
    def _require_outbox(self) -> Outbox:
        if self.outbox is None:
            raise MeshError("the node is not running")
        return self.outbox

    def resolve_peer(self, ref: str, *, allow_unknown: bool = False) -> bytes:
        """A known peer matching ``ref``; with ``allow_unknown``, also any full 16-hex-digit peer ID."""
        core = self._require_core()
        matches = core.peers.resolve(ref)
        if not matches and allow_unknown and len(ref) == 16 and all(c in "0123456789abcdefABCDEF" for c in ref):
            return bytes.fromhex(ref)
        if not matches:
            raise MeshError(
                f"no known peer matches {ref!r}; `village peers` lists the peers this node knows "
                "(a full 16-hex-digit peer ID is accepted for a peer not heard from yet)"
            )
        if len(matches) > 1:
            raise MeshError(f"{ref!r} matches several peers: {describe(matches)}; use a full peer ID")
        return matches[0].peer_id

    async def connect(self, addr: str) -> Link:
        """Dial ``addr`` with the transport that understands it (BetaNet multiaddrs today)."""
        for t in self.transports:
            dial = getattr(t, "dial", None)
            if dial is not None:
                link: Link = await dial(addr)
                return link
        raise MeshError("no transport on this node can dial addresses (is betanet.enabled = false?)")

    def broadcast(self, text: str) -> str:
        core = self._require_core()
        message_id = core.broadcast(text, self.clock.now())
        self._remember_outgoing(OutgoingMessage(message_id, None, text, False, "sent", self.clock.wall_ms()))
        self._flush()
        return message_id

    def send_private(self, peer_ref: str, text: str, *, message_id: str | None = None) -> str:
        """Accept a private message: on disk in the outbox before this returns, then queued in the mesh. A peer
        not heard from yet (full peer ID) gets it when it appears, within ``mesh.private_expiry_s``.

        ``message_id`` (the anchor's gateway queue passes the ID its client got): a message whose ID the outbox
        holds already is not accepted again — the call returns that ID and changes nothing."""
        core = self._require_core()
        peer = self.resolve_peer(peer_ref, allow_unknown=True)
        if message_id is not None and self._require_outbox().get(message_id) is not None:
            return message_id
        core.check_private(peer, text)
        message_id = message_id or core.new_message_id()
        created = self.clock.wall_ms()
        self._require_outbox().add(id=message_id, peer=peer.hex(), text=text, created_at_ms=created)
        core.queue_private(message_id, peer, text, self.clock.now())
        self._remember_outgoing(OutgoingMessage(message_id, peer.hex(), text, True, "pending", created))
        self._flush()
        return message_id

    def routes_view(self) -> list[dict[str, Any]]:
        """The path table: one row per destination this node knows a way to."""
        core = self._require_core()
        now = self.clock.now()
        rows = []
        for r in sorted(core.paths.all_routes(now).values(), key=lambda r: (r.hops, r.destination)):
            info = core.peers.get(r.destination)
            link = self.links.get(r.link_id)
            rows.append(
                {
                    "destination": r.destination.hex(),
                    "nickname": info.nickname if info else None,
                    "next_hop": r.next_hop.hex() if r.next_hop else None,
                    "link": r.link_id,
                    "transport": link.transport_name if link else None,
                    "hops": r.hops,
                    "cost": round(r.cost, 3),
                    "via": [h.hex() for h in r.via],
                    "source": r.source,
                    "expires_in_s": round(r.expires_at - now, 1),
                }
            )
        return rows

    def subscribe_inbox(self) -> trio.MemoryReceiveChannel[InboxMessage]:
        send, recv = trio.open_memory_channel[InboxMessage](self.config.control.follow_queue_messages)
        self._followers.append(send)
        self._follower_sends[recv] = send
        return recv

    def unsubscribe_inbox(self, recv: trio.MemoryReceiveChannel[InboxMessage]) -> None:
        """End a subscription now (not at the next message): its queue and its messages are released."""
        recv.close()
        send = self._follower_sends.pop(recv, None)
        if send is not None:
            send.close()
            with contextlib.suppress(ValueError):  # already dropped (a slow follower, or the node stopped)
                self._followers.remove(send)

    @property
    def inbox_followers(self) -> int:
        """Open inbox subscriptions (``inbox --follow`` calls, gateway event streams)."""
        return len(self._followers)

    def peers_view(self) -> list[dict[str, Any]]:
        core = self._require_core()
        now = self.clock.now()
        out = []
        for p in core.peers:
            link = self.links.get(p.link_id) if p.link_id else None
            out.append(
                {
                    "peer_id": p.peer_id.hex(),
                    "nickname": p.nickname,
                    "fingerprint": fingerprint_from_noise_key(p.noise_public_key),
                    "reachable": core.is_reachable(p, now),
                    "last_seen_s_ago": round(now - p.last_seen, 3),
                    "hops": p.hops,
                    "transport": link.transport_name if link else None,
                    "address": link.remote_address if link else None,
                    "session": core.sessions.session(p.peer_id) is not None,
                    "rtt_ms": round(p.rtt_s * 1000, 2) if p.rtt_s is not None else None,
                }
            )
        return out

    def status(self) -> dict[str, Any]:
        core = self._require_core()
        now = self.clock.now()
        reachable = sum(1 for p in core.peers if core.is_reachable(p, now))
        return {
            "peer_id": self.identity.peer_id_hex,
            "fingerprint": self.identity.fingerprint,
            "nickname": self.nickname,
            "uptime_s": round(now - (self.started_at or now), 3),
            "transports": [t.name for t in self.transports],
            "listen_addrs": [a for t in self.transports for a in t.listen_addresses()],
            "peers": reachable,
            "links": len(self.links),
            "pending_private": len(core.pending),
            "outbox": self._require_outbox().counts(),
            "routes": len(core.paths.all_routes(now)),
            "data_dir": str(self.config.data_dir),
            "counters": {
                **_as_dict(core.counters),
                "link_queue_dropped": self.dropped_link_frames,
                "inbox_store_failed": self.inbox_store_failed,
            },
            "app_counters": _as_dict(core.app.counters),
            "contained": dict(core.containment.by_cause),  # frames/timer tasks a failure ended, by cause
            "transport_counters": {t.name: _as_dict(t.counters) for t in self.transports if hasattr(t, "counters")},
        }


def _as_dict(obj: Any) -> dict[str, int]:
    return {name: getattr(obj, name) for name in obj.__slots__}
