"""Regression tests for the anchor security review: each fails without its fix."""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio
import trio_websocket
from cryptography.hazmat.primitives import serialization

from anchor.gateway.app import GatewayContext, build_app
from anchor.gateway.auth import TokenIssuer
from anchor.gateway.server import serve_http, tls_files
from anchor.gateway.stores_adapter import StoresAdapter
from anchor.mailbox import MailboxCore, MailboxLimits, MailboxService, PostgresMailboxStorage
from anchor.run import open_stores, run_anchor
from anchor.settings import AnchorSection
from node.errors import StartupError
from node.identity import Identity, create_identity
from node.mailbox.protocol import Challenge, make_proof
from node.node import Node
from node.settings import Config
from tests.anchor.gateway.conftest import Gateway, StartGateway
from tests.anchor.gateway.test_gateway import _ws_rejection
from tests.certs import self_signed


async def test_a_narrowed_key_admin_cannot_mint_a_key_with_more_scopes(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    _admin_id, admin_secret = await gateway.key("admin")
    # A token narrowed to keys:admin, and a key narrowed to keys:admin: neither may create a wider key.
    narrowed_token = await gateway.token(client, admin_secret, scope="keys:admin")
    _kid, keys_only_secret = await gateway.key("admin", frozenset({"keys:admin"}))
    keys_only_token = await gateway.token(client, keys_only_secret)
    for token in (narrowed_token, keys_only_token):
        auth = {"Authorization": f"Bearer {token}"}
        for body in ({"name": "x", "role": "admin"}, {"name": "x", "role": "user", "scopes": ["node:read"]}):
            r = await client.post("/v1/keys", headers=auth, json=body)
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "scope_escalation"
        r = await client.post("/v1/keys", headers=auth, json={"name": "x", "role": "admin", "scopes": ["keys:admin"]})
        assert r.status_code == 201 and r.json()["scopes"] == ["keys:admin"]
    names = [k["name"] for k in (await client.get("/v1/keys", headers=auth)).json()]
    assert names.count("x") == 2  # only the two subset keys were created


def _hostport(gateway: Gateway) -> tuple[str, int]:
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def _closed_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code if closed.value.reason is not None else None


async def test_event_streams_close_with_1008_when_their_key_is_revoked(
    gateway: Gateway, client: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    admin = {"Authorization": f"Bearer {await gateway.token(client, (await gateway.key('admin'))[1])}"}
    host, port = _hostport(gateway)
    # Revoked through this gateway: the stream is woken at once (well before the 3 s re-check).
    key_id, secret = await gateway.key("user")
    ws = await trio_websocket.connect_websocket(
        nursery, host, port, f"/v1/events?access_token={await gateway.token(client, secret)}", use_ssl=False
    )
    assert (await client.delete(f"/v1/keys/{key_id}", headers=admin)).status_code == 200
    with trio.fail_after(2):
        assert await _closed_code(ws) == 1008
    # Revoked elsewhere (the CLI, another gateway): the periodic re-check notices.
    key_id, secret = await gateway.key("user")
    ws = await trio_websocket.connect_websocket(
        nursery, host, port, f"/v1/events?access_token={await gateway.token(client, secret)}", use_ssl=False
    )
    assert await gateway.pg.revoke_api_key(key_id)
    with trio.fail_after(15):
        assert await _closed_code(ws) == 1008


async def test_event_streams_are_capped_per_key_and_big_client_frames_close_them(
    gateway: Gateway, client: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    host, port = _hostport(gateway)
    _key_id, secret = await gateway.key("user")
    resource = f"/v1/events?access_token={await gateway.token(client, secret)}"
    streams = [await trio_websocket.connect_websocket(nursery, host, port, resource, use_ssl=False) for _ in range(4)]
    code, body = await _ws_rejection(host, port, resource)
    assert code == 429 and b"for this API key" in body
    _other_id, other = await gateway.key("user")  # another key still gets its streams
    other_ws = await trio_websocket.connect_websocket(
        nursery, host, port, f"/v1/events?access_token={await gateway.token(client, other)}", use_ssl=False
    )
    await other_ws.aclose()
    # A client frame over the 4 KiB limit ends the stream (1009: message too big).
    await streams[0].send_message(b"x" * 8192)
    with trio.fail_after(5):
        assert await _closed_code(streams[0]) == 1009
    for ws in streams[1:]:
        await ws.aclose()


async def test_a_public_plaintext_gateway_is_refused_at_start(short_tmp: Path) -> None:
    identity = create_identity(short_tmp)
    for listen in ("0.0.0.0:8000", "[::]:8000", "192.0.2.7:8000", "anchor.example:8000"):
        cfg = Config(data_dir=short_tmp, anchor=AnchorSection(gateway_listen=listen))
        node = Node(cfg, identity, control=False, persistent_inbox=False)
        with pytest.raises(StartupError) as refused:
            await run_anchor(node)
        for key in ("gateway_listen", "tls_cert", "tls_key", "allow_plaintext_public"):
            assert key in str(refused.value), (listen, str(refused.value))
    for section in (AnchorSection(tls_cert="/nope.pem"), AnchorSection(tls_cert="/nope.pem", tls_key="/nope.key")):
        with pytest.raises(StartupError, match="tls_"):
            tls_files(section)
    for ok in ("127.0.0.1:8000", "[::1]:8000", "localhost:8000"):
        assert tls_files(AnchorSection(gateway_listen=ok)) is None
    assert tls_files(AnchorSection(gateway_listen="0.0.0.0:8000", allow_plaintext_public=True)) is None


async def test_a_public_gateway_serves_with_tls_or_plaintext_when_allowed(
    start_gateway: StartGateway, short_tmp: Path
) -> None:
    cert, key = _self_signed(short_tmp)
    tls_gw = await start_gateway(gateway_listen="0.0.0.0:0", tls_cert=str(cert), tls_key=str(key))
    assert tls_gw.url.startswith("https://")
    port = tls_gw.url.rsplit(":", 1)[1]
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as tls_client:
        r = await tls_client.get(f"https://127.0.0.1:{port}/v1/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.HTTPError):  # no plaintext on the TLS port
            await plain.get(f"http://127.0.0.1:{port}/v1/health")
    proxied = await start_gateway(gateway_listen="0.0.0.0:0", allow_plaintext_public=True)
    assert proxied.url.startswith("http://")
    async with httpx.AsyncClient() as plain:
        port = proxied.url.rsplit(":", 1)[1]
        assert (await plain.get(f"http://127.0.0.1:{port}/v1/health")).status_code == 200


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the test's own CA) and its key, as PEM files."""
    key, cert = self_signed("village test gateway", ip="127.0.0.1")
    cert_path, key_path = directory / "gw.crt", directory / "gw.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


async def mailbox_gateway(start_gateway: StartGateway) -> tuple[Gateway, MailboxService]:
    box: list[MailboxService] = []
    gateway = await start_gateway(mailbox=_LateService(box))
    core = MailboxCore(Identity.generate().signing_public, MailboxLimits())
    box.append(MailboxService(core, PostgresMailboxStorage(gateway.pg), gateway.node.clock.wall_ms))
    return gateway, box[0]


async def test_mailbox_parameters_are_validated_before_the_audit_and_store_errors_are_json(
    start_gateway: StartGateway, pg_dsn: str
) -> None:
    gateway, _service = await mailbox_gateway(start_gateway)
    key_id, secret = await gateway.key("node")
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
        for params in ({"peer": "not hex at all"}, {"peer": "ab" * 9}, {"grant": "00" * 16, "ack": "1,x"}):
            r = await client.get("/v1/mailbox", headers=auth, params=params)
            assert r.status_code == 422, (params, r.text)
        assert [r.action for r in await gateway.audit_of(key_id)] == ["auth.token"]  # nothing audited

        # A store that answers but refuses (here: its table is gone) gives a JSON 500, not a bare one.
        def drop_table() -> None:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("DROP TABLE mailbox")

        await trio.to_thread.run_sync(drop_table)
        recipient = Identity.generate()
        ch = (await client.get("/v1/mailbox", headers=auth)).json()
        challenge = Challenge(bytes.fromhex(ch["nonce"]), bytes.fromhex(ch["ephemeral_key"]), ch["expires_at_ms"])
        proof = make_proof(recipient, bytes.fromhex(ch["anchor_key"]), challenge)
        params = {
            "peer": recipient.peer_id.hex(),
            "noise_key": proof.noise_public.hex(),
            "signing_key": proof.signing_public.hex(),
            "nonce": proof.nonce.hex(),
            "mac": proof.mac.hex(),
            "signature": proof.signature.hex(),
        }
        r = await client.get("/v1/mailbox", headers=auth, params=params)
        assert r.status_code == 500 and r.json()["error"] == "store_error", r.text
        assert "mailbox" not in r.json()["detail"]  # the driver's message stays in the log


class _LateService:
    """The MailboxPort, bound once the test has the gateway's PostgreSQL store."""

    def __init__(self, box: list[MailboxService]) -> None:
        self.box = box

    async def gateway_fetch(self, key_id: str, query: Mapping[str, str]) -> object:
        return await self.box[0].gateway_fetch(key_id, query)

    def audit_entry(self, query: Mapping[str, str]) -> tuple[str, str, dict[str, Any]]:
        return self.box[0].audit_entry(query)


class _CountingHealth(StoresAdapter):
    """The real stores, counting how often the gateway asks them for their health."""

    health_checks = 0

    async def health(self) -> dict[str, str]:
        self.health_checks += 1
        return await super().health()


async def test_health_asks_the_stores_at_most_once_per_window_even_while_redis_is_down(
    gateway: Gateway, nursery: trio.Nursery
) -> None:
    async with open_stores(gateway.cfg) as real:
        stores = _CountingHealth(real.postgres, real.redis)
        ctx = GatewayContext(
            node=gateway.node,
            stores=stores,
            issuer=TokenIssuer(b"s" * 32, issuer="health", ttl_s=60),
            settings=dataclasses.replace(gateway.cfg.section(AnchorSection), health_cache_s=3600.0),
            wall_s=time.time,
        )
        stop = trio.Event()
        urls = await nursery.start(serve_http, build_app(ctx), "127.0.0.1:0", stop)
        gateway.redis_proxy.down()  # no per-IP limit now: only the cache protects the stores
        async with httpx.AsyncClient(base_url=urls[0], timeout=30) as client:
            statuses: list[int] = []

            async def probe() -> None:
                statuses.append((await client.get("/v1/health")).status_code)

            async with trio.open_nursery() as burst:
                for _ in range(20):
                    burst.start_soon(probe)
            assert statuses == [503] * 20 and stores.health_checks == 1
            ctx.settings = dataclasses.replace(
                ctx.settings, health_cache_s=0.0
            )  # the window over: the next request asks again
            await gateway.redis_proxy.up()
            assert (await client.get("/v1/health")).status_code == 200 and stores.health_checks == 2
        stop.set()
