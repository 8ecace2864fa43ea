""":class:`~anchor.gateway.ports.GatewayStores` over the anchor's real stores: API keys and the audit log in
PostgreSQL; token buckets and the API-key cache in Redis; the Bolt graph server for health. Thin on purpose:
each method is one or two store calls.

Key cache: every authenticated request needs its key's state (revoked or not). It is cached in Redis
(``aiv:sess:apikey:<key id>`` → role, scopes, revoked) for ``key_cache_ttl_s``, so a request reads Redis, not
PostgreSQL. A revocation through this anchor (``DELETE /v1/keys/{id}``, ``village anchor keys revoke``) writes
the revoked state into the cache in the same call (even with ``key_cache_ttl_s = 0`` here: another gateway
sharing the Redis may cache), so its tokens stop at once. A revoked state (from a revocation, or a fill or
renewal that read it in PostgreSQL) is cached for ``max(key_cache_ttl_s, token_ttl_s)``: a fill or renewal that
read PostgreSQL before the revocation committed and writes "active" late (a slow statement, an abandoned Redis
worker thread) cannot overwrite it (``KEY_REFRESH_LUA`` refuses active over revoked), and once it expired every
token issued before the revocation has expired too (tokens are issued only for keys PostgreSQL says active), so a
late "active" then admits none of them. This assumes the gateways sharing the Redis share ``token_ttl_s``.
Besides, an "active" entry a fill or renewal writes expires ``key_cache_ttl_s`` after its PostgreSQL read (Redis's
own clock, read before the read and inside the write script; never later than that TTL after the write), and one
whose read is that old by then is not written at all: a stalled one cannot stretch a revocation made straight in
PostgreSQL (not through the anchor), which takes up to ``key_cache_ttl_s`` to apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from anchor.gateway.ports import ApiKeyInfo, RateDecision
from anchor.stores.errors import StoreUnavailable
from anchor.stores.graph import GraphStore
from anchor.stores.postgres import ApiKey, PostgresStore
from anchor.stores.redis_store import RedisStore

KEY_CACHE_PREFIX = "apikey:"
REFRESHING_MAX = 1024  # keys whose cache entry is being refreshed at once (more: left to expire and refill)


def _info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(key.key_id, key.name, key.role, key.scopes, key.created_at_ms, key.revoked)


class StoresAdapter:
    def __init__(
        self,
        postgres: PostgresStore,
        redis: RedisStore,
        graph: GraphStore | None = None,
        *,
        key_cache_ttl_s: float = 0.0,
        token_ttl_s: float = 900.0,
    ) -> None:
        self.postgres = postgres
        self.redis = redis
        self.graph = graph
        self.key_cache_ttl_s = key_cache_ttl_s
        # A revoked entry outlives every token issued before the revocation (see the module docstring).
        self.revoked_ttl_s = max(key_cache_ttl_s, token_ttl_s)
        self._refreshing: set[str] = set()  # one refresh per key at a time in this gateway (at most REFRESHING_MAX)

    async def verify_api_key(self, secret: str) -> ApiKeyInfo | None:
        key = await self.postgres.verify_api_key(secret)
        return None if key is None else _info(key)

    async def key_active(self, key_id: str) -> bool:
        if self.key_cache_ttl_s <= 0:
            return await self.postgres.key_active(key_id)
        cache_id = KEY_CACHE_PREFIX + key_id
        cached = await self.redis.session_get(cache_id)
        if cached is not None:
            return cached.get("revoked") is False
        read_at_ms = await self.redis.time_ms()
        state = await self._key_state(key_id)
        await self._write_state(key_id, state, read_at_ms)
        return state["revoked"] is False

    async def _write_state(self, key_id: str, state: dict[str, Any], read_at_ms: int) -> bool:
        """Cache the state read from PostgreSQL (KEY_REFRESH_LUA): "revoked" always, for revoked_ttl_s; "active"
        unless the entry says revoked, until key_cache_ttl_s after the read (nothing if that has passed)."""
        ttl_s = self._ttl_s(state)
        return await self.redis.key_cache_refresh(KEY_CACHE_PREFIX + key_id, state, ttl_s, read_at_ms=read_at_ms)

    def _ttl_s(self, state: Mapping[str, Any]) -> float:
        return self.key_cache_ttl_s if state["revoked"] is False else self.revoked_ttl_s

    async def _key_state(self, key_id: str) -> dict[str, Any]:
        key = await self.postgres.get_api_key(key_id)
        if key is None:
            return {"role": "", "scopes": [], "revoked": True}  # unknown keys are cached as revoked
        return {"role": key.role, "scopes": sorted(key.scopes), "revoked": key.revoked}

    async def refresh_key_cache(self, key_id: str) -> bool:
        """Re-read the key's state from PostgreSQL and renew its cache entry before it expires, unless a refresh
        of that key is under way already in this gateway (or REFRESHING_MAX are); True if this call renewed it.
        Each gateway sharing the Redis guards only its own refreshes. Store errors propagate."""
        if self.key_cache_ttl_s <= 0 or key_id in self._refreshing or len(self._refreshing) >= REFRESHING_MAX:
            return False
        self._refreshing.add(key_id)
        try:
            read_at_ms = await self.redis.time_ms()
            state = await self._key_state(key_id)
            return await self._write_state(key_id, state, read_at_ms)
        finally:
            self._refreshing.discard(key_id)

    async def create_api_key(self, name: str, role: str, scopes: frozenset[str]) -> tuple[ApiKeyInfo, str]:
        key, secret = await self.postgres.create_api_key(name, role, scopes)
        return _info(key), secret

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        return [_info(k) for k in await self.postgres.list_api_keys()]

    async def revoke_api_key(self, key_id: str) -> bool:
        revoked = await self.postgres.revoke_api_key(key_id)
        # Overwrite whatever is cached, even with no cache here (another gateway sharing the Redis may have one):
        # the key's tokens stop now.
        state = {"role": "", "scopes": [], "revoked": True}
        await self.redis.session_set(KEY_CACHE_PREFIX + key_id, state, self.revoked_ttl_s)
        return revoked

    async def take_token(self, bucket: str, rate_per_s: float, burst: int) -> RateDecision:
        decision = await self.redis.take_token(bucket, rate_per_s, burst)
        return RateDecision(decision.allowed, decision.retry_after_s)

    async def audit(self, actor: str, action: str, target: str, detail: Mapping[str, Any]) -> None:
        await self.postgres.audit(actor, action, target, detail)

    async def health(self) -> dict[str, str]:
        """Each store pinged at once (a store that is down costs its timeout, not the sum of all)."""
        stores: list[tuple[str, PostgresStore | RedisStore | GraphStore]] = [
            ("postgres", self.postgres),
            ("redis", self.redis),
        ]
        if self.graph is not None:
            stores.append(("graph", self.graph))
        out: dict[str, str] = {}

        async def check(name: str, store: PostgresStore | RedisStore | GraphStore) -> None:
            try:
                await store.ping()
                out[name] = "ok"
            except StoreUnavailable as exc:
                out[name] = str(exc)

        async with trio.open_nursery() as nursery:
            for name, store in stores:
                nursery.start_soon(check, name, store)
        return {name: out[name] for name, _ in stores}
