"""The Bumble radio adapter: BitChat's GATT service on Google's Bumble BLE stack (asyncio), bridged to trio.

Two ways to get a radio:

* **Virtual** (tests, benchmarks): a :class:`BumbleWorld` is one asyncio thread plus one
  ``bumble.link.LocalLink``; every adapter created on it gets its own ``bumble.controller.Controller`` on that
  link, so several nodes in one process hear and connect to each other as real BLE stacks would (HCI, LL,
  L2CAP, ATT and GATT all run; only the air is simulated). All of a world's stacks share its loop because
  Bumble's link and controllers are not thread-safe.
* **HCI** (USB/serial/TCP dongles where BlueZ is absent): ``BumbleAdapter(transport_spec="usb:0")`` opens
  the transport with ``bumble.transport.open_transport`` in a world of its own. Not exercised here (no
  hardware in this machine).

The adapter follows the contract in ``base.py``. The GATT server holds one service (``gatt.SERVICE_UUID``)
with one characteristic (read, write, write-without-response, notify; Bumble adds the CCCD), advertising
carries the service UUID only. As central we exchange MTU (517), discover the service, subscribe to
notifications and write without response.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from node.transports.ble import gatt
from node.transports.ble.aio_bridge import AsyncioLoop, open_asyncio_loop
from node.transports.ble.base import (
    Connected,
    ConnectFailed,
    DataReceived,
    DeviceDiscovered,
    Disconnected,
    RadioAdapter,
    RadioConnectionLost,
    RadioError,
    RadioEvent,
    RadioEventSink,
    RadioUnavailable,
    Role,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 8.0  # BitChat's connect timeout (BITCHAT.md §4)
ADVERTISING_INTERVAL_MS = 100.0  # virtual radios: how often a scanner hears us
SCAN_INTERVAL_MS = 60.0


@dataclass(slots=True)
class BumbleWorld:
    """One asyncio thread and one virtual radio medium shared by every adapter created on it."""

    aio: AsyncioLoop
    link: Any
    _next_address: list[int] = field(default_factory=lambda: [1])

    def new_address(self) -> str:
        n = self._next_address[0]
        self._next_address[0] += 1
        # A random static address: the two top bits of the most significant byte are 1 (Core Vol 6 B 1.3.2.1).
        return f"C0:00:00:00:{(n >> 8) & 0xFF:02X}:{n & 0xFF:02X}"


@asynccontextmanager
async def open_bumble_world(name: str = "bumble") -> AsyncIterator[BumbleWorld]:
    """Start a world; on exit its thread and loop are gone (close its adapters first)."""
    async with open_asyncio_loop(name) as aio:

        async def make_link() -> Any:
            from bumble.link import LocalLink

            return LocalLink()  # type: ignore[no-untyped-call]

        link = await aio.call(make_link)
        yield BumbleWorld(aio, link)


@dataclass(slots=True)
class _ConnState:
    conn_id: str
    connection: Any
    role: Role
    characteristic: Any = None  # central role: the peer's characteristic proxy
    up: bool = False


class BumbleAdapter(RadioAdapter):
    def __init__(self, world: BumbleWorld | None = None, *, transport_spec: str | None = None, name: str = "") -> None:
        if (world is None) == (transport_spec is None):
            raise ValueError("give either a BumbleWorld (virtual radio) or a transport_spec (HCI dongle)")
        self._world = world
        self._spec = transport_spec
        self._label = name or (transport_spec or "virtual")
        self._aio: AsyncioLoop | None = None
        self._device: Any = None
        self._characteristic: Any = None
        self._address = ""
        self._conns: dict[str, _ConnState] = {}  # touched only in the asyncio thread
        self._by_handle: dict[int, str] = {}
        self._conn_seq = 0
        self._events: RadioEventSink | None = None
        self.events_dropped = 0

    @property
    def name(self) -> str:
        return "bumble"

    @property
    def local_address(self) -> str:
        return self._address

    # --- lifecycle (trio side) ----------------------------------------------------------------------------

    async def run(
        self, events: RadioEventSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._events = events
        async with AsyncExitStack() as stack:
            world = self._world
            if world is None:
                world = await stack.enter_async_context(open_bumble_world(f"hci-{self._label}"))
            self._aio = world.aio
            try:
                await world.aio.call(self._setup, world)
            except Exception as exc:  # a stack that cannot start: report it in our terms
                raise RadioUnavailable(f"Bumble stack {self._label!r} did not start: {exc}") from exc
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await world.aio.call(self._teardown)

    def _emit(self, event: RadioEvent) -> None:
        """Called in the asyncio thread: hand an event to trio (bounded; counted when dropped)."""
        assert self._aio is not None
        self._aio.to_trio(self._deliver, event)

    def _deliver(self, event: RadioEvent) -> None:
        if self._events is None:
            return
        try:
            self._events.send_nowait(event)
        except trio.WouldBlock:
            self.events_dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._aio is None or self._device is None:
            raise RadioError("the Bumble adapter is not running")
        return await self._aio.call(fn, *args)

    # --- asyncio side ------------------------------------------------------------------------------------

    async def _setup(self, world: BumbleWorld) -> None:
        from bumble.controller import Controller
        from bumble.device import Device
        from bumble.gatt import Characteristic, CharacteristicValue, Service
        from bumble.hci import Address
        from bumble.host import Host
        from bumble.transport.common import AsyncPipeSink

        if self._spec is None:
            address = world.new_address()
            controller = Controller(f"ctl-{address}", link=world.link)
            host = Host(controller, AsyncPipeSink(controller))
        else:
            from bumble.transport import open_transport

            self._hci = await open_transport(self._spec)
            host = Host(self._hci.source, self._hci.sink)
            address = "C0:00:00:00:00:01"
        device = Device(name="", address=Address(address, Address.RANDOM_DEVICE_ADDRESS), host=host)
        device.gatt_server.max_mtu = gatt.ATT_MTU_MAX
        props = Characteristic.Properties
        characteristic: Characteristic[bytes] = Characteristic(
            gatt.CHARACTERISTIC_UUID,
            props.READ | props.WRITE | props.WRITE_WITHOUT_RESPONSE | props.NOTIFY,
            Characteristic.Permissions.READABLE | Characteristic.Permissions.WRITEABLE,
            CharacteristicValue(read=lambda _conn: b"", write=self._on_write),
        )
        device.add_service(Service(gatt.SERVICE_UUID, [characteristic]))
        device.on("connection", self._on_connection)
        device.on("advertisement", self._on_advertisement)
        device.on("characteristic_subscription", self._on_subscription)
        await device.power_on()
        self._device = device
        self._characteristic = characteristic
        self._address = str(device.random_address)

    async def _teardown(self) -> None:
        device = self._device
        if device is None:
            return
        for state in list(self._conns.values()):
            try:
                await state.connection.disconnect()
            except Exception:  # the link may already be gone; shutting down regardless
                log.debug("disconnect during shutdown failed", exc_info=True)
        for stop in (device.stop_scanning, device.stop_advertising):
            try:
                await stop()
            except Exception:
                log.debug("stopping radio activity during shutdown failed", exc_info=True)
        device.remove_all_listeners()
        hci = getattr(self, "_hci", None)
        if hci is not None:
            await hci.close()
        self._device = None

    def _new_conn(self, connection: Any, role: Role) -> _ConnState:
        self._conn_seq += 1
        state = _ConnState(f"bumble:{self._address}:{self._conn_seq}", connection, role)
        self._conns[state.conn_id] = state
        self._by_handle[connection.handle] = state.conn_id

        def on_disconnection(reason: object = None) -> None:
            self._conns.pop(state.conn_id, None)
            if self._by_handle.get(connection.handle) == state.conn_id:
                del self._by_handle[connection.handle]
            if state.up:
                self._emit(Disconnected(state.conn_id, f"reason {reason}"))

        connection.on("disconnection", on_disconnection)
        return state

    def _state_of(self, connection: Any) -> _ConnState | None:
        conn_id = self._by_handle.get(connection.handle)
        return self._conns.get(conn_id) if conn_id else None

    def _on_connection(self, connection: Any) -> None:
        from bumble.hci import Role as HciRole

        if connection.role == HciRole.PERIPHERAL:
            self._new_conn(connection, Role.PERIPHERAL)
        # Central-role connections are registered by _connect once GATT setup is done.

    def _on_subscription(self, connection: Any, characteristic: Any, notify: bool, indicate: bool) -> None:
        state = self._state_of(connection)
        if state is None or state.role is not Role.PERIPHERAL or characteristic is not self._characteristic:
            return
        if (notify or indicate) and not state.up:
            state.up = True
            self._emit(Connected(state.conn_id, str(connection.peer_address), Role.PERIPHERAL, connection.att_mtu))

    def _on_write(self, connection: Any, value: bytes) -> None:
        state = self._state_of(connection)
        if state is not None and state.up:
            self._emit(DataReceived(state.conn_id, bytes(value)))

    def _on_advertisement(self, advertisement: Any) -> None:
        from bumble.core import UUID, AdvertisingData

        uuids = advertisement.data.get(AdvertisingData.Type.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS) or []
        uuids += advertisement.data.get(AdvertisingData.Type.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS) or []
        if UUID(gatt.SERVICE_UUID) not in uuids or not advertisement.is_connectable:
            return
        self._emit(DeviceDiscovered(str(advertisement.address), int(advertisement.rssi)))

    async def _start_advertising(self) -> None:
        from bumble.core import UUID, AdvertisingData

        if self._device is None:
            raise RadioError("the Bumble adapter is not running")
        data = AdvertisingData(
            [
                (AdvertisingData.Type.FLAGS, bytes([0x06])),  # LE general discoverable, BR/EDR not supported
                (
                    AdvertisingData.Type.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                    UUID(gatt.SERVICE_UUID).to_bytes(),
                ),
            ]
        )
        await self._device.start_advertising(
            advertising_data=bytes(data),
            auto_restart=True,
            advertising_interval_min=ADVERTISING_INTERVAL_MS,
            advertising_interval_max=ADVERTISING_INTERVAL_MS,
        )

    async def _connect(self, address: str) -> None:
        from bumble.device import Peer
        from bumble.hci import Address

        device = self._device
        if device is None:
            self._emit(ConnectFailed(address, "the Bumble adapter is not running"))
            return
        try:
            connection = await device.connect(
                Address(address.split("/")[0], Address.RANDOM_DEVICE_ADDRESS), timeout=CONNECT_TIMEOUT_S
            )
        except Exception as exc:  # timeout, controller refusal: the core backs off this address
            self._emit(ConnectFailed(address, f"connect: {exc!r}"))
            return
        state = self._new_conn(connection, Role.CENTRAL)
        try:
            peer = Peer(connection)
            await peer.request_mtu(gatt.ATT_MTU_REQUEST)
            services = await peer.discover_service(gatt.SERVICE_UUID)
            if not services:
                raise RadioError("peer has no BitChat service")
            chars = await services[0].discover_characteristics()
            wanted = [c for c in chars if str(c.uuid).upper() == gatt.CHARACTERISTIC_UUID]
            if not wanted:
                raise RadioError("peer has no BitChat characteristic")
            characteristic = wanted[0]
            await characteristic.discover_descriptors()

            def on_notify(value: bytes) -> None:
                if state.up:
                    self._emit(DataReceived(state.conn_id, bytes(value)))

            await characteristic.subscribe(on_notify)
        except Exception as exc:  # GATT setup failed: drop the connection, the core backs off
            self._conns.pop(state.conn_id, None)
            self._emit(ConnectFailed(address, f"GATT setup: {exc!r}"))
            try:
                await connection.disconnect()
            except Exception:
                log.debug("disconnect after failed GATT setup failed", exc_info=True)
            return
        state.characteristic = characteristic
        state.up = True
        self._emit(Connected(state.conn_id, address, Role.CENTRAL, connection.att_mtu))

    async def _send(self, conn_id: str, data: bytes) -> None:
        state = self._conns.get(conn_id)
        if state is None or not state.up:
            raise RadioConnectionLost(f"connection {conn_id} is gone")
        try:
            if self._device is None:
                raise RadioConnectionLost("the Bumble adapter has stopped")
            if state.role is Role.CENTRAL:
                await state.characteristic.write_value(data, with_response=False)
            else:
                await self._device.notify_subscriber(state.connection, self._characteristic, data)
        except Exception as exc:  # the stack's own errors, converted at the boundary
            if conn_id not in self._conns:
                raise RadioConnectionLost(f"connection {conn_id} is gone") from exc
            raise RadioError(f"GATT send on {conn_id} failed: {exc!r}") from exc

    async def _disconnect(self, conn_id: str) -> None:
        state = self._conns.get(conn_id)
        if state is None:
            return
        try:
            await state.connection.disconnect()
        except Exception:  # already going away
            log.debug("disconnect of %s failed", conn_id, exc_info=True)

    # --- RadioAdapter (trio side) -------------------------------------------------------------------------

    async def start_peripheral(self) -> None:
        await self._call(self._start_advertising)

    async def stop_peripheral(self) -> None:
        await self._call(self._stop_advertising)

    async def _stop_advertising(self) -> None:
        if self._device is not None:
            await self._device.stop_advertising()

    async def _stop_scanning(self) -> None:
        if self._device is not None:
            await self._device.stop_scanning()

    async def start_scanning(self) -> None:
        await self._call(self._start_scanning)

    async def _start_scanning(self) -> None:
        if self._device is None:
            raise RadioError("the Bumble adapter is not running")
        await self._device.start_scanning(
            filter_duplicates=False, scan_interval=SCAN_INTERVAL_MS, scan_window=SCAN_INTERVAL_MS
        )

    async def stop_scanning(self) -> None:
        await self._call(self._stop_scanning)

    async def connect(self, address: str) -> None:
        await self._call(self._connect, address)

    async def send(self, conn_id: str, data: bytes) -> None:
        await self._call(self._send, conn_id, data)

    async def disconnect(self, conn_id: str) -> None:
        await self._call(self._disconnect, conn_id)
