"""The queue's consumer settles a read batch in one atomic step, and a settle that fails sends nothing twice:
real Redis (reached through a proxy that cuts it off at the moment of the settle), a real node without transports."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from anchor.queue import GROUP, READ_COUNT, MessageQueue, QueuedMessage, new_message_id
from anchor.services_settings import ServiceSettings
from anchor.stores.errors import StoreUnavailable
from anchor.stores.redis_store import RedisStore
from node.identity import create_identity, identity_exists, load_identity
from node.node import Node
from node.settings import Config
from node.transports.memory import MemoryNetwork
from tests.anchor.gateway.proxy import TcpProxy


class CutAtSettle(RedisStore):
    """A real store whose path to Redis is cut just as the consumer settles its first batch (after the node took
    the batch), and restored once that settle failed; every settle's size is recorded."""

    def __init__(self, url: str, proxy: TcpProxy) -> None:
        super().__init__(url, timeout_s=2.0)
        self.proxy = proxy
        self.settles: list[int] = []  # entries per settle call, in order
        self.failed: list[BaseException] = []
        self.cut = True

    async def queue_settle_many(
        self,
        stream: str,
        group: str,
        settles: Sequence[tuple[str, str | None, Mapping[str, str] | None]],
        *,
        ttl_s: float,
    ) -> int:
        self.settles.append(len(settles))
        if not self.cut:
            return await super().queue_settle_many(stream, group, settles, ttl_s=ttl_s)
        self.cut = False
        self.proxy.down()
        try:
            return await super().queue_settle_many(stream, group, settles, ttl_s=ttl_s)
        except StoreUnavailable as exc:
            self.failed.append(exc)
            raise
        finally:
            await self.proxy.up()


async def _statuses(queue: MessageQueue, ids: Sequence[str], state: str) -> list[dict[str, Any]]:
    with trio.fail_after(20):
        while True:
            got = [await queue.status(i) for i in ids]
            if all(s is not None and s["state"] == state for s in got):
                return [s for s in got if s is not None]
            await trio.sleep(0.02)  # polls Redis; fail_after bounds the wait


async def test_a_failed_settle_sends_no_broadcast_twice_and_a_batch_settles_in_one_step(
    services: ServiceSettings, nursery: trio.Nursery, short_tmp: Path
) -> None:
    proxy = TcpProxy(services.redis.host, services.redis.port)
    await nursery.start(proxy.run)
    redis = CutAtSettle(f"redis://:{services.redis.password}@127.0.0.1:{proxy.port}/0", proxy)
    direct = RedisStore(services.redis.url, timeout_s=5.0)

    data = short_tmp / "anchor"
    data.mkdir(mode=0o700)
    node = Node(Config(data_dir=data), create_identity(data), transports=[], control=False)
    await nursery.start(node.run)
    # A lone anchor (no cluster): its stream is its node's own, fresh with the new identity.
    queue = MessageQueue(redis, node, max_backlog=1000, block_ms=200)
    texts = [f"broadcast {i} {secrets.token_hex(4)}" for i in range(40)]
    ids = []
    filler = MessageQueue(direct, node, max_backlog=1000, block_ms=200)
    for text in texts:  # queued before the consumer starts: it reads them as one batch
        message = QueuedMessage(new_message_id(), None, text, "key1")
        await filler.put(message)
        ids.append(message.id)
    assert len(texts) <= READ_COUNT

    consumer = trio.CancelScope()

    async def consume() -> None:
        with consumer:
            await queue.run()

    nursery.start_soon(consume)
    statuses = await _statuses(filler, ids, "sent")
    consumer.cancel()

    # The first settle (all 40 entries, one script) met the cut and failed; the consumer settled the same 40 once
    # Redis answered again, without handing them to the node a second time: each text was broadcast once.
    assert redis.failed and redis.settles == [40, 40]
    sent = [m.text for m in node.outgoing.values() if m.to is None]
    assert sorted(sent) == sorted(texts)
    assert queue.counters["accepted"] == 40 and queue.counters["duplicates"] == 0
    assert {s["mesh_id"] for s in statuses} == {m.id for m in node.outgoing.values() if m.to is None}
    assert await direct.stream_length(queue.stream) == 0
    assert await direct.stream_pending_count(queue.stream, GROUP) == 0
    assert not queue._unsettled
    node.request_stop()
    await redis.aclose()
    await direct.aclose()


class StopAtSettle(RedisStore):
    """A real store that cancels the consumer (as a stopping gateway's nursery does) just as it settles a batch."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout_s=5.0)
        self.stop: trio.CancelScope | None = None
        self.settled: list[int] = []

    async def queue_settle_many(
        self,
        stream: str,
        group: str,
        settles: Sequence[tuple[str, str | None, Mapping[str, str] | None]],
        *,
        ttl_s: float,
    ) -> int:
        if self.stop is not None:
            self.stop.cancel()
        acked = await super().queue_settle_many(stream, group, settles, ttl_s=ttl_s)
        self.settled.append(acked)
        return acked


async def test_a_stop_during_the_settle_waits_for_it(
    services: ServiceSettings, nursery: trio.Nursery, short_tmp: Path
) -> None:
    redis = StopAtSettle(services.redis.url)
    data = short_tmp / "anchor"
    data.mkdir(mode=0o700)
    node = Node(Config(data_dir=data), create_identity(data), transports=[], control=False)
    await nursery.start(node.run)
    queue = MessageQueue(redis, node, max_backlog=1000, block_ms=200)
    ids = []
    for i in range(5):
        message = QueuedMessage(new_message_id(), None, f"broadcast {i}", "key1")
        await queue.put(message)
        ids.append(message.id)
    with trio.CancelScope() as stop:
        redis.stop = stop
        with trio.fail_after(20):
            await queue.run()
    # Cancelled at the settle, the consumer still settled what the node took: nothing is left to be broadcast
    # again at the next start.
    assert redis.settled == [5]
    assert [(await queue.status(i) or {}).get("state") for i in ids] == ["sent"] * 5
    assert await redis.stream_pending_count(queue.stream, GROUP) == 0
    node.request_stop()
    await redis.aclose()


async def test_a_batch_of_private_messages_lets_the_node_run_between_hand_overs(
    services: ServiceSettings, nursery: trio.Nursery, short_tmp: Path
) -> None:
    # Each private message costs the node an fsync of its outbox: a batch of 64 handed over without a checkpoint
    # stalled the event loop for ~0.5 s. A task that runs at every scheduling round must run between hand-overs.
    redis = RedisStore(services.redis.url, timeout_s=5.0)
    data, other = short_tmp / "anchor", short_tmp / "peer"
    data.mkdir(mode=0o700)
    other.mkdir(mode=0o700)
    peer = create_identity(other).peer_id_hex
    node = Node(Config(data_dir=data), create_identity(data), transports=[], control=False)
    await nursery.start(node.run)
    queue = MessageQueue(redis, node, max_backlog=1000, block_ms=200)
    ids = []
    for i in range(READ_COUNT):  # queued before the consumer starts: one batch
        message = QueuedMessage(new_message_id(), peer, f"private {i}", "key1")
        await queue.put(message)
        ids.append(message.id)

    rounds = 0

    async def ticker() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await trio.lowlevel.checkpoint()

    seen: list[int] = []  # the ticker's rounds at each hand-over
    send_private = node.send_private

    def recording(peer_ref: str, text: str, *, message_id: str | None = None) -> str:
        seen.append(rounds)
        return send_private(peer_ref, text, message_id=message_id)

    node.send_private = recording  # type: ignore[method-assign]
    nursery.start_soon(ticker)
    consumer = trio.CancelScope()

    async def consume() -> None:
        with consumer:
            await queue.run()

    nursery.start_soon(consume)
    await _statuses(queue, ids, "pending")
    consumer.cancel()
    assert len(seen) == READ_COUNT  # each handed over once, in one batch
    assert all(later > earlier for earlier, later in zip(seen, seen[2:], strict=False))
    assert queue.counters["accepted"] == READ_COUNT and not queue._unsettled
    node.request_stop()
    await redis.aclose()


async def test_an_unsettled_entry_another_replica_holds_for_a_moment_is_not_handed_over_twice(
    services: ServiceSettings, nursery: trio.Nursery, short_tmp: Path
) -> None:
    # Replica A hands a broadcast to its node and its settle fails (the path to Redis cut at that moment): A
    # remembers it. Replica B claims the entry meanwhile (it finds it being handed over by A, so it gives it back).
    # A's recovery must not forget the entry while B holds it — or, given back, A would broadcast it again.
    proxy = TcpProxy(services.redis.host, services.redis.port)
    await nursery.start(proxy.run)
    redis = CutAtSettle(f"redis://:{services.redis.password}@127.0.0.1:{proxy.port}/0", proxy)
    data = short_tmp / "a"
    data.mkdir(mode=0o700)
    node = Node(Config(data_dir=data), create_identity(data), transports=[], control=False)
    await nursery.start(node.run)
    queue = MessageQueue(redis, node, max_backlog=100, block_ms=200, cluster="c" + secrets.token_hex(4))
    text = f"broadcast {secrets.token_hex(4)}"
    message = QueuedMessage(new_message_id(), None, text, "key1")
    await queue.redis.stream_ensure_group(queue.stream, GROUP)
    await queue.put(message)
    entries = await redis.stream_read(queue.stream, GROUP, queue.consumer, count=READ_COUNT)
    assert [e.id for e in entries] and len(entries) == 1
    with trio.fail_after(20), pytest.raises(StoreUnavailable):
        await queue._handle_batch(entries, recovered=False)
    assert redis.failed and list(queue._unsettled) == [entries[0].id]

    await redis.stream_claim(queue.stream, GROUP, "replica-b", [entries[0].id], min_idle_ms=0)  # B holds it
    await queue._drain_pending()  # A's own pending list is empty now
    await redis.stream_claim(queue.stream, GROUP, queue.consumer, [entries[0].id], min_idle_ms=0)  # B gives it back
    await queue._drain_pending()

    assert [m.text for m in node.outgoing.values() if m.to is None] == [text]  # broadcast once
    assert (await queue.status(message.id) or {}).get("state") == "sent"
    assert await redis.stream_pending_count(queue.stream, GROUP) == 0
    assert not queue._unsettled
    node.request_stop()
    await redis.aclose()


async def test_a_stop_requested_mid_batch_loses_no_broadcast(
    services: ServiceSettings, nursery: trio.Nursery, short_tmp: Path
) -> None:
    # A stop (SIGTERM, `village stop`) requested by another task while the consumer hands a batch of broadcasts
    # over: the node's drain sends LEAVE and closes its links, so a broadcast handed over after that would be
    # settled "accepted" and never sent (broadcasts have no outbox). Every entry settled as sent must reach the
    # peer; the ones not handed over stay pending for the next start, which sends them.
    redis = RedisStore(services.redis.url, timeout_s=5.0)
    net = MemoryNetwork(seed=1)
    await nursery.start(net.run)
    data, other = short_tmp / "anchor", short_tmp / "peer"
    data.mkdir(mode=0o700)
    other.mkdir(mode=0o700)
    tb = net.transport("b")
    b = Node(Config(data_dir=other), create_identity(other), transports=[tb], control=False)
    await nursery.start(b.run)

    async def start_anchor(name: str) -> Node:
        ta = net.transport(name)
        identity = load_identity(data) if identity_exists(data) else create_identity(data)
        node = Node(Config(data_dir=data), identity, transports=[ta], control=False)
        await nursery.start(node.run)
        net.connect(ta, tb)
        with trio.fail_after(20):
            await b.wait_until(lambda: b.core is not None and b.core.peers.get(node.identity.peer_id) is not None)
        return node

    def received() -> set[str]:
        assert b.inbox is not None
        return {m.text for m in b.inbox.list(limit=1000) if m.text.startswith("broadcast ")}

    a = await start_anchor("a")
    queue = MessageQueue(redis, a, max_backlog=1000, block_ms=200)
    messages = [QueuedMessage(new_message_id(), None, f"broadcast {i}", "key1") for i in range(READ_COUNT)]
    for message in messages:  # queued before the consumer starts: one batch
        await queue.put(message)

    handed: list[str] = []
    stop_now = trio.Event()
    broadcast = a.broadcast

    def recording(text: str) -> str:
        handed.append(text)
        if len(handed) == 2:
            stop_now.set()  # the stop comes from another task (a signal handler, the control socket)
        return broadcast(text)

    a.broadcast = recording  # type: ignore[method-assign]

    async def stopper() -> None:
        await stop_now.wait()
        a.request_stop()

    consumer, consumer_done = trio.CancelScope(), trio.Event()

    async def consume() -> None:
        with consumer:
            await queue.run()
        consumer_done.set()  # its shielded settle done

    async def anchor_service() -> None:  # as anchor/run.py does: the consumer is cancelled when a stop is requested
        await a.wait_stop_requested()
        consumer.cancel()

    nursery.start_soon(stopper)
    nursery.start_soon(anchor_service)
    nursery.start_soon(consume)
    with trio.fail_after(20):
        await a.stopped.wait()
        await consumer_done.wait()
    states = [(await queue.status(m.id) or {}).get("state") for m in messages]
    sent = {m.text for m, state in zip(messages, states, strict=True) if state == "sent"}
    assert 2 <= len(handed) < READ_COUNT and sent == set(handed)
    assert states.count("queued") == READ_COUNT - len(sent)
    assert await redis.stream_pending_count(queue.stream, GROUP) == READ_COUNT - len(sent)
    with trio.fail_after(20):
        await b.wait_until(lambda: sent <= received())  # B processes what A's drain sent

    # The next start hands the rest over: every broadcast reaches the peer, each once.
    a2 = await start_anchor("a2")
    queue2 = MessageQueue(redis, a2, max_backlog=1000, block_ms=200)
    consumer2 = trio.CancelScope()

    async def consume2() -> None:
        with consumer2:
            await queue2.run()

    nursery.start_soon(consume2)
    await _statuses(queue2, [m.id for m in messages], "sent")
    with trio.fail_after(20):
        await b.wait_until(lambda: len(received()) == READ_COUNT)
    assert received() == {m.text for m in messages}
    assert queue2.counters["accepted"] == READ_COUNT - len(sent)
    consumer2.cancel()
    a2.request_stop()
    b.request_stop()
    await redis.aclose()
