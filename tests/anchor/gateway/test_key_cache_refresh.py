"""A busy key's cache entry is renewed before it expires (anchor.gateway.fast_send, ``KEY_REFRESH_LUA``): when it
expired instead, every request in flight for the key missed it at once and took the slow path together (a stall
of all of them, bench/README.md gwp99). A renewal reads PostgreSQL, so it also applies a revocation made straight
there, and never puts "active" back over a revocation made through the anchor."""

from __future__ import annotations

import httpx
import pytest
import redis as redis_sync
import trio

from anchor.gateway.auth import ROLE_SCOPES
from anchor.services_settings import ServiceSettings
from anchor.stores.redis_store import KEY_PREFIX, RedisStore
from tests.anchor.gateway.conftest import Gateway, StartGateway
from tests.anchor.gateway.test_fast_send import _route_refuses

TTL_S = 300.0  # long: nothing here expires by itself during a test


def _cache_key(key_id: str) -> str:
    return f"{KEY_PREFIX}sess:apikey:{key_id}"


def _pexpire(services: ServiceSettings, key: str, ms: int) -> None:
    with redis_sync.Redis.from_url(services.redis.url) as client:
        assert client.pexpire(key, ms)


def _pttl(services: ServiceSettings, key: str) -> int:
    with redis_sync.Redis.from_url(services.redis.url) as client:
        return int(client.pttl(key))


async def _wait_pttl_above(services: ServiceSettings, key: str, ms: int) -> None:
    with trio.fail_after(20):  # polled: the renewal runs after the 202 was sent
        while await trio.to_thread.run_sync(_pttl, services, key) <= ms:  # each poll is a thread hop + round trip
            pass


async def _auth(gateway: Gateway, client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    key_id, secret = await gateway.key("user")
    return key_id, {"Authorization": f"Bearer {await gateway.token(client, secret)}"}


async def test_a_fast_request_renews_a_key_cache_entry_past_half_its_life(
    start_gateway: StartGateway, services: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await start_gateway(key_cache_ttl_s=TTL_S)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        key_id, auth = await _auth(gateway, client)
        assert (await client.post("/v1/messages", headers=auth, json={"text": "fills"})).status_code == 202
        cache = _cache_key(key_id)
        _route_refuses(monkeypatch)  # from here on a 202 comes from the fast path only
        await trio.to_thread.run_sync(_pexpire, services, cache, 200_000)  # more than half its life left
        assert (await client.post("/v1/messages", headers=auth, json={"text": "not due"})).status_code == 202
        assert 0 < await trio.to_thread.run_sync(_pttl, services, cache) <= 200_000  # not renewed

        await trio.to_thread.run_sync(_pexpire, services, cache, 100_000)  # less than half left: due
        assert (await client.post("/v1/messages", headers=auth, json={"text": "renews"})).status_code == 202
        await _wait_pttl_above(services, cache, 200_000)
        state = await gateway.redis.session_get(f"apikey:{key_id}")
        assert state == {"role": "user", "scopes": sorted(ROLE_SCOPES["user"]), "revoked": False}


async def test_a_renewal_applies_a_revocation_made_straight_in_postgresql(
    start_gateway: StartGateway, services: ServiceSettings
) -> None:
    gateway = await start_gateway(key_cache_ttl_s=TTL_S)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        key_id, auth = await _auth(gateway, client)
        assert (await client.post("/v1/messages", headers=auth, json={"text": "fills"})).status_code == 202
        assert await gateway.pg.revoke_api_key(key_id)  # not through the anchor: the cache still says active
        cache = _cache_key(key_id)
        await trio.to_thread.run_sync(_pexpire, services, cache, 100_000)
        assert (await client.post("/v1/messages", headers=auth, json={"text": "last"})).status_code == 202
        await _wait_pttl_above(services, cache, 200_000)
        r = await client.post("/v1/messages", headers=auth, json={"text": "refused"})
        assert (r.status_code, r.json()["error"]) == (401, "key_revoked")


async def test_a_renewal_never_puts_active_back_over_a_revocation(services: ServiceSettings) -> None:
    async with RedisStore(services.redis.url, timeout_s=5.0) as redis:
        session = "apikey:k_refresh_test"
        active = {"role": "user", "scopes": ["messages:send"], "revoked": False}
        revoked = {"role": "", "scopes": [], "revoked": True}
        try:
            assert await redis.key_cache_refresh(session, active, 60)  # nothing cached: filled
            assert await redis.session_get(session) == active
            await redis.session_set(session, revoked, 60)  # the anchor revoked it meanwhile
            assert not await redis.key_cache_refresh(session, active, 60)  # read PostgreSQL before: left alone
            assert await redis.session_get(session) == revoked
            assert await redis.key_cache_refresh(session, revoked, 60)  # a revoked state is always written
            await redis.session_delete(session)
            assert await redis.key_cache_refresh(session, revoked, 60)
            assert await redis.session_get(session) == revoked
        finally:
            await redis.session_delete(session)
