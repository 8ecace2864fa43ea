"""Run a blocking driver call in a worker thread, bounded, and turn "server down" into StoreUnavailable.

Each store owns one :class:`BlockingRunner`: a :class:`trio.CapacityLimiter` bounds the threads (and so the
connections) it uses; a call that fails because the server is unreachable raises :class:`StoreUnavailable`
naming the store. Transitions are logged once each — one warning line when the store goes down, one info
line when a later call succeeds again — so a dead server does not flood the log.

Each call also has a deadline (``deadline_s``; the stores pass twice their driver timeout). The drivers time out
on their own when a server refuses connections or stops answering on a socket with a timeout, but a server that
hangs with its connections open (SIGSTOP, a lock wait, a dead NFS mount) would block psycopg or the Bolt driver
indefinitely. Past the deadline the caller gets StoreUnavailable and the worker thread is abandoned: it keeps
its limiter slot until the driver returns, so hung threads stay bounded by ``max_threads``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import trio

from anchor.stores.errors import StoreError, StoreUnavailable

T = TypeVar("T")
log = logging.getLogger("village.anchor.stores")


class BlockingRunner:
    def __init__(
        self,
        store: str,
        max_threads: int,
        unavailable: tuple[type[BaseException], ...],
        deadline_s: float,
        errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.store = store
        self.deadline_s = deadline_s
        self.limiter = trio.CapacityLimiter(max_threads)
        self._unavailable = unavailable
        self._errors = errors
        self.down_reason: str | None = None  # None while the last call reached the server

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread; StoreUnavailable if it failed because the server is unreachable, StoreError
        for the driver's other errors (the server answered: a bad query or value)."""
        result: T
        with trio.move_on_after(self.deadline_s) as scope:
            try:
                result = await trio.to_thread.run_sync(fn, limiter=self.limiter, abandon_on_cancel=True)
            except self._unavailable as exc:
                raise self.mark_down(exc) from exc
            except self._errors as exc:
                self.mark_up()
                raise StoreError(f"{self.store}: {_short(exc)}") from exc
        if scope.cancelled_caught:
            raise self.mark_down(TimeoutError(f"no answer within {self.deadline_s:g} s"))
        self.mark_up()
        return result

    def mark_down(self, exc: BaseException) -> StoreUnavailable:
        reason = _short(exc)
        if self.down_reason is None:
            log.warning("%s store unavailable: %s", self.store, reason)
        self.down_reason = reason
        return StoreUnavailable(self.store, reason)

    def mark_up(self) -> None:
        if self.down_reason is not None:
            log.info("%s store available again", self.store)
            self.down_reason = None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"
