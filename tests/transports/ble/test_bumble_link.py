"""BLE links over Bumble virtual controllers: Link conformance, roles, and clean asyncio/trio shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from node.transports.base import Link
from node.transports.ble import gatt
from node.transports.ble.base import Connected, ConnectFailed, RadioEvent, Role
from node.transports.ble.bumble_adapter import BumbleAdapter, open_bumble_world
from node.transports.ble.core import BleSettings
from node.transports.ble.transport import BleLink
from tests.transports.ble.harness import bridge_threads, running_transport
from tests.transports.conformance import LinkConformance

CENTRAL_ONLY = BleSettings(advertise=False)
PERIPHERAL_ONLY = BleSettings(scan=False)


class TestBumbleLinkConformance(LinkConformance):
    @pytest.fixture
    async def link_pair(self) -> AsyncIterator[tuple[Link, Link]]:
        async with (
            open_bumble_world() as world,
            running_transport(world, CENTRAL_ONLY) as central,
            running_transport(world, PERIPHERAL_ONLY) as peripheral,
        ):
            a = await central.next_link()
            b = await peripheral.next_link()
            yield a, b


async def test_central_and_peripheral_roles_and_mtu() -> None:
    async with (
        open_bumble_world() as world,
        running_transport(world, CENTRAL_ONLY) as central,
        running_transport(world, PERIPHERAL_ONLY) as peripheral,
    ):
        a = await central.next_link()
        b = await peripheral.next_link()
        assert isinstance(a, BleLink) and isinstance(b, BleLink)
        assert a.role is Role.CENTRAL and b.role is Role.PERIPHERAL
        # Both ends negotiated a 517-byte ATT MTU; an attribute value is at most 512 bytes.
        assert a.mtu == b.mtu == gatt.att_payload_bytes(gatt.ATT_MTU_REQUEST) == 512
        assert central.transport.counters.connects_started == 1
        assert peripheral.transport.counters.connects_started == 0


async def test_shutdown_leaves_no_thread_or_loop() -> None:
    before = bridge_threads()
    async with open_bumble_world() as world:
        async with running_transport(world, CENTRAL_ONLY) as central, running_transport(world, PERIPHERAL_ONLY):
            await central.next_link()
        assert len(bridge_threads()) == len(before) + 1
        loop = world.aio.loop
    assert bridge_threads() == before
    assert loop.is_closed()


async def test_a_connect_that_times_out_fails_and_the_radio_can_connect_again() -> None:
    """Nobody answers at that address: the attempt is cancelled (the virtual controller confirms the cancel as a
    real one does), reported as ConnectFailed, and the next connect to a real peer works."""
    async with open_bumble_world() as world, running_transport(world, PERIPHERAL_ONLY) as peripheral:
        adapter = BumbleAdapter(world, connect_timeout_s=0.5)
        events_send, events = trio.open_memory_channel[RadioEvent](64)
        async with trio.open_nursery() as nursery:
            await nursery.start(adapter.run, events_send)
            with trio.fail_after(10):
                await adapter.connect("C0:00:00:00:0F:FF")
                failed = await events.receive()
                assert isinstance(failed, ConnectFailed) and failed.address == "C0:00:00:00:0F:FF"
                target = peripheral.transport.adapter.local_address
                await adapter.connect(target)
                while not isinstance(ev := await events.receive(), Connected):
                    assert not isinstance(ev, ConnectFailed), ev
                assert ev.address == target and ev.role is Role.CENTRAL
            nursery.cancel_scope.cancel()
