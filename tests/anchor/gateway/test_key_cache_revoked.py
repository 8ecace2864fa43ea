"""A revoked key's cache entry outlives every token issued before the revocation (anchor.gateway.stores_adapter):
it is written with TTL ``max(key_cache_ttl_s, token_ttl_s)``, by a revocation through the anchor (even with no
key cache on this gateway: another one sharing the Redis may cache) and by a fill or renewal that read "revoked"
in PostgreSQL. A fill or renewal that read PostgreSQL before the revocation and writes "active" late then finds
the entry still there and leaves it alone, where a short-lived entry had expired and "active" came back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis as redis_sync
import trio

from anchor.gateway.stores_adapter import KEY_CACHE_PREFIX, StoresAdapter
from anchor.services_settings import ServiceSettings
from anchor.stores.postgres import PostgresStore
from anchor.stores.redis_store import KEY_PREFIX, RedisStore

KEY_CACHE_TTL_S = 1.0  # short, as a gateway may configure it
TOKEN_TTL_S = 900.0
ACTIVE = {"role": "user", "scopes": ["messages:send"], "revoked": False}


@pytest.fixture
async def stores(pg_dsn: str, services: ServiceSettings) -> AsyncIterator[tuple[PostgresStore, RedisStore]]:
    async with PostgresStore(pg_dsn) as pg, RedisStore(services.redis.url, timeout_s=5.0) as redis:
        yield pg, redis


def _pttl_ms(services: ServiceSettings, key_id: str) -> int:
    with redis_sync.Redis.from_url(services.redis.url) as client:
        return int(client.pttl(f"{KEY_PREFIX}sess:{KEY_CACHE_PREFIX}{key_id}"))


async def _pttl(services: ServiceSettings, key_id: str) -> int:
    return await trio.to_thread.run_sync(_pttl_ms, services, key_id)


@pytest.mark.parametrize("key_cache_ttl_s", [KEY_CACHE_TTL_S, 0.0])
async def test_a_revocation_caches_revoked_for_the_tokens_lifetime(
    stores: tuple[PostgresStore, RedisStore], services: ServiceSettings, key_cache_ttl_s: float
) -> None:
    pg, redis = stores
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    adapter = StoresAdapter(pg, redis, key_cache_ttl_s=key_cache_ttl_s, token_ttl_s=TOKEN_TTL_S)
    assert await adapter.revoke_api_key(key.key_id)
    cache = KEY_CACHE_PREFIX + key.key_id
    assert (await redis.session_get(cache) or {}).get("revoked") is True  # written even with no cache here
    assert await _pttl(services, key.key_id) > (TOKEN_TTL_S - 60) * 1000  # not key_cache_ttl_s: outlives tokens
    # A renewal that read PostgreSQL before the revocation writes "active" late (after key_cache_ttl_s): refused.
    assert not await redis.key_cache_refresh(cache, ACTIVE, KEY_CACHE_TTL_S)
    # So is a late slow-path fill (SET NX).
    assert not await redis.session_set(cache, ACTIVE, KEY_CACHE_TTL_S, nx=True)
    assert await StoresAdapter(pg, redis, key_cache_ttl_s=KEY_CACHE_TTL_S).key_active(key.key_id) is False


async def test_a_renewal_reading_revoked_caches_it_for_the_tokens_lifetime(
    stores: tuple[PostgresStore, RedisStore], services: ServiceSettings
) -> None:
    pg, redis = stores
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    adapter = StoresAdapter(pg, redis, key_cache_ttl_s=KEY_CACHE_TTL_S, token_ttl_s=TOKEN_TTL_S)
    assert await adapter.key_active(key.key_id)  # fills "active" for key_cache_ttl_s
    assert 0 < await _pttl(services, key.key_id) <= KEY_CACHE_TTL_S * 1000
    assert await pg.revoke_api_key(key.key_id)  # straight in PostgreSQL
    assert await adapter.refresh_key_cache(key.key_id)
    assert await _pttl(services, key.key_id) > (TOKEN_TTL_S - 60) * 1000
    assert not await redis.key_cache_refresh(KEY_CACHE_PREFIX + key.key_id, ACTIVE, KEY_CACHE_TTL_S)
    assert await adapter.key_active(key.key_id) is False


async def test_a_fill_reading_revoked_caches_it_for_the_tokens_lifetime(
    stores: tuple[PostgresStore, RedisStore], services: ServiceSettings
) -> None:
    pg, redis = stores
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    assert await pg.revoke_api_key(key.key_id)  # straight in PostgreSQL, nothing cached
    adapter = StoresAdapter(pg, redis, key_cache_ttl_s=KEY_CACHE_TTL_S, token_ttl_s=TOKEN_TTL_S)
    assert await adapter.key_active(key.key_id) is False
    assert await _pttl(services, key.key_id) > (TOKEN_TTL_S - 60) * 1000
    assert not await redis.session_set(KEY_CACHE_PREFIX + key.key_id, ACTIVE, KEY_CACHE_TTL_S, nx=True)


class _SkewedRedis(RedisStore):
    """The real store, whose clock reading before a PostgreSQL read is off by ``skew_ms``: negative, as a write that
    runs that long after its read (a slow or stalled statement, an abandoned worker thread); positive, as Redis's
    clock stepping back (or a failover onto a primary whose clock is behind) between the read and the write."""

    def __init__(self, url: str, skew_ms: int) -> None:
        super().__init__(url, timeout_s=5.0)
        self.skew_ms = skew_ms

    async def time_ms(self) -> int:
        return await super().time_ms() + self.skew_ms


async def test_a_stale_read_writes_no_active_state(
    stores: tuple[PostgresStore, RedisStore], services: ServiceSettings
) -> None:
    pg, _ = stores
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    cache = KEY_CACHE_PREFIX + key.key_id
    async with _SkewedRedis(services.redis.url, -3_600_000) as late:  # an hour old
        adapter = StoresAdapter(pg, late, key_cache_ttl_s=KEY_CACHE_TTL_S, token_ttl_s=TOKEN_TTL_S)
        assert await adapter.key_active(key.key_id)  # PostgreSQL says active: so does the answer...
        assert await late.session_get(cache) is None  # ...but the stale fill cached nothing
        assert not await adapter.refresh_key_cache(key.key_id)  # nor does a stale renewal
        assert await late.session_get(cache) is None
        assert await pg.revoke_api_key(key.key_id)  # a revoked state is written however old the read
        assert await adapter.refresh_key_cache(key.key_id)
        assert (await late.session_get(cache) or {}).get("revoked") is True


async def test_a_fresh_read_writes_the_active_state(
    stores: tuple[PostgresStore, RedisStore], services: ServiceSettings
) -> None:
    pg, redis = stores
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    adapter = StoresAdapter(pg, redis, key_cache_ttl_s=KEY_CACHE_TTL_S, token_ttl_s=TOKEN_TTL_S)
    assert await adapter.refresh_key_cache(key.key_id)
    assert await redis.session_get(KEY_CACHE_PREFIX + key.key_id) == ACTIVE


async def test_a_slow_read_still_caches_active_for_what_is_left_of_its_ttl(
    stores: tuple[PostgresStore, RedisStore], services: ServiceSettings
) -> None:
    # A slow PostgreSQL must not turn the key cache off (every request reading PostgreSQL again): the entry is
    # written, and expires TTL after the read, not after the write.
    pg, _ = stores
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    async with _SkewedRedis(services.redis.url, -int(0.7 * KEY_CACHE_TTL_S * 1000)) as slow:
        adapter = StoresAdapter(pg, slow, key_cache_ttl_s=KEY_CACHE_TTL_S, token_ttl_s=TOKEN_TTL_S)
        assert await adapter.key_active(key.key_id)
        assert await slow.session_get(KEY_CACHE_PREFIX + key.key_id) == ACTIVE
        assert 0 < await _pttl(services, key.key_id) <= int(0.3 * KEY_CACHE_TTL_S * 1000) + 50


async def test_an_active_entry_never_outlives_its_ttl(
    stores: tuple[PostgresStore, RedisStore], services: ServiceSettings
) -> None:
    pg, _ = stores
    key, _ = await pg.create_api_key("k", "user", frozenset({"messages:send"}))
    async with _SkewedRedis(services.redis.url, 3_600_000) as ahead:
        adapter = StoresAdapter(pg, ahead, key_cache_ttl_s=KEY_CACHE_TTL_S, token_ttl_s=TOKEN_TTL_S)
        assert await adapter.key_active(key.key_id)
        assert 0 < await _pttl(services, key.key_id) <= int(KEY_CACHE_TTL_S * 1000)
