""":class:`~anchor.gateway.ports.GatewayStores` over the anchor's real stores: API keys and the audit log in
PostgreSQL, token buckets in Redis. Thin on purpose: each method is one store call (or two for health).

A key's state is read from PostgreSQL on every authenticated request (``key_active``), so a revocation made
anywhere (``village anchor keys revoke``, ``DELETE /v1/keys/{id}``) stops its tokens at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anchor.gateway.ports import ApiKeyInfo, RateDecision
from anchor.stores.errors import StoreUnavailable
from anchor.stores.postgres import ApiKey, PostgresStore
from anchor.stores.redis_store import RedisStore


def _info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(key.key_id, key.name, key.role, key.scopes, key.created_at_ms, key.revoked)


class StoresAdapter:
    def __init__(self, postgres: PostgresStore, redis: RedisStore) -> None:
        self.postgres = postgres
        self.redis = redis

    async def verify_api_key(self, secret: str) -> ApiKeyInfo | None:
        key = await self.postgres.verify_api_key(secret)
        return None if key is None else _info(key)

    async def key_active(self, key_id: str) -> bool:
        return await self.postgres.key_active(key_id)

    async def create_api_key(self, name: str, role: str, scopes: frozenset[str]) -> tuple[ApiKeyInfo, str]:
        key, secret = await self.postgres.create_api_key(name, role, scopes)
        return _info(key), secret

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        return [_info(k) for k in await self.postgres.list_api_keys()]

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self.postgres.revoke_api_key(key_id)

    async def take_token(self, bucket: str, rate_per_s: float, burst: int) -> RateDecision:
        decision = await self.redis.take_token(bucket, rate_per_s, burst)
        return RateDecision(decision.allowed, decision.retry_after_s)

    async def audit(self, actor: str, action: str, target: str, detail: Mapping[str, Any]) -> None:
        await self.postgres.audit(actor, action, target, detail)

    async def health(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, store in (("postgres", self.postgres), ("redis", self.redis)):
            try:
                await store.ping()
                out[name] = "ok"
            except StoreUnavailable as exc:
                out[name] = str(exc)
        return out
