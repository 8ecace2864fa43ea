"""The fast path of POST /v1/messages (anchor.gateway.fast_send) is taken, and where it answers it answers as the
FastAPI route does: repeated headers, store errors, a full audit backlog (review of gwperf, 4, 5 and 7)."""

from __future__ import annotations

import httpx
import pytest
import redis as redis_sync
import trio

import anchor.gateway.app
from anchor.services_settings import ServiceSettings
from anchor.stores.redis_store import KEY_PREFIX
from node.errors import MeshError
from tests.anchor.gateway.conftest import Gateway, StartGateway


async def _auth(gateway: Gateway, client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    key_id, secret = await gateway.key("user")
    return key_id, {"Authorization": f"Bearer {await gateway.token(client, secret)}"}


def _route_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FastAPI route answers 400 from now on; the fast path has its own reference to check_send."""

    def refuse(*args: object) -> str | None:
        raise MeshError("the FastAPI route was taken")

    monkeypatch.setattr(anchor.gateway.app, "check_send", refuse)


async def test_the_fast_path_answers_the_common_case(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await start_gateway()
    slow = await start_gateway(key_cache_ttl_s=0.0)  # no key cache: every request takes the route
    async with httpx.AsyncClient(base_url=gateway.url) as client, httpx.AsyncClient(base_url=slow.url) as slow_client:
        _key, auth = await _auth(gateway, client)
        _skey, slow_auth = await _auth(slow, slow_client)
        r = await client.post("/v1/messages", headers=auth, json={"text": "fills the key cache"})  # the route
        assert r.status_code == 202
        _route_refuses(monkeypatch)
        r = await client.post("/v1/messages", headers=auth, json={"text": "fast"})
        assert r.status_code == 202, r.text  # answered before the route
        r = await slow_client.post("/v1/messages", headers=slow_auth, json={"text": "slow"})
        assert (r.status_code, r.json()["detail"]) == (400, "the FastAPI route was taken")


async def test_repeated_headers_are_left_to_the_route(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, auth = await _auth(gateway, client)
        assert (await client.post("/v1/messages", headers=auth, json={"text": "cache"})).status_code == 202
        body = b'{"text":"a"}'
        types = [("authorization", auth["Authorization"]), ("content-type", "text/plain")]
        types.append(("content-type", "application/json"))
        forged = [("authorization", "Bearer forged"), ("authorization", auth["Authorization"])]
        forged.append(("content-type", "application/json"))
        for _ in range(2):  # the key is cached: the fast path would have answered both
            r = await client.post("/v1/messages", headers=types, content=body)
            assert r.status_code == 422, r.text  # the route reads the first Content-Type
            r = await client.post("/v1/messages", headers=forged, content=body)
            assert (r.status_code, r.json()["error"]) == (401, "invalid_token")  # and the first Authorization


def _set(services: ServiceSettings, key: str, value: str | None) -> None:
    client = redis_sync.Redis.from_url(services.redis.url)
    try:
        client.delete(key)
        if value is not None:
            client.set(key, value)
    finally:
        client.close()


async def test_a_redis_refusal_is_answered_as_the_route_answers_it(
    start_gateway: StartGateway, services: ServiceSettings
) -> None:
    gateway = await start_gateway(drain_audit=False)
    key = KEY_PREFIX + gateway.audit_stream
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, auth = await _auth(gateway, client)
        assert (await client.post("/v1/messages", headers=auth, json={"text": "cache"})).status_code == 202
        await trio.to_thread.run_sync(_set, services, key, "not a stream")  # WRONGTYPE from the script
        try:
            r = await client.post("/v1/messages", headers=auth, json={"text": "fast"})
        finally:
            await trio.to_thread.run_sync(_set, services, key, None)
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "store_error" and "WRONGTYPE" not in r.text  # the reason is logged, not sent
        r = await client.get("/v1/node", headers=auth)
        assert r.json()["gateway_refusals"].get("500") == 1  # counted as the route counts it


async def test_a_full_audit_backlog_says_when_to_retry(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(drain_audit=False, audit_backlog_max=1)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, auth = await _auth(gateway, client)
        assert (await client.post("/v1/messages", headers=auth, json={"text": "x"})).status_code == 202
        for _ in range(2):  # the key is cached: the fast path answers
            r = await client.post("/v1/messages", headers=auth, json={"text": "y"})
            assert (r.status_code, r.json()["error"], r.headers.get("Retry-After")) == (503, "audit_backlog_full", "1")
