"""The renewal guard of anchor.gateway.stores_adapter: one renewal per key at a time in one gateway (others for
that key return False at once, without reading PostgreSQL), at most REFRESHING_MAX keys at once (more: left to
expire and refill), and a renewal that failed releases its key. Real PostgreSQL and Redis; the read is held at a
gate so the renewals are provably concurrent."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import trio

from anchor.gateway.stores_adapter import KEY_CACHE_PREFIX, REFRESHING_MAX, StoresAdapter
from anchor.services_settings import ServiceSettings
from anchor.stores.errors import StoreUnavailable
from anchor.stores.postgres import ApiKey, PostgresStore
from anchor.stores.redis_store import RedisStore


class _GatedPostgres(PostgresStore):
    """The real store, whose key reads wait at a gate and are counted."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.gate = trio.Event()
        self.reads: list[str] = []
        self.waiting = 0
        self.expect = 1  # reads waiting at the gate when `arrived` is set
        self.arrived = trio.Event()
        self.fail = False

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        self.reads.append(key_id)
        self.waiting += 1
        if self.waiting >= self.expect:
            self.arrived.set()
        await self.gate.wait()
        self.waiting -= 1
        if self.fail:
            raise StoreUnavailable("postgres", "down (test)")
        return await super().get_api_key(key_id)


@pytest.fixture
async def gated(pg_dsn: str, services: ServiceSettings) -> AsyncIterator[tuple[_GatedPostgres, RedisStore]]:
    pg = _GatedPostgres(pg_dsn)
    async with pg, RedisStore(services.redis.url, timeout_s=5.0) as redis:
        yield pg, redis


async def _settled(pg: _GatedPostgres) -> None:
    with trio.fail_after(10):
        await pg.arrived.wait()  # the expected renewals reached the gate


async def test_one_renewal_per_key_at_a_time(gated: tuple[_GatedPostgres, RedisStore]) -> None:
    pg, redis = gated
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    adapter = StoresAdapter(pg, redis, key_cache_ttl_s=60, token_ttl_s=60)
    results: list[bool] = []

    async def renew() -> None:
        results.append(await adapter.refresh_key_cache(key.key_id))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(renew)
        await _settled(pg)
        assert pg.waiting == 1
        assert results == [False] * 7  # refused at once, while the first one reads
        pg.gate.set()
    assert pg.reads == [key.key_id]  # one PostgreSQL read for the eight
    assert sorted(results) == [False] * 7 + [True]
    assert await redis.session_get(KEY_CACHE_PREFIX + key.key_id) == {
        "role": "user",
        "scopes": ["messages:send"],
        "revoked": False,
    }
    assert await adapter.refresh_key_cache(key.key_id)  # released: the next renewal runs


async def test_at_most_refreshing_max_keys_renew_at_once(gated: tuple[_GatedPostgres, RedisStore]) -> None:
    pg, redis = gated
    adapter = StoresAdapter(pg, redis, key_cache_ttl_s=1, token_ttl_s=10)  # unknown keys: cached revoked, 10 s
    pg.expect = REFRESHING_MAX
    results: list[bool] = []

    async def renew(key_id: str) -> None:
        results.append(await adapter.refresh_key_cache(key_id))

    prefix = f"k_guard_{secrets.token_hex(4)}_"
    async with trio.open_nursery() as nursery:
        for i in range(REFRESHING_MAX):
            nursery.start_soon(renew, f"{prefix}{i}")
        await _settled(pg)
        assert pg.waiting == REFRESHING_MAX
        assert not await adapter.refresh_key_cache(prefix + "one_more")  # over the bound: no read
        assert len(pg.reads) == REFRESHING_MAX and results == []
        pg.gate.set()
    assert results == [True] * REFRESHING_MAX
    assert await adapter.refresh_key_cache(prefix + "one_more")  # all released


async def test_a_failed_renewal_releases_its_key(gated: tuple[_GatedPostgres, RedisStore]) -> None:
    pg, redis = gated
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    adapter = StoresAdapter(pg, redis, key_cache_ttl_s=60, token_ttl_s=60)
    pg.gate.set()
    pg.fail = True
    with pytest.raises(StoreUnavailable):
        await adapter.refresh_key_cache(key.key_id)
    pg.fail = False
    assert await adapter.refresh_key_cache(key.key_id)
    assert pg.reads == [key.key_id, key.key_id]
