"""Gateway replicas (``[anchor] cluster``) sharing one Redis Stream and consumer group: real Redis, real nodes
(no transports: a private message to a peer not heard from yet waits in the sender's outbox, so the outbox shows
which node took each message, and how many times)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from anchor.queue import GROUP, STATUS_LOST, MessageQueue, QueuedMessage, new_message_id
from anchor.services_settings import ServiceSettings
from anchor.stores.redis_store import KEY_PREFIX, RedisStore
from node.identity import create_identity
from node.node import Node
from node.settings import Config
from tests.anchor.gateway.conftest import StartGateway
from tests.anchor.gateway.test_gateway import FULL_PEER_ID

CLAIM_IDLE_S = 0.3  # short, so a stopped replica's entries are claimed within the test


@dataclass
class Replica:
    node: Node
    redis: RedisStore
    cluster: str

    def queue(self) -> MessageQueue:
        """A fresh consumer for this replica's node (what a restarted gateway process makes)."""
        return MessageQueue(
            self.redis, self.node, max_backlog=1000, block_ms=200, cluster=self.cluster, claim_idle_s=CLAIM_IDLE_S
        )

    def outbox_ids(self) -> list[str]:
        assert self.node.outbox is not None
        return [e.id for e in self.node.outbox.list(limit=1000)]


@pytest.fixture
async def replicas(
    services: ServiceSettings, nursery: trio.Nursery, short_tmp: Path
) -> AsyncIterator[tuple[Replica, Replica]]:
    cluster = "t" + secrets.token_hex(6)  # a fresh stream and consumer group for this test
    made = []
    for name in ("a", "b"):
        data = short_tmp / name
        data.mkdir(mode=0o700)
        node = Node(Config(data_dir=data), create_identity(data), transports=[], control=False)
        await nursery.start(node.run)
        made.append(Replica(node, RedisStore(services.redis.url, timeout_s=5.0), cluster))
    yield made[0], made[1]
    for replica in made:
        replica.node.request_stop()
        await replica.redis.aclose()


async def _put(queue: MessageQueue, n: int) -> list[str]:
    ids = []
    for i in range(n):
        message = QueuedMessage(new_message_id(), FULL_PEER_ID, f"message {i}", "key1")
        await queue.put(message)
        ids.append(message.id)
    return ids


async def _until(queue: MessageQueue, ids: Sequence[str], state: str = "pending") -> None:
    with trio.fail_after(20):
        for message_id in ids:
            while True:
                status = await queue.status(message_id)
                if status is not None and status["state"] == state:
                    break
                await trio.sleep(0.02)  # polls Redis; fail_after bounds the wait


async def test_two_replicas_consume_one_stream_each_message_taken_once(
    replicas: tuple[Replica, Replica], nursery: trio.Nursery
) -> None:
    a, b = replicas
    qa, qb = a.queue(), b.queue()
    assert qa.stream == qb.stream == f"messages:{{{a.cluster}}}" and qa.consumer != qb.consumer
    await nursery.start(qa.run)
    await nursery.start(qb.run)
    ids = await _put(qa, 30) + await _put(qb, 30)  # what POST /v1/messages does on either gateway
    await _until(qa, ids)  # settled ("pending": in some node's outbox, waiting for the peer)
    taken = a.outbox_ids() + b.outbox_ids()
    assert sorted(taken) == sorted(ids)  # every message in exactly one node's outbox, none twice
    assert qa.counters["accepted"] + qb.counters["accepted"] == 60
    assert await qa.redis.stream_length(qa.stream) == 0 and await qa.redis.stream_pending_count(qa.stream, GROUP) == 0
    # Either replica answers GET /v1/messages/{id}: the one whose node holds it from its outbox, the other from
    # the status record, naming the replica that has the receipt.
    one = a.outbox_ids()[0] if a.outbox_ids() else b.outbox_ids()[0]
    holder, other = (qa, qb) if one in a.outbox_ids() else (qb, qa)
    assert (await holder.status(one) or {})["state"] == "pending"
    remote = await other.status(one)
    assert remote is not None and remote["state"] == "pending" and holder.consumer in remote["detail"]


async def test_a_stopped_replicas_entries_are_claimed_and_its_in_doubt_entry_resolved_by_it(
    replicas: tuple[Replica, Replica], nursery: trio.Nursery
) -> None:
    a, b = replicas
    qa = a.queue()
    ids = await _put(qa, 4)
    # Replica a reads three entries, then dies: it had begun handing the first to its node (which put it in its
    # outbox) without acknowledging it; the second and third it had only read. The fourth nobody read.
    await qa.redis.stream_ensure_group(qa.stream, GROUP)
    read = await qa.redis.stream_read(qa.stream, GROUP, qa.consumer, count=3)
    assert len(read) == 3
    assert await qa.redis.queue_begin(qa._status_key(ids[0]), qa.consumer, ttl_s=60) == ("mine", "")
    assert a.node.send_private(FULL_PEER_ID, "message 0", message_id=ids[0]) == ids[0]

    qb = b.queue()
    await nursery.start(qb.run)
    await _until(qb, ids[1:])  # the unread one at once, the two read ones once idle for claim_idle_s
    assert qb.counters["claimed"] == 2 and sorted(b.outbox_ids()) == sorted(ids[1:])
    assert (await qb.status(ids[0]) or {})["state"] == "queued"  # in doubt: left to a, not sent by b
    assert await qb.redis.stream_pending_count(qb.stream, GROUP) == 1

    # Replica a starts again (same identity, its outbox kept): it resolves its in-doubt entry without a copy.
    qa2 = a.queue()
    await nursery.start(qa2.run)
    await _until(qa2, ids[:1])
    assert a.outbox_ids() == ids[:1] and sorted(b.outbox_ids()) == sorted(ids[1:])
    assert await qa.redis.stream_length(qa.stream) == 0 and await qa.redis.stream_pending_count(qa.stream, GROUP) == 0


async def test_an_in_doubt_entry_of_a_replica_gone_for_good_is_never_sent_again(
    replicas: tuple[Replica, Replica], nursery: trio.Nursery
) -> None:
    a, b = replicas
    qa = a.queue()
    [message_id] = await _put(qa, 1)
    await qa.redis.stream_ensure_group(qa.stream, GROUP)
    assert len(await qa.redis.stream_read(qa.stream, GROUP, qa.consumer, count=1)) == 1
    # a begins handing it over, its node takes it, and a never comes back.
    assert await qa.redis.queue_begin(qa._status_key(message_id), qa.consumer, ttl_s=60) == ("mine", "")
    assert a.node.send_private(FULL_PEER_ID, "message 0", message_id=message_id) == message_id
    record = f"{KEY_PREFIX}st:{qa._status_key(message_id)}"
    # The in-doubt record does not expire: it names the hand-over until a settles it (TTL -1: none).
    assert await trio.to_thread.run_sync(qa.redis._client.pttl, record) == -1
    # Were it lost anyway (evicted by a Redis not on noeviction, deleted by hand), b claims the entry once idle
    # and settles it as failed, never sends it a second time.
    await trio.to_thread.run_sync(qa.redis._client.delete, record)
    qb = b.queue()
    await nursery.start(qb.run)
    await _until(qb, [message_id], state="failed")
    assert b.outbox_ids() == [] and a.outbox_ids() == [message_id]
    assert qb.counters["claimed"] == 1 and (await qb.status(message_id) or {})["detail"] == STATUS_LOST
    assert await trio.to_thread.run_sync(qa.redis._client.pttl, record) > 0  # settled: it expires again
    assert await qa.redis.stream_length(qa.stream) == 0 and await qa.redis.stream_pending_count(qa.stream, GROUP) == 0


async def test_a_lost_status_record_of_what_this_node_took_before_a_crash_reads_from_its_outbox(
    replicas: tuple[Replica, Replica], nursery: trio.Nursery
) -> None:
    a, _b = replicas
    qa = a.queue()
    [message_id] = await _put(qa, 1)
    await qa.redis.stream_ensure_group(qa.stream, GROUP)
    assert len(await qa.redis.stream_read(qa.stream, GROUP, qa.consumer, count=1)) == 1
    assert await qa.redis.queue_begin(qa._status_key(message_id), qa.consumer, ttl_s=60) == ("mine", "")
    assert a.node.send_private(FULL_PEER_ID, "message 0", message_id=message_id) == message_id
    # a crashes before settling, its record is lost; at its restart its own outbox says the node took it.
    await trio.to_thread.run_sync(qa.redis._client.delete, f"{KEY_PREFIX}st:{qa._status_key(message_id)}")
    qa2 = a.queue()
    await nursery.start(qa2.run)
    await _until(qa2, [message_id])  # "pending": in a's outbox, awaiting the peer; not "failed", not sent twice
    assert a.outbox_ids() == [message_id] and qa2.counters["failed"] == 0
    assert await qa.redis.stream_pending_count(qa.stream, GROUP) == 0


async def test_a_slow_replica_does_not_send_what_another_claimed(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    qa, qb = a.queue(), b.queue()
    [message_id] = await _put(qa, 1)
    await qa.redis.stream_ensure_group(qa.stream, GROUP)
    [entry] = await qa.redis.stream_read(qa.stream, GROUP, qa.consumer, count=1)
    # a hangs with the entry in hand; b claims it once idle and begins handing it over...
    with trio.fail_after(10):
        while True:
            claimed = await qb.redis.stream_claim(qb.stream, GROUP, qb.consumer, [entry.id], min_idle_ms=1)
            if claimed:
                break
            await trio.sleep(0.01)  # until the entry has been idle 1 ms; fail_after bounds the wait
    assert await qb.redis.queue_begin(qb._status_key(message_id), qb.consumer, ttl_s=60) == ("mine", "")
    # ...then a wakes up and handles its stale copy: it must neither send it nor acknowledge it.
    await qa._handle(entry)
    assert a.outbox_ids() == [] and qa.counters["in_doubt"] == 1
    assert await qa.redis.stream_pending_count(qa.stream, GROUP) == 1  # still b's to settle
    await qb._handle(claimed[0])  # b's consumer carries on ("again": it began it)
    assert b.outbox_ids() == [message_id] and (await qb.status(message_id) or {})["state"] == "pending"
    assert await qa.redis.stream_pending_count(qa.stream, GROUP) == 0


async def test_joining_a_cluster_hands_over_what_the_lone_anchor_had_queued(
    start_gateway: StartGateway, short_tmp: Path
) -> None:
    lone = await start_gateway(persistent=True, consume_queue=False)  # accepts, never hands over (then stops)
    async with httpx.AsyncClient(base_url=lone.url) as client:
        _key, secret = await lone.key()
        auth = {"Authorization": f"Bearer {await lone.token(client, secret)}"}
        ids = []
        for text in ("one", "two"):
            r = await client.post("/v1/messages", headers=auth, json={"to": FULL_PEER_ID, "text": text})
            assert r.status_code == 202
            ids.append(r.json()["id"])
    lone.node.request_stop()
    with trio.fail_after(20):
        await lone.stopped.wait()
    jwt = short_tmp / "jwt.secret"
    jwt.write_bytes(secrets.token_bytes(32))
    jwt.chmod(0o600)
    replica = await start_gateway(
        data_dir=lone.cfg.data_dir, persistent=True, cluster="t" + secrets.token_hex(6), jwt_secret_file=str(jwt)
    )
    assert replica.node.outbox is not None
    with trio.fail_after(20):
        await replica.node.wait_until(lambda: len(replica.node.outgoing) == 2)
    assert sorted(e.id for e in replica.node.outbox.list(limit=10)) == sorted(ids)


async def test_a_replica_stopped_mid_batch_gives_back_what_it_did_not_hand_over(
    replicas: tuple[Replica, Replica], nursery: trio.Nursery
) -> None:
    # A stop requested while replica A hands a batch over ends the hand-over at once; the entries A began (status
    # "handing" by A) and did not hand to its node go back to "queued", so replica B claims and sends them now
    # instead of leaving them in doubt until A starts again.
    a, b = replicas
    qa = a.queue()
    ids = await _put(qa, 64)
    handed: list[str] = []
    stop_now = trio.Event()
    send_private = a.node.send_private

    def recording(peer_ref: str, text: str, *, message_id: str | None = None) -> str:
        assert message_id is not None
        handed.append(message_id)
        if len(handed) == 2:
            stop_now.set()  # the stop comes from another task (a signal handler, the control socket)
        return send_private(peer_ref, text, message_id=message_id)

    a.node.send_private = recording  # type: ignore[method-assign]

    async def stopper() -> None:
        await stop_now.wait()
        a.node.request_stop()

    consumer, consumer_done = trio.CancelScope(), trio.Event()

    async def consume() -> None:
        with consumer:
            await qa.run()
        consumer_done.set()  # its shielded settle (and give-back) done

    async def anchor_service() -> None:  # as anchor/run.py does: the consumer is cancelled when a stop is requested
        await a.node.wait_stop_requested()
        consumer.cancel()

    nursery.start_soon(stopper)
    nursery.start_soon(anchor_service)
    nursery.start_soon(consume)
    with trio.fail_after(20):
        await a.node.stopped.wait()
        await consumer_done.wait()
    rest = [i for i in ids if i not in handed]
    assert 2 <= len(handed) < 64
    records = {i: await a.redis.status_get(qa._status_key(i)) or {} for i in ids}
    assert {records[i].get("state") for i in handed} == {"accepted"}
    assert {records[i].get("state") for i in rest} == {"queued"}
    qb = b.queue()
    consumer_b = trio.CancelScope()

    async def consume_b() -> None:
        with consumer_b:
            await qb.run()

    nursery.start_soon(consume_b)
    await _until(qb, rest)
    assert sorted(b.outbox_ids()) == sorted(rest) and qb.counters["claimed"] == len(rest)
    consumer_b.cancel()
