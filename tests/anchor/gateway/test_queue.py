"""POST /v1/messages through the Redis Stream queue: real gateway, real Redis, real nodes on memory links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from anchor.queue import CONSUMER, GROUP, MessageQueue, QueuedMessage, new_message_id
from anchor.services_settings import ServiceSettings
from anchor.stores.redis_store import RedisStore
from node.identity import create_identity
from node.inbox import InboxMessage
from node.node import Node
from node.settings import Config
from node.transports.memory import MemoryNetwork
from tests.anchor.gateway.conftest import Gateway, StartGateway
from tests.anchor.gateway.test_gateway import FULL_PEER_ID, until_settled


async def _auth(gateway: Gateway, client: httpx.AsyncClient, role: str = "user") -> tuple[str, dict[str, str]]:
    key_id, secret = await gateway.key(role)
    return key_id, {"Authorization": f"Bearer {await gateway.token(client, secret)}"}


async def _status(client: httpx.AsyncClient, auth: dict[str, str], message_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/messages/{message_id}", headers=auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_accepted_messages_survive_a_restart_and_are_sent_exactly_once(
    start_gateway: StartGateway, services: ServiceSettings, nursery: trio.Nursery, short_tmp: Path
) -> None:
    net = MemoryNetwork(seed=3)
    await nursery.start(net.run)
    receiver_dir = short_tmp / "receiver"
    receiver_dir.mkdir(mode=0o700)
    to_receiver = net.transport("receiver")
    receiver_id = create_identity(receiver_dir)
    receiver = Node(Config(data_dir=receiver_dir), receiver_id, transports=[to_receiver], control=False)
    await nursery.start(receiver.run)
    peer = receiver.identity.peer_id_hex

    # The first anchor accepts three messages but never hands them to its node (as if it died right after).
    first = await start_gateway(transports=[net.transport("anchor-1")], persistent=True, consume_queue=False)
    async with httpx.AsyncClient(base_url=first.url) as client:
        _key, auth = await _auth(first, client)
        ids = []
        for text in ("one", "two", "three"):
            r = await client.post("/v1/messages", headers=auth, json={"to": peer, "text": text})
            assert r.status_code == 202 and r.json()["state"] == "queued", r.text
            ids.append(r.json()["id"])
        assert [(await _status(client, auth, i))["state"] for i in ids] == ["queued"] * 3
    # Crash points: "one" was read by the consumer but never reached the outbox; "two" reached the outbox but
    # was not acknowledged; "three" was never read.
    await first.audit_drained()  # the drain hands each message to the stream once its audit row committed
    redis = RedisStore(services.redis.url, timeout_s=5.0)
    stream = f"messages:{first.node.identity.peer_id_hex}"
    await redis.stream_ensure_group(stream, GROUP)
    read = await redis.stream_read(stream, GROUP, CONSUMER, count=2)
    assert len(read) == 2
    assert first.node.send_private(peer, "two", message_id=ids[1]) == ids[1]
    first.node.request_stop()
    with trio.fail_after(20):
        await first.stopped.wait()

    to_second = net.transport("anchor-2")
    second = await start_gateway(transports=[to_second], data_dir=first.cfg.data_dir, persistent=True)
    assert second.node.identity.peer_id_hex == first.node.identity.peer_id_hex
    async with httpx.AsyncClient(base_url=second.url) as client:
        _key2, auth2 = await _auth(second, client, "admin")
        states = [(await until_settled(client, auth2, i))["state"] for i in ids]
        assert states == ["pending"] * 3  # in the outbox, waiting for the receiver
        assert second.node.outbox is not None
        outbox = second.node.outbox.list(limit=100)
        assert sorted(e.id for e in outbox) == sorted(ids)  # one row each: "two" was not accepted twice
        assert await redis.stream_length(stream) == 0 and await redis.stream_pending_count(stream, GROUP) == 0

        inbox = receiver.subscribe_inbox()
        net.connect(to_receiver, to_second)
        got: list[InboxMessage] = []
        with trio.fail_after(30):
            while len(got) < 3:
                got.append(await inbox.receive())
            await second.node.wait_until(lambda: all(second.node.outgoing[i].state == "delivered" for i in ids))
        assert [(await _status(client, auth2, i))["state"] for i in ids] == ["delivered"] * 3
        assert sorted(m.text for m in got) == ["one", "three", "two"]
        assert sorted(m.id for m in got) == sorted(ids)  # the IDs the gateway's client got
    await redis.aclose()
    receiver.request_stop()


async def test_status_route_refusals_and_failures(start_gateway: StartGateway, services: ServiceSettings) -> None:
    gateway = await start_gateway()
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        alice_id, alice = await _auth(gateway, client)
        _bob, bob = await _auth(gateway, client)
        _admin, admin = await _auth(gateway, client, "admin")
        r = await client.post("/v1/messages", headers=alice, json={"to": FULL_PEER_ID, "text": "for later"})
        message_id = r.json()["id"]
        status = await until_settled(client, alice, message_id)
        assert status == {"id": message_id, "to": FULL_PEER_ID, "state": "pending", "detail": "", "mesh_id": message_id}
        assert (await client.get(f"/v1/messages/{message_id}", headers=bob)).status_code == 404  # not bob's
        assert (await _status(client, admin, message_id))["state"] == "pending"  # admins see every message
        r = await client.get(f"/v1/messages/{new_message_id()}", headers=alice)
        assert (r.status_code, r.json()["error"]) == (404, "unknown_message")

        # Refused up front (400, nothing queued) where the gateway can check: unknown peer, too long, own ID.
        own = gateway.node.identity.peer_id_hex
        for body in ({"to": "nobody", "text": "x"}, {"to": FULL_PEER_ID, "text": "é" * 200}, {"to": own, "text": "x"}):
            r = await client.post("/v1/messages", headers=alice, json=body)
            assert (r.status_code, r.json()["error"]) == (400, "mesh_rejected"), r.text

        # A message the node refuses when it reads it (here one that skipped the gateway's checks) is settled
        # as failed, with the node's reason, and the queue moves on.
        redis = RedisStore(services.redis.url, timeout_s=5.0)
        queue = MessageQueue(redis, gateway.node, max_backlog=100, block_ms=0)
        bad_id = new_message_id()
        await queue.put(QueuedMessage(bad_id, own, "to myself", alice_id))
        failed = await until_settled(client, alice, bad_id)
        assert failed["state"] == "failed" and "own peer ID" in failed["detail"]
        # An entry that is not a queued message (written by something else) is dropped, not retried forever.
        await redis.stream_add(queue.stream, {"m": b"\xff not json"})
        r = await client.post("/v1/messages", headers=alice, json={"text": "still flowing"})
        assert (await until_settled(client, alice, r.json()["id"]))["state"] == "sent"
        assert await redis.stream_length(queue.stream) == 0  # settled entries leave the stream: XLEN is the backlog
        await redis.aclose()


async def test_a_full_queue_and_a_redis_outage_give_503(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(queue_max=2, consume_queue=False)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        key_id, auth = await _auth(gateway, client)
        for _ in range(2):
            assert (await client.post("/v1/messages", headers=auth, json={"text": "x"})).status_code == 202
        r = await client.post("/v1/messages", headers=auth, json={"text": "one too many"})
        assert (r.status_code, r.json()["error"]) == (503, "queue_full") and r.headers["Retry-After"] == "1"
        gateway.redis_proxy.down()
        r = await client.post("/v1/messages", headers=auth, json={"to": FULL_PEER_ID, "text": "redis is down"})
        assert (r.status_code, r.json()["error"], r.json()["store"]) == (503, "store_unavailable", "redis")
        await gateway.redis_proxy.up()
    actions = [r.action for r in await gateway.audit_of(key_id)]
    assert actions == ["auth.token"] + ["messages.broadcast"] * 3  # the refused one was audited, not queued
