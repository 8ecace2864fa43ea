"""The anchor's stores as the gateway sees them: the graph in /v1/health, and the API-key cache in Redis."""

from __future__ import annotations

import httpx
import trio

from anchor.gateway.auth import ROLE_SCOPES
from anchor.services_settings import ServiceSettings
from anchor.stores.redis_store import RedisStore
from tests.anchor.gateway.conftest import StartGateway


async def test_health_reports_each_store_and_a_graph_outage_only_degrades(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as client:
        _key, secret = await gateway.key("user")
        auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
        r = await client.get("/v1/health")
        assert (r.status_code, r.json()["status"]) == (200, "ok")
        assert r.json()["stores"] == {"postgres": "ok", "redis": "ok", "graph": "ok"}

        gateway.graph_proxy.down()
        r = await client.get("/v1/health")
        assert (r.status_code, r.json()["status"]) == (200, "degraded")  # no route needs the graph yet
        assert r.json()["stores"] == {"postgres": "ok", "redis": "ok", "graph": "down"}
        assert (await client.post("/v1/messages", headers=auth, json={"text": "graph is down"})).status_code == 202

        gateway.redis_proxy.down()
        r = await client.get("/v1/health")
        assert (r.status_code, r.json()["status"]) == (503, "down")
        assert r.json()["stores"] == {"postgres": "ok", "redis": "down", "graph": "down"}

        await gateway.redis_proxy.up()
        await gateway.graph_proxy.up()
        with trio.fail_after(60):  # each check blocks for up to the store timeout while a store is still down
            while (await client.get("/v1/health")).json()["status"] != "ok":
                pass


async def test_api_key_state_is_cached_in_redis_and_revocation_is_instant(
    start_gateway: StartGateway, services: ServiceSettings
) -> None:
    gateway = await start_gateway(key_cache_ttl_s=300.0)
    redis = RedisStore(services.redis.url, timeout_s=5.0)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as client:
        _admin_id, admin_secret = await gateway.key("admin")
        admin = {"Authorization": f"Bearer {await gateway.token(client, admin_secret)}"}
        tokens = {}
        for name in ("a", "b", "c"):
            key_id, secret = await gateway.key("user")
            tokens[name] = (key_id, {"Authorization": f"Bearer {await gateway.token(client, secret)}"})

        # The first request fills the cache with the key's verified state.
        a_id, a_auth = tokens["a"]
        assert (await client.get("/v1/node", headers=a_auth)).status_code == 200
        cached = await redis.session_get(f"apikey:{a_id}")
        assert cached == {"role": "user", "scopes": sorted(ROLE_SCOPES["user"]), "revoked": False}

        # A revocation through the anchor applies to the very next request, cache or not.
        assert (await client.delete(f"/v1/keys/{a_id}", headers=admin)).status_code == 200
        r = await client.get("/v1/node", headers=a_auth)
        assert (r.status_code, r.json()["error"]) == (401, "key_revoked")
        assert (await redis.session_get(f"apikey:{a_id}") or {})["revoked"] is True

        # Requests read the cache, not PostgreSQL: a revocation made straight in the database (not through the
        # anchor) is not seen until the entry expires ...
        b_id, b_auth = tokens["b"]
        assert (await client.get("/v1/node", headers=b_auth)).status_code == 200
        assert await gateway.pg.revoke_api_key(b_id)
        assert (await client.get("/v1/node", headers=b_auth)).status_code == 200
        # ... and authenticated reads keep working while PostgreSQL is cut off, and so do messages: their audit
        # record waits in Redis (in the enqueue's atomic step) and reaches PostgreSQL once it is back. State
        # changes PostgreSQL records itself do not (no audit row, no change).
        c_id, c_auth = tokens["c"]
        assert (await client.get("/v1/node", headers=c_auth)).status_code == 200
        gateway.pg_proxy.down()
        assert (await client.get("/v1/peers", headers=c_auth)).status_code == 200
        r = await client.post("/v1/messages", headers=c_auth, json={"text": "audited in redis"})
        assert r.status_code == 202, r.text
        r = await client.post("/v1/keys", headers=admin, json={"name": "no audit, no key", "role": "user"})
        assert (r.status_code, r.json()["store"]) == (503, "postgres")
        await gateway.pg_proxy.up()
        assert [a.action for a in await gateway.audit_of(c_id)][-1] == "messages.broadcast"
    await redis.aclose()
