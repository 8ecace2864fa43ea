"""A message reaches the node only once its audit row is durable in PostgreSQL, no audit-stream entry — hostile,
broken, or refused by PostgreSQL — stops the drain, the gateway or the node, and the audit stream is named after
the PostgreSQL server and database (review of gwperf, 1, 2 and 6)."""

from __future__ import annotations

import json
import random
import secrets
from typing import Any

import httpx
import psycopg
import pytest
import redis as redis_sync
import trio

from anchor.audit_drain import GROUP, AuditDrain, _record, _refused_for_good, audit_stream
from anchor.gateway.fast_send import audit_record
from anchor.queue import MessageQueue, QueuedMessage, new_message_id
from anchor.run import _name_audit_stream
from anchor.services_settings import ServiceSettings
from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.postgres import PostgresStore
from anchor.stores.redis_store import KEY_PREFIX, RedisStore, StreamEntry
from tests.anchor.gateway.conftest import Gateway, StartGateway
from tests.anchor.gateway.proxy import TcpProxy
from tests.anchor.gateway.test_gateway import FULL_PEER_ID, until_settled


async def _auth(gateway: Gateway, client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    key_id, secret = await gateway.key("user")
    return key_id, {"Authorization": f"Bearer {await gateway.token(client, secret)}"}


async def _audited(gateway: Gateway, message_id: str) -> int:
    rows = await gateway.pg.recent_audit(limit=1000)
    return sum(1 for r in rows if r.detail.get("id") == message_id)


def _not_handed_over(gateway: Gateway, message_id: str) -> bool:
    outbox = gateway.node.outbox
    return message_id not in gateway.node.outgoing and (outbox is None or outbox.get(message_id) is None)


async def test_delivery_waits_for_the_audit_row_in_postgresql(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(persistent=True)
    stream = f"messages:{gateway.node.identity.peer_id_hex}"
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, auth = await _auth(gateway, client)
        r = await client.post("/v1/messages", headers=auth, json={"text": "fills the key cache"})
        assert r.status_code == 202
        await until_settled(client, auth, r.json()["id"])

        # PostgreSQL is cut off: the gateway still accepts (the key's state is cached in Redis) ...
        gateway.pg_proxy.down()
        r = await client.post("/v1/messages", headers=auth, json={"to": FULL_PEER_ID, "text": "held"})
        assert r.status_code == 202, r.text
        held = r.json()["id"]
        # ... and the message waits in its audit record: not in the node's stream, not in its outbox (the node's
        # consumer runs; it has nothing to read).
        assert await gateway.redis.audit_backlog(gateway.audit_stream) == 1
        assert await gateway.redis.stream_length(stream) == 0
        assert _not_handed_over(gateway, held)
        assert (await client.get(f"/v1/messages/{held}", headers=auth)).json()["state"] == "queued"

        # PostgreSQL is back: the drain commits the row, then hands the message over — once.
        await gateway.pg_proxy.up()
        status = await until_settled(client, auth, held)
        assert status["state"] == "pending" and status["mesh_id"] == held
        await gateway.audit_drained()
        assert await _audited(gateway, held) == 1
        outbox = gateway.node.outbox
        assert outbox is not None and [e.id for e in outbox.list(limit=100) if e.id == held] == [held]
        assert await gateway.redis.stream_length(stream) == 0
        assert await gateway.redis.stream_pending_count(stream, "node") == 0


async def test_a_blocked_drain_holds_messages_and_a_resumed_one_delivers_each_once(
    start_gateway: StartGateway,
) -> None:
    blocked = await start_gateway(drain_audit=False, persistent=True)  # its node consumes; nothing drains
    async with httpx.AsyncClient(base_url=blocked.url) as client:
        _key, auth = await _auth(blocked, client)
        ids = []
        for text in ("one", "two"):
            r = await client.post("/v1/messages", headers=auth, json={"to": FULL_PEER_ID, "text": text})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        assert await blocked.redis.stream_length(f"messages:{blocked.node.identity.peer_id_hex}") == 0
        assert all(_not_handed_over(blocked, i) for i in ids)
        assert [await _audited(blocked, i) for i in ids] == [0, 0]

        # A drain resumes (another gateway's, on the same database and Redis): both are audited, then handed to
        # the blocked gateway's node, each once.
        await start_gateway(consume_queue=False)
        for i in ids:
            assert (await until_settled(client, auth, i))["state"] == "pending"
        await blocked.audit_drained()
        assert [await _audited(blocked, i) for i in ids] == [1, 1]
        outbox = blocked.node.outbox
        assert outbox is not None and sorted(e.id for e in outbox.list(limit=100)) == sorted(ids)


BAD_ENTRIES: dict[str, dict[Any, Any]] = {
    "jsonb NUL": {"detail": '{"x":"\\u0000"}'},
    "time beyond 9999": {"at_ms": str(10**17)},
    "time overflowing a float": {"at_ms": "9" * 400},
    "negative time": {"at_ms": "-5"},
    "non-UTF-8 actor": {"actor": b"\xff\xfe"},
    "NUL in the actor": {"actor": "key:\x00"},
    "actor too long": {"actor": "k" * 2000},
    "detail not an object": {"detail": "[1]"},
    "detail not JSON": {"detail": "{"},
    "no event ID": {"eid": None},
    # 1024 characters, but 4096 bytes: PostgreSQL's event-ID index refuses the row (an index row is bounded in bytes)
    "event ID too many bytes": {"eid": "\U00010000" * 1024},
    "actor too many bytes": {"actor": "\U00010000" * 1024},
}


def _good(eid: str) -> dict[str, Any]:
    return {
        "eid": eid,
        "at_ms": "1700000000000",
        "actor": "key:review",
        "action": "messages.broadcast",
        "target": "*",
        "detail": json.dumps({"id": eid}),
    }


@pytest.mark.parametrize("name", sorted(BAD_ENTRIES))
def test_a_record_postgresql_would_refuse_is_not_a_record(name: str) -> None:
    fields = {**_good("msg:x"), **BAD_ENTRIES[name]}
    raw = {
        (k if isinstance(k, str) else k.decode(errors="replace")): (v.encode() if isinstance(v, str) else v)
        for k, v in fields.items()
        if v is not None
    }
    assert _record(StreamEntry("1-0", raw)) is None
    good = {k: v.encode() for k, v in _good("msg:x").items()}
    detail = json.dumps({"id": "msg:x"})
    expected = ("msg:x", 1700000000000, "key:review", "messages.broadcast", "*", detail)
    assert _record(StreamEntry("1-0", good)) == expected


def _xadd_all(services: ServiceSettings, key: str, entries: list[dict[Any, Any]]) -> None:
    client = redis_sync.Redis.from_url(services.redis.url)
    try:
        for fields in entries:
            client.xadd(key, {k: v for k, v in fields.items() if v is not None})
    finally:
        client.close()


def _dead(services: ServiceSettings, key: str) -> list[dict[str, bytes]]:
    client = redis_sync.Redis.from_url(services.redis.url)
    try:
        rows: Any = client.xrange(key + ":dead")
        return [{k.decode(errors="replace"): v for k, v in fields.items()} for _id, fields in rows]
    finally:
        client.close()


async def test_poisoned_audit_entries_cost_only_themselves(
    start_gateway: StartGateway, services: ServiceSettings
) -> None:
    gateway = await start_gateway()
    key = KEY_PREFIX + gateway.audit_stream
    bad = [{**_good(f"msg:bad-{i}"), **fields} for i, fields in enumerate(BAD_ENTRIES.values())]
    # Well-formed as far as anyone can check, yet PostgreSQL refuses it (a number beyond jsonb's numeric range):
    # its batch is retried record by record.
    refused = {**_good("msg:refused"), "detail": '{"x":1e200000}'}
    goods = [_good(f"msg:good-{i}") for i in range(3)]
    odd: dict[Any, Any] = {**_good("msg:odd"), b"\xff": b"x"}  # a name not UTF-8: ignored, record fine
    await trio.to_thread.run_sync(_xadd_all, services, key, [goods[0], *bad, refused, goods[1], odd, goods[2]])

    await gateway.audit_drained()  # nothing stalls the drain
    assert not gateway.stopped.is_set()  # and nothing stopped the gateway (and its node)
    rows = await gateway.pg.recent_audit(limit=1000)
    drained = {r.detail.get("id") for r in rows if r.actor == "key:review"}
    assert drained == {"msg:good-0", "msg:good-1", "msg:good-2", "msg:odd"}
    dead = await trio.to_thread.run_sync(_dead, services, key)
    assert sorted(d["eid"].decode() for d in dead if "eid" in d) == sorted(
        [e["eid"] for e in bad if e.get("eid")] + ["msg:refused"]
    )
    assert len(dead) == len(bad) + 1

    # The gateway keeps accepting and delivering.
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, auth = await _auth(gateway, client)
        r = await client.post("/v1/messages", headers=auth, json={"text": "after the poison"})
        assert r.status_code == 202
        assert (await until_settled(client, auth, r.json()["id"]))["state"] == "sent"


async def test_the_audit_stream_is_named_after_the_postgresql_server_and_database(
    start_gateway: StartGateway, services: ServiceSettings, pg_dsn: str, nursery: trio.Nursery
) -> None:
    gateway = await start_gateway(drain_audit=False)
    with psycopg.connect(services.postgres.dsn_for("postgres")) as conn:  # asked independently of the store
        row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    assert row is not None
    expected = f"aiv:audit:{row[0]}:{pg_dsn.rsplit('/', 1)[1]}"
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, auth = await _auth(gateway, client)
        assert (await client.post("/v1/messages", headers=auth, json={"text": "x"})).status_code == 202
    assert KEY_PREFIX + gateway.audit_stream == expected
    assert await gateway.redis.audit_backlog(gateway.audit_stream) == 1
    # Another server with a database of the same name would name another stream.
    assert audit_stream("another-server", gateway.pg.database) != gateway.audit_stream

    # A gateway whose PostgreSQL was down at its start accepts no message until the server answered once.
    proxy = TcpProxy(services.postgres.host, services.postgres.port)
    await nursery.start(proxy.run)
    proxy.down()
    proxied = psycopg.conninfo.make_conninfo(pg_dsn, host="127.0.0.1", port=proxy.port)
    async with PostgresStore(proxied, timeout_s=1.0) as pg:
        queue = MessageQueue(gateway.redis, gateway.node, max_backlog=10, block_ms=0)
        message = QueuedMessage(new_message_id(), None, "x", "k_test")
        record = audit_record("k_test", message.id, None, 1)
        with pytest.raises(StoreUnavailable):
            await queue.put_audited(message, record)
        with trio.fail_after(30):
            async with trio.open_nursery() as inner:  # returns once the name is known
                inner.start_soon(_name_audit_stream, queue, pg)
                await proxy.up()
        assert KEY_PREFIX + queue.audit_stream == expected


async def test_a_server_side_failure_dead_letters_nothing(
    start_gateway: StartGateway, services: ServiceSettings, pg_dsn: str
) -> None:
    """When PostgreSQL refuses the insert for its own state (here: no permission on audit_log), not for a row's
    content, nothing is moved to the dead-letter stream: the records wait, and drain once the server is fixed."""
    gateway = await start_gateway(drain_audit=False)
    key = KEY_PREFIX + gateway.audit_stream
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the application's role owns the table
        conn.execute("REVOKE INSERT ON audit_log FROM CURRENT_USER")
    try:
        await trio.to_thread.run_sync(_xadd_all, services, key, [_good("msg:waits-1"), _good("msg:waits-2")])
        drain = AuditDrain(gateway.redis, gateway.pg, "test-drain", stream=gateway.audit_stream)
        await gateway.redis.audit_ensure_group(drain.stream, GROUP)
        with pytest.raises(StoreError, match="permission denied"):
            await drain.drain_once()
        assert drain.counters["refused"] == 0 and await trio.to_thread.run_sync(_dead, services, key) == []
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("GRANT INSERT ON audit_log TO CURRENT_USER")
    assert await drain.drain_once() == 2
    rows = await gateway.pg.recent_audit(limit=1000)
    assert {r.detail.get("id") for r in rows if r.actor == "key:review"} == {"msg:waits-1", "msg:waits-2"}


async def test_a_row_too_big_for_an_index_is_refused_not_an_outage(pg_dsn: str) -> None:
    """PostgreSQL refuses an index row too big with ProgramLimitExceeded (an OperationalError to psycopg): that is
    the row's fault, not an outage, so the drain dead-letters it instead of re-reading it forever."""
    rng = random.Random(7)  # incompressible: PostgreSQL compresses a repetitive index row below its limit
    eid = "msg:" + "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(1020))  # 1024 characters, 4084 B
    async with PostgresStore(pg_dsn, timeout_s=5.0) as pg:
        with pytest.raises(StoreError) as refused:
            await pg.audit_drained([(eid, 1, "key:k", "messages.send", "*", "{}")])
        assert not isinstance(refused.value, StoreUnavailable) and pg.down_reason is None
        assert isinstance(refused.value.__cause__, psycopg.errors.ProgramLimitExceeded)
        assert _refused_for_good(refused.value)
        assert await pg.audit_drained([("msg:fine", 1, "key:k", "messages.send", "*", "{}")]) == 1


def _stream(services: ServiceSettings, key: str) -> list[dict[bytes, bytes]]:
    client = redis_sync.Redis.from_url(services.redis.url)
    try:
        rows: Any = client.xrange(key)
        return [dict(fields) for _id, fields in rows]
    finally:
        client.close()


def _forget(services: ServiceSettings, tag: str) -> None:
    client = redis_sync.Redis.from_url(services.redis.url)
    try:
        for key in client.scan_iter(f"{KEY_PREFIX}*{tag}*"):
            client.delete(key)
    finally:
        client.close()


def _send_args(tag: str, message_id: str) -> dict[str, Any]:
    return {
        "audit_stream": f"audit:{tag}",
        "stream": f"messages:{tag}",
        "status_key": f"msg:{tag}:{message_id}",
        "status": {"state": "queued"},
        "payload": json.dumps({"id": message_id, "to": None, "text": "hi", "key": "k"}).encode(),
        "record": audit_record("k", message_id, None, 2),
        "max_audit_backlog": 100,
        "max_backlog": 100,
        "ttl_s": 60.0,
    }


async def test_a_drain_that_stalled_past_the_claim_time_hands_nothing_over_again(
    services: ServiceSettings, pg_dsn: str
) -> None:
    """Drain A inserts, then stalls before its hand-over longer than the claim time; B claims the record, inserts
    it (a duplicate, skipped) and hands the message over; A resumes: its hand-over must not deliver it again."""
    tag = "t" + secrets.token_hex(6)
    try:
        async with PostgresStore(pg_dsn, timeout_s=5.0) as pg, RedisStore(services.redis.url) as rs:
            args = _send_args(tag, new_message_id())
            await rs.audit_ensure_group(args["audit_stream"], GROUP)
            assert (await rs.send_audited(**args)).result == "ok"
            a = AuditDrain(rs, pg, "A", stream=args["audit_stream"], claim_idle_s=0.05, linger_s=0)
            b = AuditDrain(rs, pg, "B", stream=args["audit_stream"], claim_idle_s=0.05, linger_s=0)
            stalled, resume = trio.Event(), trio.Event()
            real = rs.audit_handover

            class Stalling:
                def __getattr__(self, name: str) -> Any:
                    return getattr(rs, name)

                async def audit_handover(self, *args: Any, **kwargs: Any) -> int:
                    stalled.set()
                    await resume.wait()
                    return await real(*args, **kwargs)

            a.redis = Stalling()  # type: ignore[assignment]
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.drain_once)
                    await stalled.wait()
                    while await b.drain_once(block_ms=20) == 0:  # claimable once idle 50 ms (Redis's clock)
                        pass
                    resume.set()
            node_stream = KEY_PREFIX + "q:" + args["stream"]
            assert len(await trio.to_thread.run_sync(_stream, services, node_stream)) == 1
            assert (a.counters["handed_over"], b.counters["handed_over"]) == (0, 1)
            assert await rs.audit_backlog(args["audit_stream"]) == 0
    finally:
        await trio.to_thread.run_sync(_forget, services, tag)


async def test_a_resent_send_script_delivers_its_message_once(services: ServiceSettings, pg_dsn: str) -> None:
    """redis-py resends a script after a socket timeout even when the server ran it: the send script run twice
    writes one audit record and spends one token, and two records of one event ID (as a resent send wrote before)
    hand their message over once."""
    tag = "t" + secrets.token_hex(6)
    try:
        async with PostgresStore(pg_dsn, timeout_s=5.0) as pg, RedisStore(services.redis.url) as rs:
            args = _send_args(tag, new_message_id())
            await rs.audit_ensure_group(args["audit_stream"], GROUP)
            bucket = (f"{tag}:key", 0.001, 1)  # one token: a second spend would be refused
            assert (await rs.send_audited(**args, key_bucket=bucket)).result == "ok"
            assert (await rs.send_audited(**args, key_bucket=bucket)).result == "ok"  # the resent script
            assert await rs.audit_backlog(args["audit_stream"]) == 1
            assert (await rs.send_audited(**_send_args(tag, new_message_id()), key_bucket=bucket)).result == "key"

            # Two audit records of one event ID, each carrying the message: drained, it reaches the node once.
            audit_key = KEY_PREFIX + args["audit_stream"]
            entry = await trio.to_thread.run_sync(_stream, services, audit_key)
            await trio.to_thread.run_sync(_xadd_all, services, audit_key, entry)
            assert await rs.audit_backlog(args["audit_stream"]) == 2
            drain = AuditDrain(rs, pg, "D", stream=args["audit_stream"], linger_s=0)
            with trio.fail_after(30):
                while await drain.drain_once() > 0:
                    pass
            node_stream = KEY_PREFIX + "q:" + args["stream"]
            assert len(await trio.to_thread.run_sync(_stream, services, node_stream)) == 1
            assert drain.counters["handed_over"] == 1 and drain.counters["drained"] == 1
    finally:
        await trio.to_thread.run_sync(_forget, services, tag)
