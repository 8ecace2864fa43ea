"""Helpers for BLE tests: Bumble worlds, transports and the links they report."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from node.transports.base import Link
from node.transports.ble.aio_bridge import THREAD_NAME_PREFIX
from node.transports.ble.bumble_adapter import BumbleAdapter, BumbleWorld
from node.transports.ble.core import BleSettings
from node.transports.ble.transport import BleTransport

TIMEOUT_S = 20.0  # real time: Bumble's virtual radios advertise every 100 ms


def bridge_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)]


@dataclass
class RunningTransport:
    transport: BleTransport
    links: trio.MemoryReceiveChannel[Link]

    async def next_link(self) -> Link:
        with trio.fail_after(TIMEOUT_S):
            return await self.links.receive()


@asynccontextmanager
async def running_transport(world: BumbleWorld, settings: BleSettings | None = None) -> AsyncIterator[RunningTransport]:
    transport = BleTransport(BumbleAdapter(world), settings or BleSettings())
    send, recv = trio.open_memory_channel[Link](64)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run, send)
        yield RunningTransport(transport, recv)
        nursery.cancel_scope.cancel()
