"""BlockingRunner: the deadline that bounds a call into a hung driver, and the one-line-per-outage logging."""

from __future__ import annotations

import logging
import math
import threading

import pytest
import trio
import trio.testing

from anchor.stores import StoreUnavailable
from anchor.stores._runner import BlockingRunner


class _Down(Exception):
    pass


async def test_a_hung_call_gives_store_unavailable_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    runner = BlockingRunner("postgres", 2, (_Down,), deadline_s=3.0)
    release = threading.Event()
    start = trio.current_time()
    with pytest.raises(StoreUnavailable, match="no answer within 3 s") as info:
        await runner.run(release.wait)
    assert info.value.store == "postgres"
    assert trio.current_time() - start == pytest.approx(3.0)
    # The abandoned thread holds its limiter slot until the driver returns.
    assert runner.limiter.borrowed_tokens == 1
    # The other slot still works. (Stop the clock jumping: virtual time must not pass while a real thread runs.)
    autojump_clock.autojump_threshold = math.inf
    assert await runner.run(lambda: 42) == 42
    release.set()
    assert runner.down_reason is None


async def test_driver_errors_become_store_unavailable_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="village.anchor.stores")
    runner = BlockingRunner("redis", 1, (_Down,), deadline_s=5.0)

    def fail() -> None:
        raise _Down("connection refused")

    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="redis unavailable: _Down: connection refused"):
            await runner.run(fail)
    assert runner.down_reason == "_Down: connection refused"
    await runner.run(lambda: None)
    assert [r.getMessage() for r in caplog.records] == [
        "redis store unavailable: _Down: connection refused",
        "redis store available again",
    ]


async def test_other_errors_pass_through_unchanged() -> None:
    runner = BlockingRunner("graph", 1, (_Down,), deadline_s=5.0)

    def bug() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await runner.run(bug)
    assert runner.down_reason is None
