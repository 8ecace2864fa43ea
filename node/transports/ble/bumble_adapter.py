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

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from node.transports.ble import gatt
from node.transports.ble.aio_bridge import AsyncioLoop, open_asyncio_loop
from node.transports.ble.base import (
    CONNECT_TIMEOUT_S,
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

log = logging.getLogger("village.ble")

VIRTUAL_GATT_TIMEOUT_S = 2.0  # GATT setup on a virtual link (normally ~10 ms)
ADVERTISING_INTERVAL_MS = 100.0  # virtual radios: how often a scanner hears us
SCAN_INTERVAL_MS = 60.0
SHUTDOWN_STEP_S = 2.0  # bound on each shutdown step, so a wedged stack cannot hang the node's exit
RSSI_AT_1M_DBM = -59  # a typical phone's calibrated 1 m power
PATH_LOSS_EXPONENT = 2.0  # free space


@dataclass(slots=True)
class BumbleWorld:
    """One asyncio thread and one virtual radio medium shared by every adapter created on it.

    Bumble's local link lets every controller hear every other at a fixed RSSI. To build topologies (a line of
    nodes, out-of-range pairs) an adapter may be given a position; the world then reports the RSSI of an
    advertisement by distance (log-distance path loss), so the core's RSSI gate decides who connects to whom.
    """

    aio: AsyncioLoop
    link: Any
    _next_address: list[int] = field(default_factory=lambda: [1])
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    scanners: set[str] = field(default_factory=set)  # addresses of the world's radios that are scanning now

    def new_address(self) -> str:
        n = self._next_address[0]
        self._next_address[0] += 1
        # A random static address: the two top bits of the most significant byte are 1 (Core Vol 6 B 1.3.2.1).
        return f"C0:00:00:00:{(n >> 8) & 0xFF:02X}:{n & 0xFF:02X}"

    def rssi_dbm(self, receiver: str, sender: str, reported: int) -> int:
        """RSSI at ``receiver`` of ``sender``: by distance when both have positions, else what Bumble reported."""
        a, b = self.positions.get(receiver), self.positions.get(sender)
        if a is None or b is None:
            return reported
        distance_m = max(0.1, math.dist(a, b))
        return round(RSSI_AT_1M_DBM - 10 * PATH_LOSS_EXPONENT * math.log10(distance_m))


def virtual_controller(name: str, link: Any, host_source: Any = None, host_sink: Any = None) -> Any:
    """A Bumble virtual controller on ``link`` whose LE Create Connection Cancel works as the spec says (Core
    Vol 4 Part E §7.8.13: the pending connect ends with an LE Connection Complete, status Unknown Connection
    Identifier). Bumble's own ignores the cancel, so a connect to a radio that stopped advertising would leave
    the controller "connecting" forever and the host's connect() waiting forever. Must run in the world's loop.
    """
    from bumble import hci
    from bumble.controller import Controller

    class VirtualController(Controller):
        def on_hci_le_create_connection_cancel_command(self, command: Any) -> Any:
            pending = self.pending_le_connection
            self.pending_le_connection = None
            if pending is not None:
                failed = hci.HCI_LE_Connection_Complete_Event(
                    status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                    connection_handle=0,
                    role=hci.Role.CENTRAL,
                    peer_address_type=pending.peer_address.address_type,
                    peer_address=pending.peer_address,
                    connection_interval=0,
                    peripheral_latency=0,
                    supervision_timeout=0,
                    central_clock_accuracy=0,
                )
                # After the Command Complete this returns, as a real controller orders them.
                asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
            return super().on_hci_le_create_connection_cancel_command(command)

    return VirtualController(name, host_source=host_source, host_sink=host_sink, link=link)


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
    def __init__(
        self,
        world: BumbleWorld | None = None,
        *,
        transport_spec: str | None = None,
        name: str = "",
        position: tuple[float, float] | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        if (world is None) == (transport_spec is None):
            raise ValueError("give either a BumbleWorld (virtual radio) or a transport_spec (HCI dongle)")
        self._world = world
        self._spec = transport_spec
        self._label = name or (transport_spec or "virtual")
        self._position = position
        self._connect_timeout_s = connect_timeout_s
        # Virtual GATT setup takes milliseconds; a virtual connect that raced the peer's advertising pause is
        # a dead connection, so give up on it sooner than on a real radio.
        self._gatt_timeout_s = VIRTUAL_GATT_TIMEOUT_S if world is not None else CONNECT_TIMEOUT_S
        self._aio: AsyncioLoop | None = None
        self._device: Any = None
        self._characteristic: Any = None
        self._address = ""
        self._conns: dict[str, _ConnState] = {}  # touched only in the asyncio thread
        self._by_handle: dict[int, str] = {}
        self._conn_seq = 0
        self._events: RadioEventSink | None = None
        self._controller: Any = None  # virtual radios only
        self._advertising_wanted = False
        self._dialling = False  # a central connect is in progress (advertising paused)
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio-side helpers, cancelled by the bridge at exit
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
        from bumble.device import Device
        from bumble.gatt import Characteristic, CharacteristicValue, Service
        from bumble.hci import Address
        from bumble.host import Host
        from bumble.transport.common import AsyncPipeSink

        if self._spec is None:
            address = world.new_address()
            controller = virtual_controller(f"ctl-{address}", world.link)
            host = Host(controller, AsyncPipeSink(controller))
            self._controller = controller
        else:
            from bumble.transport import open_transport

            self._hci = await open_transport(self._spec)
            host = Host(self._hci.source, self._hci.sink)
            address = str(Address.generate_static_address())  # a fresh random static address per start
        device = Device(name="", address=Address(address, Address.RANDOM_DEVICE_ADDRESS), host=host)
        if self._position is not None:
            world.positions[str(device.random_address)] = self._position
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
        self._advertising_wanted = False
        if self._world is not None:
            self._world.scanners.discard(self._address)
        for state in list(self._conns.values()):
            try:
                await asyncio.wait_for(state.connection.disconnect(), SHUTDOWN_STEP_S)
            except Exception:  # the link may already be gone; shutting down regardless
                log.debug("disconnect during shutdown failed", exc_info=True)
        for stop in (device.stop_scanning, device.stop_advertising):
            try:
                await asyncio.wait_for(stop(), SHUTDOWN_STEP_S)
            except Exception:  # best effort while shutting down: any stack error is logged, the shutdown goes on
                log.debug("stopping radio activity during shutdown failed", exc_info=True)
        if self._controller is not None:
            with contextlib.suppress(KeyError):
                self._controller.link.remove_controller(self._controller)
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
            # A connection stops legacy advertising; BitChat peers keep advertising so more centrals can join.
            if self._advertising_wanted:
                task = asyncio.get_running_loop().create_task(self._restart_advertising())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
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
        sender = str(advertisement.address)
        rssi = int(advertisement.rssi)
        if self._world is not None:
            if sender < self._address and sender in self._world.scanners:
                # Bumble's virtual controller breaks on crossed connections (both ends connecting at once: the
                # second stays "connecting" forever and a peripheral link completes the central's connect).
                # In a virtual world, of two scanning radios the lower address dials (it hears us as we hear
                # it); a radio that does not scan is dialled by anyone. Real radios skip this.
                return
            rssi = self._world.rssi_dbm(self._address, sender, rssi)
        self._emit(DeviceDiscovered(sender, rssi))

    async def _restart_advertising(self) -> None:
        try:
            device = self._device
            if device is not None and self._advertising_wanted and not self._dialling and not device.is_advertising:
                await self._start_advertising()
        except Exception:  # the controller refused (e.g. out of connection slots): stay connectable later
            log.debug("re-advertising after a connection failed", exc_info=True)

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
        peer_address = Address(address.split("/")[0], Address.RANDOM_DEVICE_ADDRESS)
        if any(c.peer_address == peer_address for c in device.connections.values()):
            # Already linked the other way round (its central reached us first): one connection is enough.
            self._emit(ConnectFailed(address, "already connected"))
            return
        # Bumble's Device.connect completes with *any* new connection, so a central reaching us meanwhile would
        # be taken for ours: we stop advertising while we dial (a few advertising intervals) and check the result.
        self._dialling = True
        try:
            if device.is_advertising:
                await device.stop_advertising()
            # Bumble cancels at the timeout and then waits for the controller to confirm; bound that wait too.
            connection = await asyncio.wait_for(
                device.connect(peer_address, timeout=self._connect_timeout_s), self._connect_timeout_s + 2.0
            )
        except Exception as exc:  # noqa: BLE001 - timeout, controller refusal: the core backs off this address
            self._emit(ConnectFailed(address, f"connect: {exc!r}"))
            return
        finally:
            self._dialling = False
            await self._restart_advertising()
        from bumble.hci import Role as HciRole

        if connection.role != HciRole.CENTRAL or connection.peer_address != peer_address:
            self._emit(ConnectFailed(address, "an incoming connection completed our connect"))
            return
        state = self._new_conn(connection, Role.CENTRAL)

        def on_notify(value: bytes) -> None:
            if state.up:
                self._emit(DataReceived(state.conn_id, bytes(value)))

        async def gatt_setup() -> Any:
            peer = Peer(connection)
            await peer.request_mtu(gatt.ATT_MTU_REQUEST)
            services = await peer.discover_service(gatt.SERVICE_UUID)
            if not services:
                raise RadioError("peer has no BitChat service")
            chars = await services[0].discover_characteristics()
            wanted = [c for c in chars if str(c.uuid).upper() == gatt.CHARACTERISTIC_UUID]
            if not wanted:
                raise RadioError("peer has no BitChat characteristic")
            await wanted[0].discover_descriptors()
            await wanted[0].subscribe(on_notify)
            return wanted[0]

        try:
            # Bounded like the connect itself: a peer that never answers GATT (or, on the virtual link, a
            # connection the peripheral never saw because it stopped advertising that instant) is given up on.
            characteristic = await asyncio.wait_for(gatt_setup(), self._gatt_timeout_s)
        except Exception as exc:  # noqa: BLE001 - GATT setup failed: drop the connection, the core backs off
            self._conns.pop(state.conn_id, None)
            self._emit(ConnectFailed(address, f"GATT setup: {exc!r}"))
            try:
                await asyncio.wait_for(connection.disconnect(), SHUTDOWN_STEP_S)
            except Exception:  # best effort: the connection is dropped either way (logged)
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
            await asyncio.wait_for(state.connection.disconnect(), SHUTDOWN_STEP_S)
        except Exception:  # already going away
            log.debug("disconnect of %s failed", conn_id, exc_info=True)

    # --- RadioAdapter (trio side) -------------------------------------------------------------------------

    async def start_peripheral(self) -> None:
        await self._call(self._want_advertising)

    async def _want_advertising(self) -> None:
        self._advertising_wanted = True
        if not self._dialling and self._device is not None and not self._device.is_advertising:
            await self._start_advertising()

    async def stop_peripheral(self) -> None:
        await self._call(self._stop_advertising)

    async def _stop_advertising(self) -> None:
        self._advertising_wanted = False
        if self._device is not None:
            await self._device.stop_advertising()

    async def _stop_scanning(self) -> None:
        if self._world is not None:
            self._world.scanners.discard(self._address)
        if self._device is not None:
            await self._device.stop_scanning()

    async def start_scanning(self) -> None:
        await self._call(self._start_scanning)

    async def _start_scanning(self) -> None:
        if self._device is None:
            raise RadioError("the Bumble adapter is not running")
        if self._world is not None:
            self._world.scanners.add(self._address)
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
