"""The gateway over real HTTP on loopback, with real PostgreSQL and Redis behind it."""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from anchor.gateway.app import GatewayContext, build_app
from anchor.gateway.auth import ROLE_SCOPES, TokenIssuer, load_or_create_secret
from anchor.gateway.server import serve_http
from anchor.run import open_stores
from anchor.settings import AnchorSection
from node.identity import create_identity
from node.node import Node
from node.settings import Config
from node.transports.memory import MemoryNetwork
from tests.anchor.gateway.conftest import Gateway, StartGateway

FULL_PEER_ID = "0123456789abcdef"  # a peer not heard from yet: accepted and held in the outbox


async def until_settled(client: httpx.AsyncClient, auth: dict[str, str], message_id: str) -> dict[str, Any]:
    """GET /v1/messages/{id} until the node has taken the message from the queue (its state is not "queued")."""
    with trio.fail_after(20):
        while True:
            r = await client.get(f"/v1/messages/{message_id}", headers=auth)
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["state"] != "queued":
                return body
            await trio.sleep(0.02)  # a poll interval for an HTTP client; fail_after bounds the wait


async def test_tokens_by_api_key_client_credentials_and_basic(gateway: Gateway, client: httpx.AsyncClient) -> None:
    key_id, secret = await gateway.key("user")
    r1 = await client.post("/v1/auth/token", headers={"X-API-Key": secret})
    r2 = await client.post(
        "/v1/auth/token", data={"grant_type": "client_credentials", "client_id": key_id, "client_secret": secret}
    )
    basic = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
    r3 = await client.post(
        "/v1/auth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    for r in (r1, r2, r3):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == int(
            gateway.cfg.section(AnchorSection).token_ttl_s
        )
        assert set(body["scope"].split()) == ROLE_SCOPES["user"]
    narrowed = await client.post("/v1/auth/token", headers={"X-API-Key": secret}, data={"scope": "node:read"})
    assert narrowed.json()["scope"] == "node:read"
    rows = await gateway.audit_of(key_id)
    assert [r.action for r in rows] == ["auth.token"] * 4
    assert rows[-1].target == key_id and rows[-1].detail["scope"] == "node:read"


async def test_routes_reach_the_node_and_every_state_change_is_audited(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    key_id, secret = await gateway.key("user")
    auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
    node = (await client.get("/v1/node", headers=auth)).json()
    assert node["peer_id"] == gateway.node.identity.peer_id_hex and node["transports"] == []
    assert (await client.get("/v1/peers", headers=auth)).json() == []
    health = await client.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["stores"] == {"postgres": "ok", "redis": "ok", "graph": "ok"}

    r = await client.post("/v1/messages", headers=auth, json={"to": FULL_PEER_ID, "text": "held for later"})
    assert r.status_code == 202 and r.json()["state"] == "queued" and r.json()["to"] == FULL_PEER_ID
    private_id = r.json()["id"]
    with trio.fail_after(20):  # the queue's consumer hands it to the node under the ID the client got
        await gateway.node.wait_until(lambda: private_id in gateway.node.outgoing)
    sent = gateway.node.outgoing[private_id]
    assert (sent.to, sent.text, sent.state) == (FULL_PEER_ID, "held for later", "pending")
    r = await client.post("/v1/messages", headers=auth, json={"text": "hello mesh"})
    assert r.status_code == 202 and r.json()["state"] == "queued" and r.json()["to"] is None
    status = await until_settled(client, auth, r.json()["id"])
    assert status["state"] == "sent" and status["mesh_id"] in gateway.node.outgoing
    assert gateway.node.outgoing[status["mesh_id"]].text == "hello mesh"

    bad = await client.post("/v1/messages", headers=auth, json={"to": "nobody", "text": "x"})
    assert bad.status_code == 400 and bad.json()["error"] == "mesh_rejected"
    assert (await client.post("/v1/messages", headers=auth, json={"to": FULL_PEER_ID})).status_code == 422
    too_long = await client.post("/v1/messages", headers=auth, json={"to": FULL_PEER_ID, "text": "é" * 200})
    assert too_long.status_code == 400 and "255" in too_long.json()["detail"]  # 400 bytes: over a private message's
    long_broadcast = await client.post("/v1/messages", headers=auth, json={"text": "x" * 4096})
    assert long_broadcast.status_code == 202  # public messages may be longer (fragmented on the wire)

    rows = await gateway.audit_of(key_id)
    assert [(r.action, r.target) for r in rows] == [
        ("auth.token", key_id),
        ("messages.send", FULL_PEER_ID),
        ("messages.broadcast", "*"),
        ("messages.broadcast", "*"),
    ]
    assert rows[1].detail == {"bytes": len("held for later"), "id": private_id}  # never the text itself
    assert all("held for later" not in str(r.detail) for r in rows)


async def test_admin_manages_keys_and_a_revocation_stops_live_tokens(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    admin_id, admin_secret = await gateway.key("admin")
    admin = {"Authorization": f"Bearer {await gateway.token(client, admin_secret)}"}
    r = await client.post("/v1/keys", headers=admin, json={"name": "phone", "role": "user", "scopes": ["node:read"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["scopes"] == ["node:read"] and created["secret"]
    listed = (await client.get("/v1/keys", headers=admin)).json()
    assert created["key_id"] in {k["key_id"] for k in listed}
    assert all("secret" not in k for k in listed)

    user = {"Authorization": f"Bearer {await gateway.token(client, created['secret'])}"}
    assert (await client.get("/v1/node", headers=user)).status_code == 200
    assert (await client.get("/v1/keys", headers=user)).status_code == 403  # not an admin

    r = await client.delete(f"/v1/keys/{created['key_id']}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked"] is True
    r = await client.get("/v1/node", headers=user)
    assert r.status_code == 401 and r.json()["error"] == "key_revoked"
    r = await client.post("/v1/auth/token", headers={"X-API-Key": created["secret"]})
    assert r.status_code == 401
    assert (await client.delete("/v1/keys/k_nope", headers=admin)).status_code == 404
    actions = [(r.action, r.target) for r in await gateway.audit_of(admin_id)]
    assert actions == [("auth.token", admin_id), ("keys.create", "phone"), ("keys.revoke", created["key_id"])]


async def test_auth_negatives_all_fail(gateway: Gateway, client: httpx.AsyncClient) -> None:
    key_id, secret = await gateway.key("user", frozenset({"node:read"}))
    token = await gateway.token(client, secret)
    issuer = TokenIssuer(
        load_or_create_secret(gateway.cfg.data_dir),
        issuer=f"aivillage-anchor:{gateway.node.identity.peer_id_hex}",
        ttl_s=60,
    )
    expired = issuer.issue(key_id=key_id, role="user", scopes=ROLE_SCOPES["user"], now_s=time.time() - 3600)
    head, body, sig = token.split(".")
    tampered = f"{head}.{body}.{sig[:-4]}{'AAAA' if not sig.endswith('AAAA') else 'BBBB'}"
    other_anchor = TokenIssuer(b"x" * 32, issuer=issuer.issuer, ttl_s=60).issue(
        key_id=key_id, role="admin", scopes=ROLE_SCOPES["admin"], now_s=time.time()
    )
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("no token", {}, 401, "missing_token"),
        ("not bearer", {"Authorization": f"Basic {token}"}, 401, "missing_token"),
        ("garbage", {"Authorization": "Bearer abc.def.ghi"}, 401, "invalid_token"),
        ("expired", {"Authorization": f"Bearer {expired.access_token}"}, 401, "token_expired"),
        ("tampered", {"Authorization": f"Bearer {tampered}"}, 401, "invalid_token"),
        ("other secret", {"Authorization": f"Bearer {other_anchor.access_token}"}, 401, "invalid_token"),
    ]
    for name, headers, status, code in cases:
        for method, path in [("GET", "/v1/node"), ("GET", "/v1/peers"), ("POST", "/v1/messages"), ("GET", "/v1/keys")]:
            r = await client.request(method, path, headers=headers, json={"text": "x"})
            assert (r.status_code, r.json()["error"]) == (status, code), (name, path, r.text)
            if status == 401:
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
    ok = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/v1/node", headers=ok)).status_code == 200
    for method, path in [("POST", "/v1/messages"), ("GET", "/v1/mailbox"), ("GET", "/v1/keys")]:
        r = await client.request(method, path, headers=ok, json={"text": "x"})
        assert (r.status_code, r.json()["error"]) == (403, "forbidden"), path  # wrong scope
    r = await client.post("/v1/auth/token", headers={"X-API-Key": secret}, data={"scope": "messages:send"})
    assert r.status_code == 403  # a token cannot hold more than its key

    for creds in [
        {"X-API-Key": "avk_not-a-key"},
        {"X-API-Key": ""},
    ]:
        assert (await client.post("/v1/auth/token", headers=creds)).status_code == 401
    for form in [
        {"grant_type": "client_credentials", "client_id": key_id, "client_secret": "avk_wrong"},
        {"grant_type": "client_credentials", "client_id": "k_other", "client_secret": secret},
        {"grant_type": "client_credentials", "client_id": key_id},
    ]:
        assert (await client.post("/v1/auth/token", data=form)).status_code == 401, form
    r = await client.post("/v1/auth/token", data={"grant_type": "password", "username": "a", "password": "b"})
    assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")
    assert (await client.post("/v1/auth/token")).status_code == 401
    assert gateway.node.outgoing == {}  # nothing got through
    assert [r.action for r in await gateway.audit_of(key_id)] == ["auth.token"]


async def test_rate_limits_per_key_and_per_ip(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(key_rate_per_s=0.01, key_burst=3, ip_rate_per_s=0.01, ip_burst=6)
    # Each run uses fresh loopback addresses: the Redis buckets of earlier runs do not matter.
    ip_a, ip_b = (f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}" for _ in "ab")
    key_a, secret_a = await gateway.key("user")
    key_b, secret_b = await gateway.key("user")

    def client_from(ip: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=gateway.url, transport=httpx.AsyncHTTPTransport(local_address=ip))

    async with client_from(ip_a) as a, client_from(ip_b) as b:
        auth_a = {"Authorization": f"Bearer {await gateway.token(a, secret_a)}"}  # key A 1/3, IP A 1/6
        statuses = [await a.get("/v1/node", headers=auth_a) for _ in range(3)]  # key A 3/3 then empty; IP A 4/6
        assert [r.status_code for r in statuses] == [200, 200, 429]
        limited = statuses[-1]
        assert limited.json()["error"] == "rate_limited" and "per-key" in limited.json()["detail"]
        assert int(limited.headers["Retry-After"]) >= 60  # 1 token at 0.01/s
        auth_b = {"Authorization": f"Bearer {await gateway.token(a, secret_b)}"}  # key B 1/3, IP A 5/6
        assert (await a.get("/v1/node", headers=auth_b)).status_code == 200  # key B 2/3, IP A 6/6
        r = await a.get("/v1/peers", headers=auth_b)  # IP A is out of tokens; key B is not
        assert r.status_code == 429 and "per-ip" in r.json()["detail"] and int(r.headers["Retry-After"]) >= 60
        assert (await a.get("/v1/health")).status_code == 429
        r = await a.post("/v1/auth/token", headers={"X-API-Key": secret_b})
        assert r.status_code == 429 and "per-ip" in r.json()["detail"]
        r = await b.get("/v1/node", headers=auth_b)  # key B 3/3 from another address
        assert r.status_code == 200 and r.json()["gateway_refusals"]["429"] == 4
    assert [r.action for r in await gateway.audit_of(key_a)] == ["auth.token"]
    assert [r.action for r in await gateway.audit_of(key_b)] == ["auth.token"]


async def test_store_down_gives_503_and_the_gateway_recovers(
    gateway: Gateway, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="village.anchor.stores")
    key_id, secret = await gateway.key("user")
    auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
    admin_id, admin_secret = await gateway.key("admin")
    admin = {"Authorization": f"Bearer {await gateway.token(client, admin_secret)}"}
    for proxy, store in [(gateway.redis_proxy, "redis"), (gateway.pg_proxy, "postgres")]:
        proxy.down()
        for _ in range(2):
            if store == "postgres":  # a state change PostgreSQL must record first: a new key
                r = await client.post("/v1/keys", headers=admin, json={"name": "while down", "role": "user"})
            else:
                r = await client.post("/v1/messages", headers=auth, json={"text": f"while {store} is down"})
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "store_unavailable" and r.json()["store"] == store
            assert "Retry-After" in r.headers
        if store == "postgres":
            # A message needs no PostgreSQL: its audit record waits in Redis (same atomic step as the enqueue)
            # and reaches PostgreSQL once it is back (below).
            r = await client.post("/v1/messages", headers=auth, json={"text": "while postgres is down"})
            assert r.status_code == 202, r.text
        health = await client.get("/v1/health")
        assert health.status_code == 503 and health.json()["stores"][store] == "down"
        assert health.json()["status"] == "down"
        assert "127.0.0.1" not in r.text + health.text  # no internal addresses for clients
        down_lines = [m for m in caplog.messages if f"{store} store unavailable" in m]
        assert len(down_lines) == 1, down_lines  # one line per outage, not one per request
        await proxy.up()
        # PostgreSQL's pool reconnects in the background (with backoff): wait for the health check to say so.
        # Each check blocks for up to store_timeout_s while the pool has no connection, so this is no busy loop.
        with trio.fail_after(60):
            while (await client.get("/v1/health")).status_code != 200:
                pass
        r = await client.post("/v1/messages", headers=auth, json={"text": f"after {store} came back"})
        assert r.status_code == 202, r.text
        assert (await until_settled(client, auth, r.json()["id"]))["state"] == "sent"
        assert any(f"{store} store available again" in m for m in caplog.messages)
    assert (await client.get("/v1/health")).status_code == 200
    texts = [m.text for m in gateway.node.outgoing.values()]
    assert texts == ["after redis came back", "while postgres is down", "after postgres came back"]
    assert [r.action for r in await gateway.audit_of(key_id)] == [
        "auth.token",
        "messages.broadcast",
        "messages.broadcast",
        "messages.broadcast",
    ]
    assert [r.action for r in await gateway.audit_of(admin_id)] == ["auth.token"]  # no key made while it was down


async def test_body_limit_and_openapi(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(max_body_bytes=2048)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, secret = await gateway.key("user")
        auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
        r = await client.post("/v1/messages", headers=auth, content=b"{" + b" " * 4096 + b"}")
        assert r.status_code == 413

        async def chunks() -> object:  # no Content-Length: counted as it streams
            for _ in range(4):
                yield b" " * 1024

        r = await client.post("/v1/messages", headers=auth, content=chunks())  # type: ignore[arg-type]
        assert r.status_code == 413
        doc = (await client.get("/openapi.json")).json()
    assert set(doc["paths"]) == {
        "/v1/health",
        "/v1/auth/token",
        "/v1/node",
        "/v1/peers",
        "/v1/messages",
        "/v1/messages/{message_id}",
        "/v1/rag/query",
        "/v1/ask",
        "/v1/twin/suggest",
        "/v1/proposals",
        "/v1/proposals/{proposal}",
        "/v1/proposals/{proposal}/votes",
        "/v1/mailbox",
        "/v1/keys",
        "/v1/keys/{key_id}",
        "/metrics",
    }
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            public = path in ("/v1/health", "/v1/auth/token")
            assert public or op.get("security") == [{"HTTPBearer": []}], (method, path)


async def test_events_stream_the_inbox_over_websocket(
    start_gateway: StartGateway, nursery: trio.Nursery, short_tmp: Path
) -> None:
    net = MemoryNetwork(seed=1)
    await nursery.start(net.run)
    to_sender, to_anchor = net.transport("sender"), net.transport("anchor")
    gateway = await start_gateway(transports=[to_anchor], max_event_streams=1)
    sender_dir = short_tmp / "sender"
    sender_dir.mkdir(mode=0o700)
    sender = Node(Config(data_dir=sender_dir), create_identity(sender_dir), transports=[to_sender], control=False)
    await nursery.start(sender.run)

    async with httpx.AsyncClient(base_url=gateway.url) as client:
        key_id, secret = await gateway.key("user")
        token = await gateway.token(client, secret)
        _k2, node_only = await gateway.key("user", frozenset({"node:read"}))
        narrow = await gateway.token(client, node_only)
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    for resource, status in [("/v1/events", 401), (f"/v1/events?access_token={narrow}", 403)]:
        code, body = await _ws_rejection(host, int(port), resource)
        assert code == status and b'"error"' in body

    ws = await trio_websocket.connect_websocket(
        nursery,
        host,
        int(port),
        "/v1/events",
        use_ssl=False,
        extra_headers=[(b"authorization", f"Bearer {token}".encode())],
    )
    await ws.send_message(b"\x00binary chatter")  # ignored, does not end the stream
    await ws.send_message("text chatter")
    net.connect(to_sender, to_anchor)
    anchor_id = gateway.node.identity.peer_id
    with trio.fail_after(20):
        await sender.wait_until(lambda: sender.core is not None and sender.core.peers.get(anchor_id) is not None)
        sender.send_private(anchor_id.hex(), "to the anchor")
        event = json.loads(await ws.get_message())
        assert (event["text"], event["private"], event["from"]) == ("to the anchor", True, sender.identity.peer_id_hex)
        sender.broadcast("to everyone")
        event = json.loads(await ws.get_message())
        assert (event["text"], event["private"]) == ("to everyone", False)
    # One stream at a time here (max_event_streams = 1): a second is refused while the first is open.
    code, body = await _ws_rejection(host, int(port), f"/v1/events?access_token={token}")
    assert code == 429 and b"too many event streams" in body
    await ws.aclose()
    # The stream's subscription ends with it: the next message reaches the inbox and breaks nothing.
    follower = gateway.node.subscribe_inbox()
    with trio.fail_after(20):
        sender.broadcast("after the stream closed")
        assert (await follower.receive()).text == "after the stream closed"
    # A stream ends when its token expires, with close code 1008 (policy violation: get a new token).
    issuer = TokenIssuer(
        load_or_create_secret(gateway.cfg.data_dir),
        issuer=f"aivillage-anchor:{gateway.node.identity.peer_id_hex}",
        ttl_s=5.0,  # exp is whole seconds: this one expires 4 to 5 s from now
    )
    short = issuer.issue(key_id=key_id, role="user", scopes=ROLE_SCOPES["user"], now_s=time.time()).access_token
    with trio.fail_after(20):
        async with trio_websocket.open_websocket(
            host, int(port), f"/v1/events?access_token={short}", use_ssl=False
        ) as expiring:
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await expiring.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == 1008
    sender.request_stop()


async def _ws_rejection(host: str, port: int, resource: str) -> tuple[int, bytes]:
    """The HTTP status and body a WebSocket handshake was refused with."""
    try:
        async with trio_websocket.open_websocket(host, port, resource, use_ssl=False):
            pass
    except trio_websocket.ConnectionRejected as exc:
        return exc.status_code, exc.body or b""
    except BaseExceptionGroup as group:
        found = group.subgroup(trio_websocket.ConnectionRejected)
        while found is not None and isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]  # type: ignore[assignment]
        if isinstance(found, trio_websocket.ConnectionRejected):
            return found.status_code, found.body or b""
        raise
    raise AssertionError(f"{resource}: the handshake succeeded")


async def test_routes_that_need_the_node_answer_503_until_it_runs(
    gateway: Gateway, nursery: trio.Nursery, short_tmp: Path
) -> None:
    """run_anchor listens before the node starts: what the gateway answers in that window."""
    idle_dir = short_tmp / "idle"
    idle_dir.mkdir(mode=0o700)
    idle = Node(Config(data_dir=idle_dir), create_identity(idle_dir), control=False, persistent_inbox=False)
    _key_id, secret = await gateway.key("user")
    async with open_stores(gateway.cfg) as stores:
        ctx = GatewayContext(
            node=idle,
            stores=stores,
            issuer=TokenIssuer(b"s" * 32, issuer="idle", ttl_s=60),
            settings=gateway.cfg.section(AnchorSection),
            wall_s=time.time,
        )
        stop = trio.Event()
        urls = await nursery.start(serve_http, build_app(ctx), "127.0.0.1:0", stop)
        async with httpx.AsyncClient(base_url=urls[0]) as client:
            token = (await client.post("/v1/auth/token", headers={"X-API-Key": secret})).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            for method, path in [("GET", "/v1/node"), ("GET", "/v1/peers"), ("POST", "/v1/messages")]:
                r = await client.request(method, path, headers=auth, json={"text": "too early"})
                assert (r.status_code, r.json()["error"]) == (503, "node_unavailable"), path
            assert (await client.get("/v1/health")).status_code == 200
        stop.set()
