"""``GET /v1/node`` and the MCP ``node_status`` tool type the stable fields of ``node.status`` once
(node.mcp.outputs.NodeStatusStable); the gateway's model adds its refusal counts and passes nothing else on. The
fields the HTTP answer may carry are named here literally: moving a field into NodeStatusStable widens what any
``node:read`` token sees, and must fail here until it is added on purpose."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from anchor.gateway.app import NodeOut
from node.mcp.outputs import NodeStatusOut, NodeStatusStable
from tests.anchor.gateway.conftest import Gateway

ALLOWED = [  # what GET /v1/node answers, in order: nothing else of node.status reaches a node:read token
    "peer_id",
    "fingerprint",
    "nickname",
    "uptime_s",
    "transports",
    "listen_addrs",
    "peers",
    "links",
    "pending_private",
    "routes",
    "gateway_refusals",
]

STATUS: dict[str, Any] = {  # a whole node.status answer: stable fields, then what only the node's own tools show
    "peer_id": "3f2a9c01aabbccdd",
    "fingerprint": "ab" * 32,
    "nickname": "anchor",
    "uptime_s": 12.5,
    "transports": ["betanet"],
    "listen_addrs": ["/ip4/127.0.0.1/tcp/4001"],
    "peers": 2,
    "links": 3,
    "pending_private": 1,
    "outbox": {"pending": 1, "delivered": 4, "failed": 0},
    "routes": 5,
    "data_dir": "/home/someone/.village",
    "counters": {"frames_in": 9},
    "app_counters": {},
    "contained": {},
    "transport_counters": {"betanet": {"dials": 1.0}},
}


def test_the_gateway_answers_the_stable_fields_and_its_refusals_only() -> None:
    NodeStatusOut.model_validate(STATUS)  # (the sample is a valid node.status answer)
    body = NodeOut.model_validate({**STATUS, "gateway_refusals": {"429": 2}}).model_dump(mode="json")
    assert list(body) == ALLOWED  # the node's own details (data_dir, counters, outbox, ...) stay on the node
    assert body == {**{k: STATUS[k] for k in ALLOWED[:-1]}, "gateway_refusals": {"429": 2}}


def test_the_stable_fields_are_typed_once_for_both_answers() -> None:
    stable = NodeStatusStable.model_fields
    for model in (NodeOut, NodeStatusOut):
        assert {k: model.model_fields[k].annotation for k in stable} == {k: f.annotation for k, f in stable.items()}
    assert set(NodeOut.model_fields) - set(stable) == {"gateway_refusals"}


async def test_the_route_drops_what_node_status_adds(
    gateway: Gateway, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gateway.node.status

    def status() -> dict[str, Any]:  # the real answer, plus a field a later change might add
        return {**real(), "secret_marker": "must-not-leave-the-node"}

    monkeypatch.setattr(gateway.node, "status", status)
    _, secret = await gateway.key("user")
    auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
    r = await client.get("/v1/node", headers=auth)
    assert r.status_code == 200
    assert list(r.json()) == ALLOWED
    assert "must-not-leave-the-node" not in r.text and "secret_marker" not in r.text
    assert str(gateway.node.config.data_dir) not in r.text
