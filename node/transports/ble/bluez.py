"""The BlueZ radio adapter: bleak as central, bless as peripheral, both at once, over BlueZ's D-Bus API.

Thin by design (the contract is in ``base.py``): it moves bytes between BlueZ and the transport and converts
stack errors into :class:`~node.transports.ble.base.RadioError`. bleak and bless are asyncio libraries; they
run on one asyncio loop in one thread owned by :meth:`BluezAdapter.run` (``aio_bridge.py``); their callbacks
hand events to trio with ``to_trio``.

* Peripheral: a bless GATT server with BitChat's service and characteristic (``gatt.py``: read, write,
  write-without-response, notify; BlueZ adds the CCCD), advertising the service UUID.
* Central: a ``BleakScanner`` filtered on the service UUID reports devices (RSSI, Android's peer-ID hint from
  service data); ``BleakClient`` connects (8 s), finds the characteristic, subscribes to notifications and
  writes without response. BlueZ exchanges the MTU itself; the link limit is read from the characteristic's
  ``max_write_without_response_size`` (BlueZ >= 5.62; older BlueZ reports 20 bytes).

What BlueZ's D-Bus GATT server (through bless) cannot do, and how this adapter maps it:

* It does not say *which* central wrote, nor which centrals subscribed: ``StartNotify`` comes once for the
  first subscriber. So every central connected to our server shares **one** peripheral-role connection,
  ``bluez:server``: :class:`Connected` when notifications are first enabled, writes from any central arrive on
  it, and one notification reaches every subscribed central. Frames are self-contained and the mesh dedupes,
  so this carries BitChat traffic, but the mesh sees one neighbour link for all those centrals.
* It does not tell the application each central's ATT MTU either (BlueZ passes it in the WriteValue options,
  which bless drops). The server connection reports :data:`SERVER_ATT_MTU`, 185 — what iPhones negotiate;
  Android asks for 517 — so frames over 182 bytes are fragmented; a central stuck at a smaller MTU would get
  truncated notifications (BlueZ cuts them at its MTU - 3).
* The advertising interval (the power plan's ``advertise_interval_ms``) is not applied: bless registers its
  advertisement with a fixed 100 ms interval.

Not exercised on the machine this was written on (no Bluetooth in its kernel, no BlueZ): everything here is
type-checked and imported by tests; the Link conformance suite for it skips with the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bless.backends.attribute import GATTAttributePermissions
from bless.backends.bluezdbus.server import BlessServerBlueZDBus
from bless.backends.characteristic import GATTCharacteristicProperties
from dbus_fast.errors import DBusError as FastDBusError
from dbus_next.errors import DBusError as NextDBusError

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

SERVER_CONN_ID = "bluez:server"  # the one peripheral-role connection (see the module docstring)
MTU_WAIT_S = 2.0  # longest wait for BlueZ's MTU exchange after connecting
MTU_RECHECK_S = 0.1
DEFAULT_ATT_PAYLOAD = gatt.ATT_MTU_DEFAULT - gatt.ATT_HEADER_BYTES  # 20: no MTU exchange (yet)
SERVER_ATT_MTU = 185  # assumed ATT MTU of centrals on our server: iOS negotiates 185, Android 517
PEER_ID_HINT_BYTES = 8  # Android's scan-response service data: its peer ID
# Stack errors converted at the boundary: bleak's BleakError (BleakDBusError is one), dbus-next's (bless) and
# dbus-fast's (bleak) DBusError, socket errors, timeouts. bless's setup raises a bare Exception when BlueZ has
# no adapter: only the server start catches that (see run).
_STACK_ERRORS = (BleakError, NextDBusError, FastDBusError, OSError, EOFError, TimeoutError)


@dataclass(slots=True)
class _Central:
    """A connection we opened (we are central)."""

    conn_id: str
    address: str
    client: BleakClient
    characteristic: BleakGATTCharacteristic | None = None


class BluezAdapter(RadioAdapter):
    """BitChat's GATT service on BlueZ. ``device_name`` is the GAP name BlueZ shows (``ble.nickname``);
    ``hci`` picks the controller (``None``: BlueZ's default)."""

    def __init__(self, device_name: str, *, hci: str | None = None) -> None:
        self._device_name = device_name
        self._hci = hci
        self._aio: AsyncioLoop | None = None
        self._events: RadioEventSink | None = None
        self._server: BlessServerBlueZDBus | None = None
        self._scanner: BleakScanner | None = None
        self._centrals: dict[str, _Central] = {}
        self._server_up = False  # the peripheral-role connection is reported up
        self._notifying = False  # some central has notifications enabled
        self._advertising = False
        self._ids = itertools.count(1)
        self._address = ""
        self.events_dropped = 0

    # ------------------------------------------------------------ RadioAdapter
    @property
    def name(self) -> str:
        return "bluez"

    @property
    def local_address(self) -> str:
        return self._address

    async def run(
        self, events: RadioEventSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._events = events
        async with open_asyncio_loop("bluez") as aio:
            self._aio = aio
            try:
                try:
                    self._address = await aio.call(self._aio_open_server)
                except Exception as exc:  # bless signals "no adapter" with a bare Exception; all mean the same
                    raise RadioUnavailable(f"BlueZ GATT server could not start ({type(exc).__name__}: {exc})") from exc
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(CONNECT_TIMEOUT_S):
                    await self._close_all(aio)
                self._aio = None

    async def start_peripheral(self) -> None:
        if not self._advertising:
            await self._call(self._aio_advertise, True)
            self._advertising = True

    async def stop_peripheral(self) -> None:
        if self._advertising:
            await self._call(self._aio_advertise, False)
            self._advertising = False

    async def start_scanning(self) -> None:
        if self._scanner is None:
            await self._call(self._aio_start_scanner)

    async def stop_scanning(self) -> None:
        if self._scanner is not None:
            scanner, self._scanner = self._scanner, None
            await self._call(scanner.stop)

    async def connect(self, address: str) -> None:
        conn_id = f"bluez:c{next(self._ids)}"
        try:
            att_mtu = await self._call(self._aio_connect, conn_id, address)
        except RadioError as exc:
            self._centrals.pop(conn_id, None)
            self._emit(ConnectFailed(address, str(exc)))
            return
        self._emit(Connected(conn_id, address, Role.CENTRAL, att_mtu))

    async def send(self, conn_id: str, data: bytes) -> None:
        if conn_id == SERVER_CONN_ID:
            if not self._server_up:
                raise RadioConnectionLost(f"{conn_id}: no central is subscribed")
            await self._call(self._aio_notify, data)
            return
        central = self._centrals.get(conn_id)
        if central is None or central.characteristic is None:
            raise RadioConnectionLost(f"{conn_id} is not connected")
        try:
            await self._call(central.client.write_gatt_char, central.characteristic, data, False)
        except RadioError as exc:
            raise RadioConnectionLost(f"{conn_id}: {exc}") from exc

    async def disconnect(self, conn_id: str) -> None:
        central = self._centrals.pop(conn_id, None)
        if central is not None:
            try:
                await self._call(central.client.disconnect)
            finally:
                self._emit(Disconnected(conn_id, "disconnected by us"))
        elif conn_id == SERVER_CONN_ID:
            # BlueZ gives us no handle on the centrals themselves: the link is closed on our side and comes back
            # with the next write from a subscribed central.
            await self._call(self._aio_drop_server)

    # ------------------------------------------------------------ trio side
    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        aio = self._aio
        if aio is None:
            raise RadioUnavailable("the BlueZ adapter is not running")
        try:
            return await aio.call(fn, *args)
        except _STACK_ERRORS as exc:
            raise RadioError(f"BlueZ: {type(exc).__name__}: {exc}") from exc

    def _emit(self, event: RadioEvent) -> None:
        """Runs in trio's thread. A full queue drops the event and counts it (the core recovers by timers)."""
        if self._events is None:
            return
        try:
            self._events.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.events_dropped += 1

    def _to_trio(self, event: RadioEvent) -> None:
        """Runs in the asyncio thread."""
        if self._aio is not None:
            self._aio.to_trio(self._emit, event)

    async def _close_all(self, aio: AsyncioLoop) -> None:
        for conn_id in list(self._centrals):
            central = self._centrals.pop(conn_id)
            try:
                await aio.call(central.client.disconnect)
            except _STACK_ERRORS as exc:
                log.debug("bluez: disconnecting %s on shutdown failed: %s", conn_id, exc)
        try:
            if self._scanner is not None:
                await aio.call(self._scanner.stop)
            if self._server is not None:
                await aio.call(self._server.stop)
        except _STACK_ERRORS as exc:
            log.debug("bluez: stopping scanner/server on shutdown failed: %s", exc)
        self._scanner = self._server = None

    # ------------------------------------------------------------ asyncio side (runs on the bridge's loop)
    async def _aio_open_server(self) -> str:
        server = BlessServerBlueZDBus(name=self._device_name, adapter=self._hci)
        server.write_request_func = self._aio_on_write
        server.read_request_func = lambda _char, **_kw: b""
        await server.add_new_service(gatt.SERVICE_UUID)
        props = (
            GATTCharacteristicProperties.read
            | GATTCharacteristicProperties.write
            | GATTCharacteristicProperties.write_without_response
            | GATTCharacteristicProperties.notify
        )
        perms = GATTAttributePermissions.readable | GATTAttributePermissions.writeable
        await server.add_new_characteristic(gatt.SERVICE_UUID, gatt.CHARACTERISTIC_UUID, props, None, perms)
        # Register the GATT application; bless starts advertising with it, which start_peripheral owns.
        await server.start()
        await server.app.stop_advertising(server.adapter)
        app = server.app
        app.StartNotify = self._aio_on_subscribe
        app.StopNotify = self._aio_on_unsubscribe
        self._server = server
        adapter_iface: Any = server.adapter.get_interface("org.bluez.Adapter1")  # dbus-next makes get_<property>
        return str(await adapter_iface.get_address())

    async def _aio_advertise(self, on: bool) -> None:
        assert self._server is not None
        if on:
            await self._server.app.start_advertising(self._server.adapter)
        else:
            await self._server.app.stop_advertising(self._server.adapter)

    # Server state (_notifying, _server_up) changes only on the asyncio thread, in these callbacks.
    def _aio_server_up(self) -> None:
        self._server_up = True
        self._to_trio(Connected(SERVER_CONN_ID, "bluez:centrals", Role.PERIPHERAL, SERVER_ATT_MTU))

    def _aio_on_subscribe(self, _arg: object) -> None:
        self._notifying = True
        if not self._server_up:
            self._aio_server_up()

    def _aio_on_unsubscribe(self, _arg: object) -> None:
        self._notifying = False
        if self._server_up:
            self._server_up = False
            self._to_trio(Disconnected(SERVER_CONN_ID, "every central unsubscribed"))

    async def _aio_drop_server(self) -> None:
        if self._server_up:
            self._server_up = False
            self._to_trio(Disconnected(SERVER_CONN_ID, "disconnected by us"))

    def _aio_on_write(self, _characteristic: object, value: Any, **_kw: Any) -> None:
        if self._notifying and not self._server_up:
            self._aio_server_up()
        if self._server_up:
            self._to_trio(DataReceived(SERVER_CONN_ID, bytes(value)))

    def _aio_notify(self, data: bytes) -> None:
        assert self._server is not None
        char = self._server.get_characteristic(gatt.CHARACTERISTIC_UUID)
        if char is None:
            raise RadioConnectionLost("BitChat's characteristic is not registered")
        char.value = bytearray(data)
        if not self._server.update_value(gatt.SERVICE_UUID, gatt.CHARACTERISTIC_UUID):
            raise RadioConnectionLost("BlueZ did not take the notification")

    async def _aio_start_scanner(self) -> None:
        bluez: Any = {"adapter": self._hci} if self._hci else {}
        scanner = BleakScanner(self._aio_on_advertisement, [gatt.SERVICE_UUID.lower()], bluez=bluez)
        await scanner.start()
        self._scanner = scanner

    def _aio_on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        hint = adv.service_data.get(gatt.SERVICE_UUID.lower())
        peer_id = bytes(hint) if hint is not None and len(hint) == PEER_ID_HINT_BYTES else None
        self._to_trio(DeviceDiscovered(device.address, adv.rssi, peer_id))

    async def _aio_connect(self, conn_id: str, address: str) -> int:
        def on_disconnect(_client: BleakClient) -> None:
            if self._centrals.pop(conn_id, None) is not None:
                self._to_trio(Disconnected(conn_id, "the peer or BlueZ dropped the connection"))

        bluez: Any = {"adapter": self._hci} if self._hci else {}
        client = BleakClient(address, on_disconnect, timeout=CONNECT_TIMEOUT_S, bluez=bluez)
        central = _Central(conn_id, address, client)
        self._centrals[conn_id] = central
        await client.connect()
        char = client.services.get_characteristic(gatt.CHARACTERISTIC_UUID.lower())
        if char is None:
            await client.disconnect()
            raise RadioError(f"{address} does not offer BitChat's characteristic")
        central.characteristic = char

        def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            self._to_trio(DataReceived(conn_id, bytes(data)))

        await client.start_notify(char, on_notify)
        # BlueZ finishes the MTU exchange on its own just after connecting and signals nothing bleak exposes; bleak
        # documents re-reading the value. Bounded: on BlueZ < 5.62 it stays 20 (the doctor warns about that).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MTU_WAIT_S
        while char.max_write_without_response_size <= DEFAULT_ATT_PAYLOAD and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(MTU_RECHECK_S)
        return char.max_write_without_response_size + gatt.ATT_HEADER_BYTES
