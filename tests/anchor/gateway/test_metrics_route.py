"""GET /metrics on the real gateway: the anchor node's families and the gateway's refusals, for metrics:read only."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from anchor.gateway.roles import ROLE_SCOPES, SCOPE_METRICS_READ
from tests.anchor.gateway.conftest import Gateway


def samples(text: str) -> list[Sample]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


async def test_metrics_need_the_metrics_scope_and_carry_node_and_gateway_counters(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    assert SCOPE_METRICS_READ in ROLE_SCOPES["admin"] and SCOPE_METRICS_READ not in ROLE_SCOPES["user"]
    assert (await client.get("/metrics")).status_code == 401
    bad = await client.get("/v1/node", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401  # counted by the gateway as a refusal
    _uid, user_secret = await gateway.key("user")
    user = {"Authorization": f"Bearer {await gateway.token(client, user_secret)}"}
    assert (await client.get("/metrics", headers=user)).status_code == 403
    key_id, secret = await gateway.key("admin", frozenset({SCOPE_METRICS_READ}))  # what a Prometheus server holds
    # Prometheus's `oauth2:` scrape option: the client-credentials grant, then the bearer token.
    form = {"grant_type": "client_credentials", "client_id": key_id, "client_secret": secret, "scope": "metrics:read"}
    issued = await client.post("/v1/auth/token", data=form)
    assert issued.status_code == 200, issued.text
    scraper = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    r = await client.get("/metrics", headers=scraper)
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = {s.name: s for s in samples(r.text)}
    assert found["village_node_info"].labels["peer_id"] == gateway.node.identity.peer_id_hex
    assert "village_frames_in_total" in found and "village_bounded_size" in found
    # A scrape of an anchor leaves the machine: never a twin figure, and only RAG figures that are not personal.
    assert "village_rag_up" in found and not [name for name in found if name.startswith("village_twin")]
    assert "village_rag_documents" not in found and "village_rag_chunks" not in found
    refusals = {s.labels["status"]: s.value for s in samples(r.text) if s.name == "village_gateway_refusals_total"}
    assert refusals["401"] >= 2 and refusals["403"] >= 1
    queue = {s.labels["outcome"] for s in samples(r.text) if s.name == "village_gateway_queue_total"}
    assert {"accepted", "claimed", "in_doubt"} <= queue  # the consumer's outcomes (replicas: claims)
    assert [a.action for a in await gateway.audit_of(key_id)] == ["auth.token"]  # a scrape is a read
