"""The knowledge graph: keyphrase extraction, indexing/removal bookkeeping in SQLite, and PageRank expansion
pulling in passages linked to the seeds through specific entities (and not through generic ones)."""

from __future__ import annotations

from node.rag import graph
from node.rag.keyphrases import extract
from node.rag.store import NewChunk, Store


def test_extraction_finds_marked_terms_and_phrases_and_normalises_them() -> None:
    ex = extract("Tumour necrosis factor (TNF) induces apoptosis in T-cells. The p53 protein regulates IL-6 in HIV.")
    keys = set(ex.counts)
    assert {"tnf", "p53", "il-6", "hiv", "t-cell", "apoptosis", "tumour necrosis factor"} <= keys
    assert {"the", "in", "induces"}.isdisjoint(keys)  # stopwords and sentence glue are no entities
    assert len(ex.sentences) == 2 and "p53" in ex.sentences[1] and "p53" not in ex.sentences[0]
    assert extract("T-cells and T-cell")  # plural and singular are one key
    assert extract("T-cells and more T-cell").counts["t-cell"] == 2
    capped = extract(" ".join(f"Term{i}x" for i in range(200)), max_entities=10)
    assert len(capped.counts) == 10


def _store(texts: list[str]) -> tuple[Store, list[int]]:
    store = Store(None)
    ids: list[int] = []
    with store.transaction() as conn:
        for i, text in enumerate(texts):
            _, cids = store.insert_document(
                conn,
                source=f"/d/{i}.txt",
                content_hash=str(i),
                origin_peer=None,
                added_at=0.0,
                shared=False,
                title="",
                mime="text/plain",
                size_bytes=len(text),
                chunks=[NewChunk(0, text, 0, len(text), None)],
            )
            ids.extend(cids)
        graph.index_chunks(conn, list(zip(ids, texts, strict=True)))
    return store, ids


def _df(store: Store, key: str) -> int | None:
    row = store.conn.execute("SELECT df FROM entities WHERE key = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


def test_index_and_remove_keep_counts_consistent() -> None:
    store, ids = _store(["BRCA1 mutations in breast cancer.", "BRCA1 and ovarian cancer.", "Insulin signalling."])
    assert graph.n_chunks(store.conn) == 3
    assert _df(store, "brca1") == 2 and _df(store, "insulin") == 1
    assert store.conn.execute("SELECT count(*) FROM relations WHERE chunk_id = ?", (ids[0],)).fetchone()[0] > 0
    with store.transaction() as conn:
        graph.index_chunks(conn, [(ids[0], "BRCA1 mutations in breast cancer.")])  # re-indexing is idempotent
    assert graph.n_chunks(store.conn) == 3 and _df(store, "brca1") == 2
    with store.transaction() as conn:
        graph.remove_chunks(conn, [ids[0], ids[2]])
    assert graph.n_chunks(store.conn) == 1
    assert _df(store, "brca1") == 1
    assert _df(store, "insulin") is None  # no chunk mentions it any more: gone
    assert (
        store.conn.execute("SELECT count(*) FROM mentions WHERE chunk_id IN (?, ?)", (ids[0], ids[2])).fetchone()[0]
        == 0
    )
    assert store.conn.execute("SELECT count(*) FROM trust_claims").fetchone()[0] == 1
    graph.ensure_schema(store.conn)  # idempotent


FILLER = [f"Unrelated note number {i} about gardening{i} and pottery{i}." for i in range(40)]


def test_expansion_reaches_a_passage_linked_through_a_specific_entity() -> None:
    texts = [
        "Metformin lowers blood glucose through AMPK activation.",  # 0: the seed
        "AMPK activation restores mitochondrial biogenesis in muscle.",  # 1: linked to the seed by "ampk activation"
        "Blood pressure in athletes.",  # 2: shares only a word with the query, no entity with the seed
        *FILLER,
    ]
    store, ids = _store(texts)
    seeds = {ids[0]: 10.0, ids[2]: 4.0}
    out = graph.expand(store.conn, "does metformin lower blood glucose", seeds)
    assert ids[1] in out and ids[1] not in seeds  # reached through the graph
    ranked = sorted(out, key=lambda c: -out[c])
    assert ranked[0] == ids[0]
    assert all(ids[k] not in out for k in range(3, len(texts)))  # unrelated passages are not reached
    # Without the graph's help the same seeds come back scaled, order kept.
    plain = graph.expand(store.conn, "zzz", {ids[5]: 3.0, ids[6]: 1.0}, graph.ExpandParams(graph_weight=0.0))
    assert plain == {ids[5]: 1.0, ids[6]: 0.0}


def test_generic_entities_are_not_followed() -> None:
    # "cancer" is in every chunk: too generic (df above the cap) to link passages; "her2" links 0 and 1.
    texts = [f"Cancer case {i} of lymphoma{i}." for i in range(60)]
    texts[0] = "HER2 amplification in cancer."
    texts[1] = "Trastuzumab targets HER2 in cancer."
    store, ids = _store(texts)
    out = graph.graph_scores(store.conn, "HER2 amplification", {ids[0]: 1.0})
    assert set(out) == {ids[0], ids[1]}


def test_expansion_of_an_empty_graph_returns_the_seeds() -> None:
    store = Store(None)
    graph.ensure_schema(store.conn)
    assert graph.expand(store.conn, "anything", {}) == {}
    assert graph.expand(store.conn, "anything", {7: 2.0, 8: 1.0}) == {7: 1.0, 8: 0.0}
