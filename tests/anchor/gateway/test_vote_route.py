"""Governance over the real gateway: /v1/proposals against the anchor node's real village governance (this node
holds 3 of 4 power, so its own yes certifies), with scopes (401/403), audit rows before each change, refusals."""

from __future__ import annotations

from pathlib import Path

import httpx
import nacl.signing

from node.agents.govsettings import GovernanceSettings
from node.agents.settings import LlmSettings
from node.identity import create_identity
from node.transports.ble.settings import BleSection
from tests.anchor.gateway.conftest import StartGateway


async def test_proposals_votes_scopes_and_audit(start_gateway: StartGateway, short_tmp: Path) -> None:
    data_dir = short_tmp / "gwvote"
    data_dir.mkdir(mode=0o700)
    me = create_identity(data_dir).signing_public.hex()
    other = bytes(nacl.signing.SigningKey(b"\x11" * 32).verify_key).hex()
    gov = GovernanceSettings(village_members=(f"{me}:3", f"{other}:1"))
    gateway = await start_gateway(data_dir=data_dir, sections=(gov, LlmSettings(backend="off")))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30.0) as client:
        # proposing and voting as this node are explicit grants, never an admin key's defaults
        admin_id, admin = await gateway.key("admin", frozenset({"vote:read", "vote:propose", "vote:cast"}))
        _plain_id, plain = await gateway.key("admin")
        _user_id, user = await gateway.key("user")
        a = {"Authorization": f"Bearer {await gateway.token(client, admin)}"}
        plain_admin = {"Authorization": f"Bearer {await gateway.token(client, plain)}"}
        u = {"Authorization": f"Bearer {await gateway.token(client, user)}"}
        body = {"kind": "config", "key": "ble.power_mode", "value": "saver", "vote": False}

        assert (await client.post("/v1/proposals", json=body)).status_code == 401
        assert (await client.get("/v1/proposals")).status_code == 401
        assert (await client.post("/v1/proposals", headers=u, json=body)).status_code == 403  # user: read only
        assert (await client.post("/v1/proposals", headers=plain_admin, json=body)).status_code == 403
        assert (await client.get("/v1/proposals", headers=plain_admin)).status_code == 200
        r = await client.post("/v1/proposals", headers=a, json=body)
        assert r.status_code == 201, r.text
        out = r.json()
        h = out["proposal"]
        assert out["namespace"] == "village" and out["certificate"] is None

        listed = (await client.get("/v1/proposals", headers=u)).json()
        assert [p["hash"] for p in listed["proposals"]] == [h] and listed["epoch"] == 0
        one = (await client.get(f"/v1/proposals/{h}", headers=u)).json()
        assert (one["kind"], one["key"], one["value"], one["certificate"]) == (
            "config",
            "ble.power_mode",
            "saver",
            None,
        )
        assert (await client.get(f"/v1/proposals/{'0' * 64}", headers=u)).status_code == 404
        assert (await client.get("/v1/proposals/nothex", headers=u)).status_code == 422

        assert (await client.post(f"/v1/proposals/{h}/votes", headers=u, json={"value": "yes"})).status_code == 403
        r = await client.post(f"/v1/proposals/{h}/votes", headers=a, json={"value": "yes"})
        assert r.status_code == 201, r.text
        assert r.json()["certificate"]["signers"] == 1  # 3 of 4: 3 * 3 > 2 * 4
        assert gateway.node.config.section(BleSection).power_mode == "saver"  # applied to the running node
        one = (await client.get(f"/v1/proposals/{h}", headers=u)).json()
        assert one["certificate"]["value"] == "yes"

        r = await client.post(f"/v1/proposals/{h}/votes", headers=a, json={"value": "no"})
        assert (r.status_code, r.json()["error"]) == (400, "vote_rejected") and "already" in r.json()["detail"]
        bad = {"kind": "config", "key": "mesh.default_ttl", "value": 3}
        r = await client.post("/v1/proposals", headers=a, json=bad)
        assert r.status_code == 400 and "votable_keys" in r.json()["detail"]
        assert (await client.post("/v1/proposals", headers=a, json={"kind": "veto", "key": "x"})).status_code == 422
    rows = await gateway.audit_of(admin_id)
    actions = [r.action for r in rows]
    # what was proposed and voted is in the audit row, not only that something was
    assert [r.detail.get("value") for r in rows if r.action in ("vote.propose", "vote.cast")] == [
        '"saver"',
        "yes",
        "no",
        "3",
    ]
    assert actions == [
        "auth.token",
        "vote.propose",
        "vote.cast",
        "vote.cast",
        "vote.refused",
        "vote.propose",
        "vote.refused",
    ]
