"""The BlueZ adapter (bleak + bless). This machine has no Bluetooth in its kernel and no BlueZ, so: it must
import, implement the adapter interface, fail to start with RadioUnavailable (leaving no thread behind), and its
Link conformance run skips with the reason. On a machine with two BlueZ controllers (e.g. a Pi's built-in one
and a USB dongle) the conformance suite runs for real: hci0 as central, hci1 as peripheral."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from node.transports.base import Link
from node.transports.ble import gatt
from node.transports.ble.aio_bridge import open_asyncio_loop
from node.transports.ble.base import (
    Connected,
    DataReceived,
    DeviceDiscovered,
    Disconnected,
    RadioAdapter,
    RadioConnectionLost,
    RadioEvent,
    RadioUnavailable,
    Role,
)
from node.transports.ble.bluez import SERVER_ATT_MTU, SERVER_CONN_ID, BluezAdapter
from node.transports.ble.core import BleSettings
from node.transports.ble.doctor import dbus_system_socket, diagnose
from node.transports.ble.settings import BleSection
from node.transports.ble.transport import BleTransport
from tests.transports.ble.harness import TIMEOUT_S, bridge_threads
from tests.transports.conformance import LinkConformance


def test_is_a_radio_adapter_and_touches_nothing_until_run() -> None:
    adapter = BluezAdapter("shelf-pi", hci="hci1")
    assert isinstance(adapter, RadioAdapter)
    assert adapter.name == "bluez" and adapter.local_address == ""
    assert SERVER_CONN_ID.startswith("bluez:")
    # the MTU assumed for centrals on our GATT server must pass the core's floor for a useful link
    assert gatt.att_payload_bytes(SERVER_ATT_MTU) >= gatt.MIN_USEFUL_ATT_PAYLOAD


async def test_run_without_bluez_reports_radio_unavailable() -> None:
    if Path(dbus_system_socket(os.environ)).exists():
        pytest.skip("a D-Bus system bus exists here: the no-BlueZ failure path is not reachable")
    before = bridge_threads()
    send, _recv = trio.open_memory_channel[RadioEvent](16)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            with pytest.raises(RadioUnavailable, match="BlueZ GATT server could not start") as caught:
                await nursery.start(BluezAdapter("x").run, send)
    assert isinstance(caught.value.__cause__, FileNotFoundError)  # connecting to the system bus failed
    assert bridge_threads() == before  # the asyncio thread was joined


async def test_calls_before_run_say_the_adapter_is_not_running() -> None:
    adapter = BluezAdapter("x")
    with pytest.raises(RadioUnavailable, match="not running"):
        await adapter.start_scanning()
    with pytest.raises(RadioUnavailable, match="not running"):
        await adapter.start_peripheral()


def _two_controllers_reason() -> str | None:
    diagnosis = diagnose(BleSection())
    if not diagnosis.usable:
        return f"BlueZ adapter not exercised here: {diagnosis.summary()} (`village ble doctor` for details)"
    adapters = [c for c in diagnosis.checks if c.name == "adapter"]
    if not adapters or "hci1" not in adapters[0].found:
        return "BlueZ adapter conformance needs two controllers (hci0 and hci1) to connect one to the other"
    return None


NOT_HERE = _two_controllers_reason()


@pytest.mark.skipif(NOT_HERE is not None, reason=NOT_HERE or "")
class TestBluezLinkConformance(LinkConformance):
    @pytest.fixture
    async def link_pair(self) -> AsyncIterator[tuple[Link, Link]]:
        central = BleTransport(BluezAdapter("village-c", hci="hci0"), BleSettings(advertise=False))
        peripheral = BleTransport(BluezAdapter("village-p", hci="hci1"), BleSettings(scan=False))
        c_send, c_recv = trio.open_memory_channel[Link](8)
        p_send, p_recv = trio.open_memory_channel[Link](8)
        async with trio.open_nursery() as nursery:
            await nursery.start(peripheral.run, p_send)
            await nursery.start(central.run, c_send)
            with trio.fail_after(TIMEOUT_S):
                a = await c_recv.receive()
                b = await p_recv.receive()
            yield a, b
            nursery.cancel_scope.cancel()


async def test_server_callbacks_map_to_one_peripheral_connection() -> None:
    """BlueZ's calls into our GATT application (StartNotify, WriteValue, StopNotify, as bless forwards them),
    made on the adapter's own asyncio thread, become the events the transport expects — the part of the
    adapter that runs without BlueZ."""
    adapter = BluezAdapter("x")
    send, recv = trio.open_memory_channel[RadioEvent](16)
    adapter._events = send
    async with open_asyncio_loop("bluez-test") as aio:
        adapter._aio = aio

        async def on_aio(fn: Callable[..., object], *args: object) -> None:
            async def run() -> None:
                fn(*args)

            await aio.call(run)

        async def next_event() -> RadioEvent:
            with trio.fail_after(TIMEOUT_S):
                return await recv.receive()

        await on_aio(adapter._aio_on_write, None, bytearray(b"before anyone subscribed"))
        await on_aio(adapter._aio_on_subscribe, None)
        assert await next_event() == Connected(SERVER_CONN_ID, "bluez:centrals", Role.PERIPHERAL, SERVER_ATT_MTU)
        await on_aio(adapter._aio_on_write, None, bytearray(b"frame one"))
        assert await next_event() == DataReceived(SERVER_CONN_ID, b"frame one")
        await adapter.disconnect(SERVER_CONN_ID)  # the core drops the link
        assert await next_event() == Disconnected(SERVER_CONN_ID, "disconnected by us")
        await on_aio(adapter._aio_on_write, None, bytearray(b"frame two"))  # a subscribed central writes again
        assert await next_event() == Connected(SERVER_CONN_ID, "bluez:centrals", Role.PERIPHERAL, SERVER_ATT_MTU)
        assert await next_event() == DataReceived(SERVER_CONN_ID, b"frame two")
        await on_aio(adapter._aio_on_unsubscribe, None)
        assert await next_event() == Disconnected(SERVER_CONN_ID, "every central unsubscribed")
        with pytest.raises(RadioConnectionLost):
            await adapter.send("bluez:c1", b"no such central")
        adapter._aio = None
    assert recv.statistics().current_buffer_used == 0  # nothing else was emitted


async def test_scan_results_become_discoveries_with_androids_peer_id_hint() -> None:
    adapter = BluezAdapter("x")
    send, recv = trio.open_memory_channel[RadioEvent](16)
    adapter._events = send
    service = gatt.SERVICE_UUID.lower()

    def adv(rssi: int, service_data: dict[str, bytes]) -> AdvertisementData:
        return AdvertisementData(None, {}, service_data, [service], None, rssi, ())

    async with open_asyncio_loop("bluez-test") as aio:
        adapter._aio = aio

        async def scan_results() -> None:
            adapter._aio_on_advertisement(BLEDevice("AA:BB:CC:DD:EE:01", None, None), adv(-60, {}))  # an iPhone
            android = adv(-71, {service: bytes.fromhex("0123456789abcdef")})
            adapter._aio_on_advertisement(BLEDevice("AA:BB:CC:DD:EE:02", None, None), android)
            odd = adv(-80, {service: b"\x01\x02"})  # not a peer ID: ignored as a hint
            adapter._aio_on_advertisement(BLEDevice("AA:BB:CC:DD:EE:03", None, None), odd)

        await aio.call(scan_results)
        with trio.fail_after(TIMEOUT_S):
            got = [await recv.receive() for _ in range(3)]
        adapter._aio = None
    assert got == [
        DeviceDiscovered("AA:BB:CC:DD:EE:01", -60, None),
        DeviceDiscovered("AA:BB:CC:DD:EE:02", -71, bytes.fromhex("0123456789abcdef")),
        DeviceDiscovered("AA:BB:CC:DD:EE:03", -80, None),
    ]
