"""Regression tests for the anchor security review: each fails without its fix."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio_websocket

from tests.anchor.gateway.conftest import Gateway
from tests.anchor.gateway.test_gateway import _ws_rejection


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
