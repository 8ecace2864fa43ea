"""The BLE Transport and its Links: a thin trio adapter around :class:`~node.transports.ble.core.BleCore`.

``BleTransport(adapter, settings).run(link_sink)`` starts the radio adapter in its nursery, then one driver task
feeds every radio event to the core, carries out the core's actions (connect, scan on/off, advertise, disconnect)
and re-arms the core's one timer. Each connection the core reports up becomes a :class:`BleLink` pushed into
``link_sink``; frames the core cuts out of writes/notifications go to that link's bounded receive queue.
A link's ``send`` takes a pacing slot from the core, waits for it, and hands the frame to the adapter as one GATT
write (central) or notification (peripheral).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import cast

import trio

from node.transports.base import Link, LinkCapabilities, LinkClosed, LinkSink, Transport, check_frame_size
from node.transports.ble.base import (
    ConnectFailed,
    RadioAdapter,
    RadioConnectionLost,
    RadioError,
    RadioEvent,
    RadioEventSink,
    Role,
)
from node.transports.ble.core import (
    BleCore,
    BleCounters,
    BleSettings,
    Connect,
    Disconnect,
    FrameReceived,
    LinkDown,
    LinkUp,
    SetAdvertising,
    SetScanning,
)
from node.transports.ble.power import RadioPlan

log = logging.getLogger("village.ble")

RADIO_EVENT_QUEUE = 1024  # radio events waiting for the driver (adapters count what overflows)
LINK_RECEIVE_QUEUE = 256  # frames waiting for the Node's reader task, per link
LINK_SEND_LOCKS = 1  # one GATT send in flight per link keeps frames in order


class BleLink(Link):
    def __init__(
        self,
        conn_id: str,
        address: str,
        role: Role,
        mtu: int,
        adapter: RadioAdapter,
        reserve: Callable[[str, float], float],
        on_sent: Callable[[int], None],
        counters: BleCounters,
    ) -> None:
        self._conn_id = conn_id
        self._address = address
        self.role = role
        self._mtu = mtu
        self._adapter = adapter
        self._reserve = reserve
        self._on_sent = on_sent
        self._send_lock = trio.Lock()
        self._recv_send, self._recv = trio.open_memory_channel[bytes](LINK_RECEIVE_QUEUE)
        self._closed = False
        self._counters = counters

    @property
    def link_id(self) -> str:
        return f"ble:{self._conn_id}"

    @property
    def transport_name(self) -> str:
        return "ble"

    @property
    def mtu(self) -> int:
        return self._mtu

    @property
    def capabilities(self) -> LinkCapabilities:
        # GATT writes without response and notifications are delivered in order while the link is up (ATT on
        # L2CAP on a reliable LL) but can be lost when the queue of a busy receiver overflows.
        return LinkCapabilities(native_streams=False, reliable=True, ordered=True, broadcast_medium=True)

    @property
    def remote_address(self) -> str:
        return f"{self._address} ({self.role.value})"

    @property
    def rate_key(self) -> str | None:
        return f"ble:{self._address}"  # the peer's address, the same on every connection (unless it rotates it)

    # driver side
    def _deliver(self, frame: bytes) -> None:
        try:
            self._recv_send.send_nowait(frame)
        except trio.WouldBlock:
            self._counters.frames_dropped_queue_full += 1
        except trio.ClosedResourceError:
            pass

    def _gone(self) -> None:
        self._closed = True
        self._recv_send.close()

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise LinkClosed(f"{self.link_id} is closed")
        check_frame_size(frame, self._mtu)
        async with self._send_lock:
            if self._closed:
                raise LinkClosed(f"{self.link_id} is closed")
            at = self._reserve(self._conn_id, trio.current_time())
            if at > trio.current_time():
                await trio.sleep_until(at)
            try:
                await self._adapter.send(self._conn_id, frame)
            except RadioConnectionLost as exc:
                self._gone()
                raise LinkClosed(f"{self.link_id}: {exc}") from exc
            except RadioError as exc:
                raise LinkClosed(f"{self.link_id}: {exc}") from exc
            self._on_sent(len(frame))

    async def receive(self) -> bytes:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise LinkClosed(f"{self.link_id} is closed") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._gone()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self._adapter.disconnect(self._conn_id)
            except RadioError:
                log.debug("disconnect of %s failed", self.link_id, exc_info=True)


class BleTransport(Transport):
    def __init__(self, adapter: RadioAdapter, settings: BleSettings | None = None) -> None:
        self.adapter = adapter
        self.settings = settings or BleSettings()
        self._core: BleCore | None = None
        self._links: dict[str, BleLink] = {}
        # Radio events, and None to wake the driver after a change that moved the timer.
        self._events_send, self._events_recv = trio.open_memory_channel[RadioEvent | None](RADIO_EVENT_QUEUE)
        self._nursery: trio.Nursery | None = None

    @property
    def name(self) -> str:
        return "ble"

    @property
    def counters(self) -> BleCounters:
        return self._core.counters if self._core else BleCounters()

    def listen_addresses(self) -> list[str]:
        return [f"ble:{self.adapter.local_address}"] if self.adapter.local_address else []

    def set_plan(self, plan: RadioPlan | None) -> None:
        """The power governor's seam: adopt a new scan/advertise plan now."""
        if self._core is not None:
            self._core.set_plan(plan, trio.current_time())
            with contextlib.suppress(trio.WouldBlock):  # a full queue wakes the driver anyway
                self._events_send.send_nowait(None)

    async def run(self, link_sink: LinkSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # The adapter only ever sends RadioEvents into the channel that also carries our wake-ups.
            await nursery.start(self.adapter.run, cast(RadioEventSink, self._events_send))
            core = BleCore(self.settings, trio.current_time())
            self._core = core
            core.start(trio.current_time())
            try:
                await self._execute(core, link_sink)
                task_status.started()
                await self._drive(core, link_sink)
            finally:
                # The adapter's own shutdown (cancelled with this nursery) disconnects everything and stops
                # advertising and scanning; here the links learn that they are gone.
                core.stop()
                for link in list(self._links.values()):
                    link._gone()
                self._links.clear()
                nursery.cancel_scope.cancel()

    async def _drive(self, core: BleCore, link_sink: LinkSink) -> None:
        while True:
            deadline = core.get_timer()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                event = await self._events_recv.receive()
                if event is not None:  # None only wakes us (the timer may have moved)
                    core.handle_radio_event(event, trio.current_time())
            if deadline is not None and trio.current_time() >= deadline:
                core.handle_timer(trio.current_time())
            await self._execute(core, link_sink)

    async def _execute(self, core: BleCore, link_sink: LinkSink) -> None:
        assert self._nursery is not None
        while (event := core.next_event()) is not None:
            if isinstance(event, LinkUp):
                link = BleLink(
                    event.conn_id,
                    event.address,
                    event.role,
                    event.mtu,
                    self.adapter,
                    core.reserve_send,
                    core.record_sent,
                    core.counters,
                )
                self._links[event.conn_id] = link
                log.info("BLE link up: %s (%s, mtu %d)", event.address, event.role.value, event.mtu)
                await link_sink.send(link)
            elif isinstance(event, FrameReceived):
                target = self._links.get(event.conn_id)
                if target is not None:
                    target._deliver(event.frame)
            elif isinstance(event, LinkDown):
                gone = self._links.pop(event.conn_id, None)
                if gone is not None:
                    log.info("BLE link down: %s (%s)", gone.remote_address, event.reason)
                    gone._gone()
        while (action := core.next_action()) is not None:
            try:
                if isinstance(action, Connect):
                    self._nursery.start_soon(self._connect, action.address)
                elif isinstance(action, Disconnect):
                    await self.adapter.disconnect(action.conn_id)
                elif isinstance(action, SetScanning):
                    await (self.adapter.start_scanning() if action.on else self.adapter.stop_scanning())
                elif isinstance(action, SetAdvertising):
                    await (self.adapter.start_peripheral() if action.on else self.adapter.stop_peripheral())
            except RadioError as exc:
                log.warning("BLE %s failed: %s", type(action).__name__, exc)

    async def _connect(self, address: str) -> None:
        try:
            await self.adapter.connect(address)
        except RadioError as exc:
            log.info("BLE connect to %s failed: %s", address, exc)
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                self._events_send.send_nowait(ConnectFailed(address, str(exc)))
