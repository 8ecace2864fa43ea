"""RedisStore against the real Redis server of ``scripts/services``."""

from __future__ import annotations

import secrets

import pytest
import redis
import trio

from anchor.services_settings import ServiceSettings
from anchor.stores import RedisStore, StoreError


@pytest.fixture
async def store(services: ServiceSettings) -> RedisStore:
    return RedisStore(services.redis.url, timeout_s=5.0)


def _name() -> str:
    return "t-" + secrets.token_hex(6)


async def test_token_bucket_allows_the_burst_then_refuses_with_retry_after(store: RedisStore) -> None:
    bucket = _name()
    # 0.01 tokens/s: no measurable refill during the test, so the outcome does not depend on timing.
    decisions = [await store.take_token(bucket, rate_per_s=0.01, burst=3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert all(d.retry_after_s == 0 for d in decisions[:3])
    # One token takes 1 / 0.01 = 100 s to come back.
    assert 99.0 < decisions[3].retry_after_s <= 100.0
    # Buckets are independent.
    assert (await store.take_token(_name(), 0.01, 1)).allowed


async def test_token_bucket_refills_at_the_rate(store: RedisStore, services: ServiceSettings) -> None:
    bucket = _name()
    assert (await store.take_token(bucket, rate_per_s=1.0, burst=2, cost=2)).allowed
    denied = await store.take_token(bucket, rate_per_s=1.0, burst=2, cost=2)
    assert not denied.allowed and 0 < denied.retry_after_s <= 2.0
    # Move the bucket's clock back 10 s (as if 10 s had passed): it is full again, not more than full.
    client = redis.Redis.from_url(services.redis.url)
    key = f"aiv:rl:{bucket}"
    ts = float(client.hget(key, "ts") or 0)
    client.hset(key, "ts", f"{ts - 10:.6f}")
    client.close()
    assert (await store.take_token(bucket, 1.0, 2, cost=2)).allowed
    assert not (await store.take_token(bucket, 1.0, 2)).allowed


async def test_token_bucket_is_atomic_under_concurrency(store: RedisStore) -> None:
    bucket = _name()
    results: list[bool] = []

    async def take() -> None:
        results.append((await store.take_token(bucket, rate_per_s=0.01, burst=10)).allowed)

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(take)
    assert results.count(True) == 10 and len(results) == 40


async def test_token_bucket_rejects_nonsense(store: RedisStore) -> None:
    with pytest.raises(StoreError):
        await store.take_token("x", 0, 1)
    with pytest.raises(StoreError):
        await store.take_token("x", 1, 0)


async def test_session_cache_with_ttl(store: RedisStore, services: ServiceSettings) -> None:
    sid = _name()
    assert await store.session_get(sid) is None
    await store.session_set(sid, {"sub": "key:k1", "scopes": ["a"]}, ttl_s=30)
    assert await store.session_get(sid) == {"sub": "key:k1", "scopes": ["a"]}
    client = redis.Redis.from_url(services.redis.url)
    ttl_ms = int(client.pttl(f"aiv:sess:{sid}"))
    client.close()
    assert 0 < ttl_ms <= 30_000
    assert await store.session_delete(sid)
    assert await store.session_get(sid) is None
    with pytest.raises(StoreError, match="bytes"):
        await store.session_set(sid, {"x": "y" * 70_000}, ttl_s=1)


async def test_stream_queue_delivers_acks_and_redelivers_unacked(store: RedisStore) -> None:
    stream, group = _name(), "gateway"
    await store.stream_ensure_group(stream, group)
    await store.stream_ensure_group(stream, group)  # idempotent
    ids = [await store.stream_add(stream, {"kind": "send", "body": f"m{i}".encode()}) for i in range(3)]
    got = await store.stream_read(stream, group, "node-1", count=2)
    assert [e.id for e in got] == ids[:2]
    assert got[0].fields == {"kind": b"send", "body": b"m0"}
    # Another consumer of the same group gets the rest, not the same entries.
    other = await store.stream_read(stream, group, "node-2", count=10)
    assert [e.id for e in other] == ids[2:]
    assert await store.stream_read(stream, group, "node-1", count=10) == []
    # node-1 "crashed" before acking: its pending entries come back to it.
    assert [e.id for e in await store.stream_read(stream, group, "node-1", pending=True)] == ids[:2]
    assert await store.stream_ack(stream, group, [ids[0]]) == 1
    assert await store.stream_ack(stream, group, [ids[0]]) == 0
    assert [e.id for e in await store.stream_read(stream, group, "node-1", pending=True)] == [ids[1]]
    assert await store.stream_ack(stream, group, []) == 0


async def test_stream_read_with_block_ms_returns_new_entries(store: RedisStore) -> None:
    stream, group = _name(), "g"
    await store.stream_ensure_group(stream, group)
    got: list[str] = []

    async def reader() -> None:
        with trio.fail_after(10):
            while not got:
                got.extend(e.id for e in await store.stream_read(stream, group, "c", block_ms=1000))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        entry_id = await store.stream_add(stream, {"x": b"1"})
    assert got == [entry_id]
    with pytest.raises(StoreError, match="block_ms"):
        await store.stream_read(stream, group, "c", block_ms=10_000)


async def test_stream_is_bounded(store: RedisStore) -> None:
    stream = _name()
    for i in range(300):
        await store.stream_add(stream, {"i": str(i)}, maxlen=100)
    # Approximate trimming keeps at least maxlen and removes whole macro nodes beyond it.
    assert 100 <= await store.stream_length(stream) < 300


async def test_server_errors_become_store_errors(store: RedisStore) -> None:
    with pytest.raises(StoreError, match="NOGROUP"):
        await store.stream_read(_name(), "no-such-group", "c")
    await store.ping()
    assert store.down_reason is None  # an error answer is not an outage


async def test_several_buckets_are_taken_all_or_nothing(store: RedisStore) -> None:
    per_key, per_ip = _name(), _name()
    # per_key allows 3, per_ip 2: the third request is refused and spends nothing from per_key.
    buckets = [(per_key, 0.01, 3), (per_ip, 0.01, 2)]
    decisions = [await store.take_tokens(buckets) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert 99.0 < decisions[2].retry_after_s <= 100.0
    assert (await store.take_token(per_key, 0.01, 3)).allowed  # its third token is still there
    assert not (await store.take_token(per_key, 0.01, 3)).allowed
    # The longest wait is reported: per_key (0.01/s) is empty, per_ip at 1/s would be sooner.
    refused = await store.take_tokens([(per_key, 0.01, 3), (_name(), 1.0, 1)])
    assert not refused.allowed and refused.retry_after_s > 50
    with pytest.raises(StoreError):
        await store.take_tokens([])
    with pytest.raises(StoreError):
        await store.take_tokens([(_name(), 1.0, 1)], cost=2)  # more than the burst: never possible
