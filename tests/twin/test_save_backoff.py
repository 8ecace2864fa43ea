"""The save backoff after `village twin forget` and after a recovery (session 7's known limit): forget erases every
learned byte, so what failed to save is gone with it — status shows no stale error and the next periodic save is one
interval away, not the backoff's hour; and once a save works again the backoff is over."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.twin import store
from node.twin.service import MAX_SAVE_BACKOFF_S, TwinService
from node.twin.settings import TwinSettings

from .test_service import Power, fake_embed

INTERVAL_S = 60.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)  # worker threads: jump only after real idleness


class Ticks:
    """Each periodic save's start time (trio's clock) and a way to wait for the next one to end."""

    def __init__(self, svc: TwinService) -> None:
        self.at: list[float] = []
        self.ended: list[float] = []  # (the clock may jump while a save's worker thread writes)
        self._done = trio.Event()
        real = svc._save

        async def save() -> bool:
            self.at.append(trio.current_time())
            try:
                return await real()
            finally:
                self.ended.append(trio.current_time())
                self._done.set()
                self._done = trio.Event()

        svc._save = save  # type: ignore[method-assign]

    async def next(self) -> float:
        """The start of the next save to end (one started after this call)."""
        return await self.nth(len(self.at))

    async def nth(self, n: int) -> float:
        """The start of save number ``n`` (counted from 0), once it has ended. The autojump clock may run past a
        save while a worker thread learns (it jumps after 20 ms of real idleness): ``n`` taken before then still
        names the first save after that moment."""
        while len(self.at) <= n:
            await self._done.wait()
        return self.at[n]

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self.next()


@contextmanager
def disk_full(monkeypatch: Any) -> Iterator[None]:
    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(store, "write_private", full)
        yield


def make(tmp_path: Path) -> TwinService:
    settings = TwinSettings(neural=False, poll_interval_s=3600, save_interval_s=INTERVAL_S)
    return TwinService(
        settings, tmp_path, battery_reader=Power(90, True), thermal_reader=lambda: 35.0, embed=fake_embed
    )


async def _fail_until_the_backoff_is_an_hour(svc: TwinService, ticks: Ticks) -> None:
    while svc._save_delay_s() < MAX_SAVE_BACKOFF_S:
        await ticks.next()
    st = await svc.status()
    assert st["save_failures"] >= 6 and "No space left" in (st["save_error"] or ""), st


async def test_forget_clears_a_pending_save_error_and_its_backoff(
    tmp_path: Path, monkeypatch: Any, autojump_clock: trio.testing.MockClock
) -> None:
    svc = make(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        ticks = Ticks(svc)
        svc.record("message", "my canary plumtree-4711", action="messages.send")
        await svc.idle.wait()
        with disk_full(monkeypatch):
            await _fail_until_the_backoff_is_an_hour(svc, ticks)
            await svc.forget()
            forgot_at, first = trio.current_time(), len(ticks.at)  # (a save that began during forget is before it)
            st = await svc.status()
            assert st["save_error"] is None and st["save_failures"] == 0, st
        svc.record("message", "a new start", action="messages.send")
        await svc.idle.wait()
        tried_at = await ticks.nth(first)
        assert tried_at - forgot_at <= INTERVAL_S + 1, (tried_at, forgot_at)  # not up to an hour later
        await ticks.until(svc.path.exists)  # (the first may have come before the message was learned)
        st = await svc.status()
        assert st["save_error"] is None and st["state_bytes"] > 0 and st["messages_learned"] == 1, st
        n.cancel_scope.cancel()


async def test_after_a_recovery_the_next_save_is_one_interval_away(
    tmp_path: Path, monkeypatch: Any, autojump_clock: trio.testing.MockClock
) -> None:
    svc = make(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        ticks = Ticks(svc)
        svc.record("message", "hello there friend", action="messages.send")
        await svc.idle.wait()
        with disk_full(monkeypatch):
            await _fail_until_the_backoff_is_an_hour(svc, ticks)
        # The disk has room again: the periodic save that finds it so is up to the backoff's hour away (by design) ...
        await ticks.next()
        recovered_at, first = ticks.ended[-1], len(ticks.at)
        st = await svc.status()
        assert st["save_error"] is None and st["save_failures"] == 0 and st["state_bytes"] > 0, st
        # ... and from then on the saves are one interval apart again (the saver's own save: its loop takes the next
        # wait from the failure count the save reset; what the re-arm adds is checked below, with save_now)
        svc.record("message", "learned after the recovery", action="messages.send")
        await svc.idle.wait()
        assert await ticks.nth(first) - recovered_at <= INTERVAL_S + 1
        # A save that works outside the saver (the shutdown's, save_now) ends the backoff's long wait too: the saver,
        # asleep for up to the backoff's hour, is re-armed (without it the next save came an hour later: checked).
        with disk_full(monkeypatch):
            svc.record("message", "learned while the disk is full", action="messages.send")
            await svc.idle.wait()
            await _fail_until_the_backoff_is_an_hour(svc, ticks)
        assert await svc.save_now() > 0  # (itself a save in ticks.at)
        saved_at, first = trio.current_time(), len(ticks.at)
        svc.record("message", "and after that one", action="messages.send")
        await svc.idle.wait()
        assert await ticks.nth(first) - saved_at <= INTERVAL_S + 1
        n.cancel_scope.cancel()
