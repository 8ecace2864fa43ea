"""The BlueZ adapter (bleak + bless). This machine has no Bluetooth in its kernel and no BlueZ, so: it must
import, implement the adapter interface, fail to start with RadioUnavailable (leaving no thread behind), and its
Link conformance run skips with the reason. On a machine with two BlueZ controllers (e.g. a Pi's built-in one
and a USB dongle) the conformance suite runs for real: hci0 as central, hci1 as peripheral."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from node.config import BleSection
from node.transports.base import Link
from node.transports.ble.base import RadioAdapter, RadioEvent, RadioUnavailable
from node.transports.ble.bluez import SERVER_CONN_ID, BluezAdapter
from node.transports.ble.core import BleSettings
from node.transports.ble.doctor import dbus_system_socket, diagnose
from node.transports.ble.transport import BleTransport
from tests.transports.ble.harness import TIMEOUT_S, bridge_threads
from tests.transports.conformance import LinkConformance


def test_is_a_radio_adapter_and_touches_nothing_until_run() -> None:
    adapter = BluezAdapter("shelf-pi", hci="hci1")
    assert isinstance(adapter, RadioAdapter)
    assert adapter.name == "bluez" and adapter.local_address == ""
    assert SERVER_CONN_ID.startswith("bluez:")


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
