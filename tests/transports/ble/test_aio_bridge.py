"""The asyncio-in-a-thread bridge under Bumble: results and errors cross to trio, cancelling the trio side
cancels the asyncio task, callbacks reach trio in order, and nothing outlives the block."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.lowlevel

from node.transports.ble.aio_bridge import open_asyncio_loop
from tests.transports.ble.harness import bridge_threads


async def test_results_errors_cancellation_and_callbacks() -> None:
    before = bridge_threads()
    async with open_asyncio_loop("t") as aio:

        async def add(a: int, b: int) -> int:
            await asyncio.sleep(0)
            return a + b

        assert await aio.call(add, 2, 3) == 5

        async def boom() -> None:
            raise ValueError("from asyncio")

        with pytest.raises(ValueError, match="from asyncio"):
            await aio.call(boom)

        cancelled = trio.Event()
        token = trio.lowlevel.current_trio_token()

        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                token.run_sync_soon(cancelled.set)
                raise

        with trio.move_on_after(0.2):
            await aio.call(forever)
        with trio.fail_after(5):
            await cancelled.wait()

        got: list[int] = []

        async def emit() -> None:
            for i in range(100):
                aio.to_trio(got.append, i)

        await aio.call(emit)
        with trio.fail_after(5):
            while len(got) < 100:
                await trio.lowlevel.checkpoint()
        assert got == list(range(100))
        assert len(bridge_threads()) == len(before) + 1
    assert bridge_threads() == before
    assert aio.loop.is_closed()
