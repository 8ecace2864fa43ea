"""Regression tests for the anchor security review: each fails without its fix."""

from __future__ import annotations

import httpx

from tests.anchor.gateway.conftest import Gateway


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
