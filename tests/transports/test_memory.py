"""The memory transport: Link conformance, and the fault injector's behaviour under the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from node.transports.base import Link
from node.transports.memory import Faults, MemoryNetwork
from tests.transports.conformance import LinkConformance


class TestMemoryLinkConformance(LinkConformance):
    @pytest.fixture
    async def link_pair(self, nursery: trio.Nursery) -> AsyncIterator[tuple[Link, Link]]:
        net = MemoryNetwork(seed=1)
        await nursery.start(net.run)
        a, b = net.connect(net.transport("a"), net.transport("b"), mtu=4096)
        yield a, b


async def _pair(nursery: trio.Nursery, faults: Faults, seed: int = 7) -> tuple[MemoryNetwork, Link, Link]:
    net = MemoryNetwork(seed=seed, queue_frames=4096)
    await nursery.start(net.run)
    a, b = net.connect(net.transport("a"), net.transport("b"), faults)
    return net, a, b


async def _drain(link: Link, idle_s: float = 5.0) -> list[bytes]:
    got: list[bytes] = []
    while True:
        with trio.move_on_after(idle_s) as scope:
            got.append(await link.receive())
        if scope.cancelled_caught:
            return got


async def test_drop_rate_follows_the_seeded_probability(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net, a, b = await _pair(nursery, Faults(drop=0.3))
    for i in range(2000):
        await a.send(i.to_bytes(4, "big"))
    got = await _drain(b)
    assert 1250 < len(got) < 1550  # 2000 * 0.7 = 1400 expected
    assert net.stats.dropped == 2000 - len(got)


async def test_duplicates_are_delivered_twice(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    net, a, b = await _pair(nursery, Faults(duplicate=0.5))
    for i in range(400):
        await a.send(i.to_bytes(4, "big"))
    got = await _drain(b)
    assert len(got) == 400 + net.stats.duplicated
    assert 150 < net.stats.duplicated < 250
    assert set(got) == {i.to_bytes(4, "big") for i in range(400)}


async def test_latency_delays_delivery_in_simulated_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, a, b = await _pair(nursery, Faults(latency_s=2.5))
    start = trio.current_time()
    await a.send(b"slow")
    assert await b.receive() == b"slow"
    assert trio.current_time() - start == pytest.approx(2.5)


async def test_reorder_changes_order_but_loses_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, a, b = await _pair(nursery, Faults(reorder=0.5, reorder_window_s=0.2, latency_s=0.01))
    sent = [i.to_bytes(4, "big") for i in range(300)]
    for f in sent:
        await a.send(f)
        await trio.sleep(0.001)
    got = await _drain(b)
    assert sorted(got) == sent
    assert got != sent
    assert not a.capabilities.ordered


async def test_partition_drops_across_groups_until_healed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net, a, b = await _pair(nursery, Faults())
    net.partition({"a"}, {"b"})
    await a.send(b"lost")
    assert await _drain(b, idle_s=1.0) == []
    assert net.stats.partitioned == 1
    net.heal()
    await a.send(b"found")
    assert await b.receive() == b"found"


async def test_same_seed_same_fate(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    async def run(seed: int) -> list[bytes]:
        async with trio.open_nursery() as inner:
            _, a, b = await _pair(inner, Faults(drop=0.2, duplicate=0.1, reorder=0.3), seed=seed)
            for i in range(200):
                await a.send(i.to_bytes(4, "big"))
            got = await _drain(b)
            inner.cancel_scope.cancel()
        return got

    first, second, other = await run(3), await run(3), await run(4)
    assert first == second
    assert first != other


async def test_overflow_is_bounded_and_counted(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=1, queue_frames=10)
    await nursery.start(net.run)
    a, b = net.connect(net.transport("a"), net.transport("b"))
    for i in range(50):
        await a.send(i.to_bytes(4, "big"))
    await trio.sleep(1)
    got = await _drain(b)
    assert len(got) == 10
    assert net.stats.overflow == 40


def test_faults_validate_probabilities() -> None:
    with pytest.raises(ValueError, match="drop"):
        Faults(drop=1.5)
