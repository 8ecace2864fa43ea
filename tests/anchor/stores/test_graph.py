"""GraphStore against the FalkorDB Bolt server of ``scripts/services``, and against Neo4j 5 where there is one.

FalkorDB's Bolt serves one graph per server, so each test prefixes its IDs with ``graph_ns``."""

from __future__ import annotations

import os

import pytest

from anchor.services_settings import ServiceSettings
from anchor.stores import EntityRef, GraphStore, StoreError, Trust

NOW_MS = 1_800_000_000_000


@pytest.fixture(params=["falkordb", "neo4j"])
def graph(request: pytest.FixtureRequest, services: ServiceSettings) -> GraphStore:
    """FalkorDB from scripts/services always; a real Neo4j 5 too when ``AIVILLAGE_NEO4J_URL`` (and
    ``AIVILLAGE_NEO4J_USER``/``AIVILLAGE_NEO4J_PASSWORD``) name one, e.g. anchor/compose.yaml's."""
    if request.param == "neo4j":
        url = os.environ.get("AIVILLAGE_NEO4J_URL")
        if not url:
            pytest.skip("no Neo4j here: set AIVILLAGE_NEO4J_URL (e.g. bolt://127.0.0.1:27687 from anchor/compose.yaml)")
        user = os.environ.get("AIVILLAGE_NEO4J_USER", "neo4j")
        return GraphStore(url, user=user, password=os.environ.get("AIVILLAGE_NEO4J_PASSWORD", ""), timeout_s=10.0)
    g = services.graph
    return GraphStore(g.bolt_url, user=g.user, password=g.password, timeout_s=5.0)


async def test_documents_chunks_entities(graph: GraphStore, graph_ns: str) -> None:
    ns = graph_ns
    doc, other = ns + "doc", ns + "doc2"
    trio_e, nursery_e, python_e = ns + "trio", ns + "nursery", ns + "python"
    await graph.upsert_document(doc, "Trio notes", "file:trio.md", NOW_MS)
    await graph.upsert_document(doc, "Trio notes v2", "file:trio.md", NOW_MS + 1)  # upsert: still one document
    await graph.add_chunk(doc, ns + "c0", 0, "Trio has nurseries.", [EntityRef(trio_e, "lib"), EntityRef(nursery_e)])
    await graph.add_chunk(doc, ns + "c1", 1, "Trio is Python.", [EntityRef(trio_e, "lib"), EntityRef(python_e)])
    await graph.upsert_document(other, "Other", "x", NOW_MS)
    await graph.add_chunk(other, ns + "c2", 0, "Python again.", [EntityRef(python_e)])
    with pytest.raises(StoreError, match="no document"):
        await graph.add_chunk(ns + "missing", ns + "c9", 0, "orphan")

    hits = await graph.chunks_mentioning(trio_e)
    assert [(h.chunk_id, h.doc_id, h.ordinal, h.text) for h in hits] == [
        (ns + "c0", doc, 0, "Trio has nurseries."),
        (ns + "c1", doc, 1, "Trio is Python."),
    ]
    assert [h.chunk_id for h in await graph.chunks_mentioning(python_e)] == [ns + "c1", ns + "c2"]
    assert [h.chunk_id for h in await graph.chunks_mentioning(trio_e, limit=1)] == [ns + "c0"]
    assert await graph.related_entities(trio_e) == [(nursery_e, 1), (python_e, 1)]
    assert [h.ordinal for h in await graph.document_chunks(doc)] == [0, 1]

    # Re-adding a chunk replaces its text without duplicating it or its mentions.
    await graph.add_chunk(doc, ns + "c0", 0, "Trio has nurseries!", [EntityRef(trio_e)])
    assert [h.text for h in await graph.chunks_mentioning(trio_e)] == ["Trio has nurseries!", "Trio is Python."]

    assert await graph.delete_document(doc) is True
    assert await graph.delete_document(doc) is False
    assert await graph.chunks_mentioning(trio_e) == []
    assert [h.chunk_id for h in await graph.chunks_mentioning(python_e)] == [ns + "c2"]


async def test_claims_with_evidence(graph: GraphStore, graph_ns: str) -> None:
    ns = graph_ns
    await graph.upsert_document(ns + "d", "D", "s", NOW_MS)
    await graph.add_chunk(ns + "d", ns + "c0", 0, "Bees pollinate.", [EntityRef(ns + "bee")])
    await graph.add_claim(ns + "k1", "Bees pollinate flowers", "peer:aa", [ns + "bee", ns + "flower"], [ns + "c0"])
    await graph.add_claim(ns + "k2", "Bees sting", "peer:bb", [ns + "bee"], [ns + "nope"])  # unknown chunk skipped
    claims = await graph.claims_about(ns + "bee")
    assert [(c.claim_id, c.text, c.source, c.evidence) for c in claims] == [
        (ns + "k1", "Bees pollinate flowers", "peer:aa", (ns + "c0",)),
        (ns + "k2", "Bees sting", "peer:bb", ()),
    ]
    assert [c.claim_id for c in await graph.claims_about(ns + "flower")] == [ns + "k1"]


async def test_trust_network_with_beta_parameters(graph: GraphStore, graph_ns: str) -> None:
    a, b, c, d = (graph_ns + x for x in "abcd")
    assert await graph.trust_of(a, b) is None
    await graph.set_trust(a, b, alpha=8.0, beta=2.0, now_ms=NOW_MS)
    assert await graph.trust_of(a, b) == Trust(8.0, 2.0)
    assert await graph.trust_of(b, a) is None  # directed
    # Evidence adds to the Beta parameters; a new edge starts from the prior.
    assert await graph.observe(a, b, positive=1, negative=0, now_ms=NOW_MS) == Trust(9.0, 2.0)
    assert await graph.observe(a, c, positive=0, negative=3, now_ms=NOW_MS) == Trust(1.0, 4.0)
    assert await graph.observe(a, d, positive=2, negative=0, now_ms=NOW_MS, prior=(2.0, 2.0)) == Trust(4.0, 2.0)
    trusted = await graph.trusted_by(a, min_mean=0.5)
    assert [(peer, t) for peer, t in trusted] == [(b, Trust(9.0, 2.0)), (d, Trust(4.0, 2.0))]
    assert trusted[0][1].mean == pytest.approx(9 / 11)
    # Two hops: a -> b (9/11) -> c (set 3:1) gives 9/11 * 3/4.
    await graph.set_trust(b, c, 3.0, 1.0, NOW_MS)
    assert await graph.indirect_trust(a, c) == pytest.approx(9 / 11 * 3 / 4)
    assert await graph.indirect_trust(c, a) is None
    for bad in [(0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0), (float("inf"), 1.0)]:
        with pytest.raises(StoreError):
            await graph.set_trust(a, b, *bad, now_ms=NOW_MS)
    with pytest.raises(StoreError):
        await graph.observe(a, b, positive=-1, negative=0, now_ms=NOW_MS)
