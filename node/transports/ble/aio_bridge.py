"""One asyncio event loop in one thread, owned by a trio task (Bumble is asyncio; the node is trio).

``async with open_asyncio_loop("bumble") as aio:`` starts a named thread running a fresh asyncio loop and
yields an :class:`AsyncioLoop`:

* ``await aio.call(coro_fn, *args)`` runs ``coro_fn(*args)`` on the loop and returns its result to trio
  (exceptions propagate; cancelling the trio side cancels the asyncio task);
* ``aio.to_trio(fn, *args)`` — called *from the asyncio thread* — runs the synchronous ``fn`` in trio's thread
  soon (in order); callbacks that arrive after the trio side is gone are dropped.

On exit every asyncio task still running is cancelled and awaited, async generators are closed, the loop is
stopped and closed, and the thread is joined: nothing outlives the ``async with`` block.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import trio

T = TypeVar("T")

THREAD_NAME_PREFIX = "aio-bridge"  # tests look for leftover threads by this prefix
_JOIN_LIMITER_TOKENS = 4  # joins are short: the loop has been told to stop


class AsyncioLoop:
    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self.loop = loop
        self._token = token
        self.closed = False

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self.closed:
            raise RuntimeError("the asyncio loop is closed")

        async def runner() -> T:
            return await fn(*args)

        cfut = asyncio.run_coroutine_threadsafe(runner(), self.loop)
        done = trio.Event()
        token = self._token

        def wake(_: object) -> None:
            with suppress(trio.RunFinishedError):  # trio is gone: nobody waits
                token.run_sync_soon(done.set)

        cfut.add_done_callback(wake)
        try:
            await done.wait()
        finally:
            if not cfut.done():
                cfut.cancel()
        return cfut.result()

    def to_trio(self, fn: Callable[..., object], *args: Any) -> None:
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


@asynccontextmanager
async def open_asyncio_loop(name: str) -> AsyncIterator[AsyncioLoop]:
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=main, name=f"{THREAD_NAME_PREFIX}-{name}-{id(loop):x}", daemon=False)
    thread.start()
    limiter = trio.CapacityLimiter(_JOIN_LIMITER_TOKENS)
    await trio.to_thread.run_sync(started.wait, limiter=limiter)
    aio = AsyncioLoop(loop, trio.lowlevel.current_trio_token())
    try:
        yield aio
    finally:
        with trio.CancelScope(shield=True):
            try:
                await aio.call(_cancel_all)
            finally:
                aio.closed = True
                loop.call_soon_threadsafe(loop.stop)
                await trio.to_thread.run_sync(thread.join, limiter=limiter)
