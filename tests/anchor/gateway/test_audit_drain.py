"""POST /v1/messages in one Redis step: the audit record carrying the message, drained to PostgreSQL at least once
and exactly once in the table, the message handed to the node only after its row committed; the one-step path
keeps the rate limits, revocation and the refusals' answers."""

from __future__ import annotations

import json
import random
import secrets
from typing import Any

import httpx
import psycopg
import redis as redis_sync
import trio

from anchor.audit_drain import GROUP, AuditDrain
from anchor.services_settings import ServiceSettings
from anchor.stores.errors import StoreUnavailable
from anchor.stores.postgres import PostgresStore
from anchor.stores.redis_store import KEY_PREFIX, AuditRecord, RedisStore
from tests.anchor.gateway.conftest import Gateway, StartGateway

FULL_PEER_ID = "0123456789abcdef"  # a peer not heard from yet: accepted and held in the outbox


async def _auth(gateway: Gateway, client: httpx.AsyncClient, scope: str | None = None) -> tuple[str, dict[str, str]]:
    key_id, secret = await gateway.key("user")
    return key_id, {"Authorization": f"Bearer {await gateway.token(client, secret, scope)}"}


def _entries(services: ServiceSettings, key: str) -> list[dict[str, str]]:
    client = redis_sync.Redis.from_url(services.redis.url)
    try:
        rows: Any = client.xrange(key)  # redis-py's sync stubs type this loosely; entries are (id, {bytes: bytes})
        return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in rows]
    finally:
        client.close()


async def _actions(pg: PostgresStore, key_id: str) -> list[tuple[str, Any]]:
    """This key's audit rows in PostgreSQL now (no waiting for the drain): (action, detail id)."""
    rows = reversed(await pg.recent_audit(limit=1000))
    return [(r.action, r.detail.get("id")) for r in rows if r.actor == f"key:{key_id}"]


async def test_audit_records_precede_messages_and_reach_postgresql_after_a_dead_drain(
    start_gateway: StartGateway, services: ServiceSettings, pg_dsn: str
) -> None:
    gateway = await start_gateway(drain_audit=False, consume_queue=False)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        key_id, auth = await _auth(gateway, client)
        ids = []
        for body in ({"text": "one"}, {"to": FULL_PEER_ID, "text": "two"}, {"text": "three"}):
            r = await client.post("/v1/messages", headers=auth, json=body)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
    # Accepted: every message waits in its audit record in Redis (one atomic step); none is in the node's stream
    # before its audit row is in PostgreSQL ...
    audit_key = KEY_PREFIX + gateway.audit_stream
    records = await trio.to_thread.run_sync(_entries, services, audit_key)
    queue_key = f"{KEY_PREFIX}q:messages:{gateway.node.identity.peer_id_hex}"
    assert await trio.to_thread.run_sync(_entries, services, queue_key) == []
    assert [json.loads(r["m"])["id"] for r in records] == ids
    assert {r["q"] for r in records} == {f"messages:{gateway.node.identity.peer_id_hex}"}
    assert [(r["eid"], r["action"], r["target"]) for r in records] == [
        (f"msg:{ids[0]}", "messages.broadcast", "*"),
        (f"msg:{ids[1]}", "messages.send", FULL_PEER_ID),
        (f"msg:{ids[2]}", "messages.broadcast", "*"),
    ]
    assert all(r["actor"] == f"key:{key_id}" for r in records)
    # ... and none in PostgreSQL yet: nothing drains (the gateway's drain is blocked).
    assert await _actions(gateway.pg, key_id) == [("auth.token", None)]

    # A drain dies with its batch read and not acknowledged: PostgreSQL is cut off under its insert ...
    proxied = psycopg.conninfo.make_conninfo(pg_dsn, host="127.0.0.1", port=gateway.pg_proxy.port)
    redis_store = RedisStore(services.redis.url, timeout_s=5.0)
    async with PostgresStore(proxied, timeout_s=2.0) as pg_dead, PostgresStore(pg_dsn, timeout_s=5.0) as pg_live:
        dead = AuditDrain(redis_store, pg_dead, "dead-drain", claim_idle_s=3600, stream=gateway.audit_stream)
        await redis_store.audit_ensure_group(dead.stream, GROUP)
        gateway.pg_proxy.down()
        try:
            await dead.drain_once()
        except StoreUnavailable:
            pass
        else:
            raise AssertionError("the insert should have failed")
        await gateway.pg_proxy.up()
        # ... after its insert of one record committed (a drain that died between INSERT and XACK).
        first = records[0]
        await pg_live.audit_drained(
            [(first["eid"], int(first["at_ms"]), first["actor"], first["action"], first["target"], first["detail"])]
        )
        assert await redis_store.audit_backlog(dead.stream) == 3  # still waiting, pending on the dead consumer
        assert await trio.to_thread.run_sync(_entries, services, queue_key) == []  # nothing handed over
        # Pruning past drains' names never forgets one that holds records.
        assert await redis_store.audit_prune_consumers(dead.stream, GROUP, idle_ms=0, keep="other-drain") == 0

        # Another gateway's drain takes the dead one's records over once they are idle long enough and inserts
        # them; the one already there is not duplicated.
        other = AuditDrain(redis_store, pg_live, "other-drain", claim_idle_s=0.1, stream=gateway.audit_stream)
        with trio.fail_after(10):
            while True:  # polled until the records have been idle for 0.1 s (the server's clock)
                if await other.drain_once():
                    break
                await trio.sleep(0.05)
        assert other.counters == {
            "drained": 2,
            "duplicates": 1,
            "malformed": 0,
            "refused": 0,
            "handed_over": 3,
            "batches": 1,
            "errors": 0,
        }
        assert await redis_store.audit_backlog(dead.stream) == 0
        # Now, and once each, the messages are in the node's stream.
        queued = await trio.to_thread.run_sync(_entries, services, queue_key)
        assert [json.loads(m["m"])["id"] for m in queued] == ids
        # The dead drain holds nothing now: its name can go (the live one stays).
        assert await redis_store.audit_prune_consumers(dead.stream, GROUP, idle_ms=0, keep="other-drain") == 1
    await redis_store.aclose()
    audited = await _actions(gateway.pg, key_id)
    assert audited == [
        ("auth.token", None),
        ("messages.broadcast", ids[0]),
        ("messages.send", ids[1]),
        ("messages.broadcast", ids[2]),
    ]


async def test_a_full_audit_backlog_refuses_messages_and_a_stopping_gateway_flushes(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(drain_audit=False, consume_queue=False, audit_backlog_max=2)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        key_id, auth = await _auth(gateway, client)
        for _ in range(2):
            assert (await client.post("/v1/messages", headers=auth, json={"text": "x"})).status_code == 202
        r = await client.post("/v1/messages", headers=auth, json={"text": "one audit record too many"})
        assert (r.status_code, r.json()["error"]) == (503, "audit_backlog_full"), r.text
    assert await gateway.redis.audit_backlog(gateway.audit_stream) == 2  # the refused one wrote nothing
    own_stream = f"messages:{gateway.node.identity.peer_id_hex}"
    assert await gateway.redis.stream_length(own_stream) == 0  # waiting for their audit rows

    # A gateway with its drain, on the same database and Redis, drains them; at stop it flushes what waits.
    drained = await start_gateway(consume_queue=False)
    async with httpx.AsyncClient(base_url=drained.url) as client:
        other_id, other_auth = await _auth(drained, client)
        assert (await client.post("/v1/messages", headers=other_auth, json={"text": "y"})).status_code == 202
    drained.node.request_stop()
    with trio.fail_after(30):
        await drained.stopped.wait()
    assert await gateway.redis.audit_backlog(gateway.audit_stream) == 0
    assert await gateway.redis.stream_length(own_stream) == 2  # handed over by the other gateway's drain
    assert [a for a, _ in await _actions(gateway.pg, key_id)] == ["auth.token"] + ["messages.broadcast"] * 2
    assert [a for a, _ in await _actions(gateway.pg, other_id)] == ["auth.token", "messages.broadcast"]


async def test_one_step_sends_keep_limits_revocation_and_refusals(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(key_rate_per_s=0.01, key_burst=3, ip_rate_per_s=0.01, ip_burst=8)
    ip = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    transport = httpx.AsyncHTTPTransport(local_address=ip)
    async with httpx.AsyncClient(base_url=gateway.url, transport=transport) as client:
        key_id, auth = await _auth(gateway, client)  # key 1/3, IP 1/8
        # The first request fills the key cache (through the FastAPI route); the next takes the one-step path.
        statuses = [(await client.post("/v1/messages", headers=auth, json={"text": "hi"})).status_code for _ in "abc"]
        assert statuses == [202, 202, 429]  # key 3/3, then refused by the key's bucket; IP 4/8
        limited = await client.post("/v1/messages", headers=auth, json={"text": "still limited"})  # IP 5/8
        assert limited.status_code == 429 and "per-key" in limited.json()["detail"]
        assert int(limited.headers["Retry-After"]) >= 60

        # Refusals keep their answers (each still spends the IP's token first, as on every route).
        _b_id, b_auth = await _auth(gateway, client, scope="node:read")  # IP 6/8
        r = await client.post("/v1/messages", headers=b_auth, json={"text": "no scope"})  # IP 7/8
        assert (r.status_code, r.json()["error"]) == (403, "forbidden")
        r = await client.post("/v1/messages", headers={"Authorization": "Bearer forged"}, json={"text": "x"})
        assert (r.status_code, r.json()["error"]) == (401, "invalid_token")  # IP 8/8
        r = await client.post("/v1/messages", headers=auth, json={"text": "IP now empty"})
        assert r.status_code == 429 and "per-ip" in r.json()["detail"]

    gateway2 = await start_gateway()  # relaxed limits
    async with httpx.AsyncClient(base_url=gateway2.url) as client:
        _admin_id, admin_secret = await gateway2.key("admin")
        admin = {"Authorization": f"Bearer {await gateway2.token(client, admin_secret)}"}
        c_id, c_auth = await _auth(gateway2, client)
        for body, expected in [
            ({"text": "cache fill"}, 202),
            ({"text": "one step"}, 202),
            ({"text": ""}, 422),
            ({"text": "x", "to": ""}, 422),
            ({"text": 5}, 422),
            ({"to": "nobody", "text": "x"}, 400),
            ({"to": FULL_PEER_ID, "text": "é" * 200}, 400),
        ]:
            r = await client.post("/v1/messages", headers=c_auth, json=body)
            assert r.status_code == expected, (body, r.text)
        r = await client.post("/v1/messages", headers={**c_auth, "Content-Type": "application/json"}, content=b"{no")
        assert r.status_code == 422
        # A revocation through the anchor stops the key's very next message.
        assert (await client.delete(f"/v1/keys/{c_id}", headers=admin)).status_code == 200
        r = await client.post("/v1/messages", headers=c_auth, json={"text": "after revocation"})
        assert (r.status_code, r.json()["error"]) == (401, "key_revoked")
    assert [a for a, _ in await _actions_after_drain(gateway2, c_id)] == ["auth.token"] + ["messages.broadcast"] * 2
    assert [a for a, _ in await _actions_after_drain(gateway, key_id)] == ["auth.token"] + ["messages.broadcast"] * 2


async def _actions_after_drain(gateway: Gateway, key_id: str) -> list[tuple[str, Any]]:
    await gateway.audit_drained()
    return await _actions(gateway.pg, key_id)


async def test_the_one_step_script_spends_tokens_as_the_route_would(services: ServiceSettings) -> None:
    """Store level: a key not cached as active spends nothing; the per-IP buckets are taken one after the other
    (an IPv6 client's /64 token stays spent when its /48 refuses, as the route's dependency does it); a per-key
    refusal leaves the IP's tokens spent; only an accepted send writes an audit record and a message."""
    run = secrets.token_hex(4)
    redis_store = RedisStore(services.redis.url, timeout_s=5.0)
    audit, queue = f"audit:t_{run}", f"t-{run}"

    async def send(n: int) -> str:
        record = AuditRecord(f"t:{run}:{n}", "key:t", "messages.broadcast", "*", "{}")
        outcome = await redis_store.send_audited(
            audit_stream=audit,
            stream=queue,
            status_key=f"t:{run}:{n}",
            status={"state": "queued"},
            payload=b"{}",
            record=record,
            max_audit_backlog=100,
            max_backlog=100,
            ttl_s=60,
            key_cache=f"apikey:t_{run}",
            ip_buckets=((f"ip:{run}:64", 0.01, 5), (f"ip:{run}:48", 0.01, 1)),
            key_bucket=(f"key:{run}", 0.01, 1),
        )
        return outcome.result

    try:
        assert await send(0) == "miss"  # not cached: nothing spent (the route asks PostgreSQL)
        await redis_store.session_set(f"apikey:t_{run}", {"revoked": True}, 60)
        assert await send(1) == "miss"  # cached as revoked: the route answers 401
        await redis_store.session_set(f"apikey:t_{run}", {"revoked": False}, 60)
        assert await send(2) == "ok"  # /64 4 left, /48 0, key 0
        assert await send(3) == "ip"  # /64 spent (3 left), /48 refuses
        assert (await redis_store.take_token(f"ip:{run}:64", 0.01, 5, cost=3)).allowed  # exactly 3 were left
        assert not (await redis_store.take_token(f"ip:{run}:64", 0.01, 5)).allowed
        assert await redis_store.audit_backlog(audit) == 1 and await redis_store.stream_length(queue) == 0
        # A per-key refusal after the IP buckets allowed: the IP's tokens stay spent, nothing is written.
        ip_only = ((f"ip:{run}:v4", 0.01, 2),)
        record = AuditRecord(f"t:{run}:k", "key:t", "messages.broadcast", "*", "{}")
        args: dict[str, Any] = {
            "audit_stream": audit,
            "stream": queue,
            "status_key": f"t:{run}:k",
            "status": {"state": "queued"},
            "payload": b"{}",
            "record": record,
            "max_audit_backlog": 100,
            "max_backlog": 100,
            "ttl_s": 60,
            "key_cache": f"apikey:t_{run}",
            "ip_buckets": ip_only,
            "key_bucket": (f"key:{run}", 0.01, 1),
        }
        assert (await redis_store.send_audited(**args)).result == "key"
        assert (await redis_store.send_audited(**args)).result == "key"
        assert (await redis_store.send_audited(**args)).result == "ip"  # the 2 IP tokens went to the refusals
        assert await redis_store.audit_backlog(audit) == 1 and await redis_store.stream_length(queue) == 0
    finally:
        await redis_store.aclose()
