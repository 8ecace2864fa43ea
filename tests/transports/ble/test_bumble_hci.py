"""The Bumble adapter's HCI path (``transport_spec``, what ``[ble] adapter = "bumble"`` uses for USB/serial
dongles): here the "dongle" is a Bumble controller served over a real loopback TCP socket (HCI H4 framing), so
the adapter opens ``tcp-client:...`` exactly as it would open ``usb:0``, and links with a virtual radio."""

from __future__ import annotations

import socket
from typing import Any

import trio

from node.transports.base import Link
from node.transports.ble.base import RadioEvent, RadioUnavailable
from node.transports.ble.bumble_adapter import BumbleAdapter, open_bumble_world, virtual_controller
from node.transports.ble.core import BleSettings
from node.transports.ble.transport import BleLink, BleTransport
from tests.transports.ble.harness import TIMEOUT_S, bridge_threads, running_transport


async def test_adapter_over_an_hci_transport_spec_links_with_a_virtual_radio() -> None:
    before = bridge_threads()
    async with open_bumble_world() as world:

        async def serve_controller() -> tuple[Any, int]:
            from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            hci = await open_tcp_server_transport_with_socket(sock)
            virtual_controller("dongle", world.link, hci.source, hci.sink)
            return hci, port

        hci, port = await world.aio.call(serve_controller)
        try:
            async with running_transport(world, BleSettings(scan=False)) as phone:
                dongle = BleTransport(BumbleAdapter(transport_spec=f"tcp-client:127.0.0.1:{port}"), BleSettings())
                send, links = trio.open_memory_channel[Link](4)
                async with trio.open_nursery() as nursery:
                    await nursery.start(dongle.run, send)
                    assert len(bridge_threads()) == len(before) + 2  # the world's loop and the dongle's own
                    with trio.fail_after(TIMEOUT_S):
                        ours = await links.receive()
                        theirs = await phone.next_link()
                        assert isinstance(ours, BleLink) and ours.mtu == 512
                        await ours.send(b"\x00over HCI")
                        assert await theirs.receive() == b"\x00over HCI"
                        await theirs.send(b"\x00and back")
                        assert await ours.receive() == b"\x00and back"
                    nursery.cancel_scope.cancel()
                assert len(bridge_threads()) == len(before) + 1  # the dongle's loop is gone
        finally:
            await world.aio.call(hci.close)
    assert bridge_threads() == before


async def test_an_hci_transport_that_cannot_open_is_radio_unavailable_and_leaves_nothing() -> None:
    before = bridge_threads()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound, never listening: a connect is refused
    port = sock.getsockname()[1]
    try:
        send, _ = trio.open_memory_channel[RadioEvent](4)
        failures: list[RadioUnavailable] = []
        with trio.fail_after(TIMEOUT_S):
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(BumbleAdapter(transport_spec=f"tcp-client:127.0.0.1:{port}").run, send)
            except* RadioUnavailable as group:  # trio wraps it in a group on its way out of the nurseries
                failures.extend(e for e in group.exceptions if isinstance(e, RadioUnavailable))
        assert len(failures) == 1 and "did not start" in str(failures[0])
        assert isinstance(failures[0].__cause__, ConnectionRefusedError)
    finally:
        sock.close()
    assert bridge_threads() == before
