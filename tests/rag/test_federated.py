"""Federated queries between real in-process Nodes over memory links (autojump clock), each answering peer with
a real RagService (BM25 mode, in-memory store): shared documents only, trust-weighted merge, per-peer bounds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from node.control.rpc import Registry
from node.node import Node
from node.rag import federated
from node.rag import rpc as rag_rpc
from node.rag.embed import Embedder, Vectors
from node.rag.errors import RagError
from node.rag.federated import (
    FederatedHit,
    FederatedResponder,
    PeerHit,
    RagServiceSearch,
    SharedHit,
    StoreClaimTrust,
    decode_answer_untrusted,
    federated_query,
    merge,
)
from node.rag.service import RagService
from node.rag.settings import RagSection
from node.rag.store import Store
from node.rag.trust import ChunkTrust, Opinion, TrustStore, claim_hash, discount, fuse_all
from node.transports.memory import Faults
from tests.rag.helpers import HashEmbedder
from tests.routing.harness import Mesh, start_mesh

SIM_TIMEOUT_S = 600
LINK = Faults(duplicate=0.1, reorder=0.2, reorder_window_s=0.2, latency_s=0.02, jitter_s=0.03)
SECRET = "SECRET-7731 metformin glucose lab notebook"
COMMON = "Metformin lowers blood glucose through AMPK activation in the liver."


class NoEmbedder(Embedder):
    """BM25 mode never embeds: a call is a test failure."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise AssertionError("the embedder was called in bm25 mode")


async def _service(nursery: trio.Nursery, docs: Sequence[tuple[str, str, bool]]) -> RagService:
    svc = RagService(RagSection(mode="bm25"), None, wall_s=lambda: 1_700_000_000.0, embedder=NoEmbedder())
    await nursery.start(svc.run)
    for source, text, shared in docs:
        await svc.add_text(source, text, shared=shared)
    return svc


@pytest.fixture(autouse=True)
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """RagService runs SQLite in worker threads. While one runs every trio task waits, and the autojump clock
    would leap to the next deadline (a peer's timeout) before the thread is done. Here the blocking calls run
    inline instead, in the calling task: same code and results, simulated time stays meaningful."""

    async def run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", run_inline)


def _spy_plaintexts(node: Node) -> list[bytes]:
    """Every Noise plaintext the node's mesh core encrypts from now on (what would leave the node)."""
    core = node.core
    assert core is not None
    sent: list[bytes] = []
    original = core.delivery.send_encrypted

    def spy(
        peer_id: bytes, plaintext: bytes, now: float, *, queue: bool, flood: bool = False, tag: str | None = None
    ) -> None:
        sent.append(plaintext)
        original(peer_id, plaintext, now, queue=queue, flood=flood, tag=tag)

    core.delivery.send_encrypted = spy  # type: ignore[method-assign]
    return sent


async def _star(nursery: trio.Nursery, tmp_path: Path, n: int) -> Mesh:
    mesh = await start_mesh(nursery, tmp_path, n)
    for j in range(1, n):
        mesh.connect(0, j, LINK)
    with trio.fail_after(SIM_TIMEOUT_S):
        for j in range(1, n):
            await mesh.wait_until_known(0, j)
            await mesh.wait_until_known(j, 0)
    return mesh


class _Silent:
    """A peer whose search never finishes (a slow or stuck node)."""

    async def search_shared(self, text: str, k: int) -> list[SharedHit]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def shared_doc_ids(self, doc_ids: Sequence[int]) -> set[int]:
        return set()


async def test_federated_query_asks_peers_merges_by_trust_and_survives_a_silent_peer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _star(nursery, tmp_path, 4)
    n0, n1, n2, n3 = mesh.nodes
    s1 = await _service(nursery, [("/n1/common.txt", COMMON, True), ("/n1/notebook.txt", SECRET, False)])
    s2 = await _service(
        nursery,
        [("/n2/common.md", COMMON, True), ("/n2/acidosis.txt", "Metformin and lactic acidosis: glucose.", True)],
    )
    federated.register(n1, RagServiceSearch(s1))
    federated.register(n2, RagServiceSearch(s2))
    federated.register(n3, _Silent())
    sent_by_n1 = _spy_plaintexts(n1)
    mesh.net.tap = []

    # n0's own knowledge base holds its trust in the peers: n2 has earned it, n1 has not.
    local = Store(None)
    ts = TrustStore(local.conn)
    p1, p2 = n1.identity.peer_id_hex, n2.identity.peer_id_hex
    for _ in range(6):
        ts.feedback(f"peer:{p2}", True, 1_700_000_000.0)
    ts.feedback(f"peer:{p1}", False, 1_700_000_000.0)
    trust = StoreClaimTrust(ts, trio.CapacityLimiter(1), lambda: 1_700_000_000.0)

    start = trio.current_time()
    with trio.fail_after(SIM_TIMEOUT_S):
        result = await federated_query(n0, "metformin glucose", k=5, timeout_s=4.0, trust=trust)
    took = trio.current_time() - start

    outcomes = {o.peer_id: o for o in result.peers}
    assert outcomes[p1].status == "ok" and outcomes[p2].status == "ok"
    assert outcomes[n3.identity.peer_id_hex].status == "timeout"
    assert outcomes[p1].elapsed_s < 4.0 and outcomes[p2].elapsed_s < 4.0  # not held up by the silent peer
    assert took == pytest.approx(4.0, abs=0.5)  # the whole query is bounded by the per-peer timeout

    by_source = {h.source: h for h in result.hits}
    common = next(h for h in result.hits if h.claim == claim_hash(COMMON))
    assert sorted(common.peers) == sorted([p1, p2])  # one result, both peers named
    assert set(by_source) == {common.source, "acidosis.txt"}
    assert by_source["acidosis.txt"].peers == [p2] and by_source["acidosis.txt"].nickname == "n2"
    # Trust: the acidosis claim rests on n2 alone (reputation 7/8); the common one on n1 (1/3) and n2 fused.
    r2, r1 = 7 / 8, 1 / 3
    one = Opinion.from_evidence(1, 0)
    assert by_source["acidosis.txt"].trust == pytest.approx(discount(r2, one).expected)
    assert common.trust == pytest.approx(fuse_all([discount(r1, one), discount(r2, one)]).expected)
    assert common.uncertainty < by_source["acidosis.txt"].uncertainty  # two sources: more certain
    assert result.hits[0] is common  # in both lists, higher trust: first
    assert all(h.trust >= 0 and 0 <= h.uncertainty <= 1 for h in result.hits)
    json.dumps(result.to_json())  # the CLI/JSON-RPC surface can print it

    # The unshared notebook never left n1: not in any plaintext it encrypted, nor in any frame on the wire.
    assert sent_by_n1 and not any(b"SECRET-7731" in p for p in sent_by_n1)
    assert not any(b"SECRET-7731" in frame for _, _, frame in mesh.net.tap)
    assert not any("SECRET" in h.snippet or "notebook" in h.source for h in result.hits)


class _Leaky:
    """A search with a bug: it returns an unshared document. The responder's own check must stop it."""

    def __init__(self, store: Store, hits: list[SharedHit]) -> None:
        self.store, self.hits = store, hits

    async def search_shared(self, text: str, k: int) -> list[SharedHit]:
        return self.hits

    async def shared_doc_ids(self, doc_ids: Sequence[int]) -> set[int]:
        return federated.shared_doc_ids(self.store.conn, doc_ids)


async def test_unshared_document_never_leaves_even_if_the_search_returns_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _star(nursery, tmp_path, 2)
    n0, n1 = mesh.nodes
    svc = await _service(nursery, [("/pub.txt", "Shared insulin note.", True), ("/priv.txt", SECRET, False)])
    store = svc._store
    assert store is not None
    docs = {d.source: d for d in store.documents()}
    hits = [
        SharedHit(docs["/priv.txt"].id, store.chunk_ids(docs["/priv.txt"].id)[0], 9.0, "", "/priv.txt", SECRET, SECRET),
        SharedHit(docs["/pub.txt"].id, store.chunk_ids(docs["/pub.txt"].id)[0], 1.0, "", "/pub.txt", "insulin", "x"),
    ]
    responder = federated.register(n1, _Leaky(store, hits))
    sent = _spy_plaintexts(n1)
    with trio.fail_after(SIM_TIMEOUT_S):
        result = await federated_query(n0, "insulin", k=5, timeout_s=5.0)
    assert [h.source for h in result.hits] == ["pub.txt"]
    assert responder.counters.unshared_dropped == 1
    assert sent and not any(b"SECRET-7731" in p or b"/priv.txt" in p for p in sent)


async def test_peer_answers_are_bounded_in_hits_and_bytes() -> None:
    big = [SharedHit(i, i, 1.0 / (i + 1), "t" * 2000, f"/doc{i}", "s" * 2000, f"text {i}") for i in range(30)]

    class _All:
        async def search_shared(self, text: str, k: int) -> list[SharedHit]:
            return big

        async def shared_doc_ids(self, doc_ids: Sequence[int]) -> set[int]:
            return set(doc_ids)

    responder = FederatedResponder(_All(), max_answer_bytes=4096)
    answer = await responder.handle(b"P" * 8, federated.encode_request("q", 20))
    assert len(answer) <= 4096
    hits = decode_answer_untrusted(answer, 20)
    assert 0 < len(hits) < 20 and all(len(h.snippet) <= federated.MAX_SNIPPET_CHARS for h in hits)
    assert responder.counters.hits_cut_for_size == 20 - len(hits)  # k = 20 of the 30 considered
    small = await FederatedResponder(_All()).handle(b"P" * 8, federated.encode_request("q", 3))
    assert len(decode_answer_untrusted(small, 20)) == 3
    with pytest.raises(RagError):
        await responder.handle(b"P" * 8, b'{"v": 1, "q": "x", "k": 500}')
    with pytest.raises(RagError):
        await responder.handle(b"P" * 8, b"\xff not json")
    assert responder.counters.bad_requests == 2


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"v": 2, "hits": []}',
        b'{"v": 1, "hits": {}}',
        b'{"v": 1, "hits": [1]}',
        b'{"v": 1, "hits": [{"doc": "1", "chunk": 1, "score": 1, "title": "", "source": "", "snippet": "", '
        b'"claim": ""}]}',
        b'{"v": 1, "hits": [{"doc": 1, "chunk": 1, "score": 1, "title": 5, "source": "", "snippet": "", "claim": ""}]}',
        # booleans are not numbers here (a bool id would break the typed rag_query answer for everyone)
        b'{"v": 1, "hits": [{"doc": true, "chunk": 1, "score": 1, "title": "", "source": "", "snippet": "", '
        b'"claim": ""}]}',
        b'{"v": 1, "hits": [{"doc": 1, "chunk": false, "score": 1, "title": "", "source": "", "snippet": "", '
        b'"claim": ""}]}',
        b'{"v": 1, "hits": [{"doc": 1, "chunk": 1, "score": true, "title": "", "source": "", "snippet": "", '
        b'"claim": ""}]}',
        b'{"v": 1, "hits": [{"doc": 1, "chunk": 1, "score": 1' + b"0" * 400 + b', "title": "", "source": "", '
        b'"snippet": "", "claim": ""}]}',
        b'{"v": 1, "hits": [{"doc": 1, "chunk": 1, "score": NaN, "title": "", "source": "", "snippet": "", '
        b'"claim": ""}]}',
        # lone surrogates parse as JSON but no UTF-8 output (the control socket's answer) can carry them
        b'{"v": 1, "hits": [{"doc": 1, "chunk": 1, "score": 1, "title": "", "source": "", "snippet": "\\ud800", '
        b'"claim": ""}]}',
        b'{"v": 1, "hits": [{"doc": 1, "chunk": 1, "score": 1, "title": "", "source": "", "snippet": "", '
        b'"claim": "", "x\\udc1b": 1}]}',
    ],
)
def test_malformed_answers_are_refused(body: bytes) -> None:
    with pytest.raises(RagError):
        decode_answer_untrusted(body, 10)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"v": 1, "hits": "nope"}',
        # one well-formed hit and one with boolean ids: the whole answer of that peer is dropped
        b'{"v": 1, "hits": [{"doc": 1, "chunk": 1, "score": 1, "title": "t", "source": "s", "snippet": "insulin", '
        b'"claim": "' + b"c" * 32 + b'"}, {"doc": true, "chunk": false, "score": 1, "title": "t", "source": "s", '
        b'"snippet": "insulin", "claim": "' + b"d" * 32 + b'"}]}',
    ],
)
async def test_a_peer_with_a_malformed_answer_is_reported_and_the_others_are_kept(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock, bad: bytes
) -> None:
    mesh = await _star(nursery, tmp_path, 3)

    async def garbage(peer: bytes, body: bytes) -> bytes:
        return bad

    mesh.nodes[1].register_app_handler(federated.SERVICE, garbage)
    svc = await _service(nursery, [("/a.txt", "Insulin resistance and obesity.", True)])
    federated.register(mesh.nodes[2], RagServiceSearch(svc))
    with trio.fail_after(SIM_TIMEOUT_S):
        result = await federated_query(mesh.nodes[0], "insulin", k=3, timeout_s=5.0)
    status = {o.nickname: o.status for o in result.peers}
    assert status == {"n1": "malformed", "n2": "ok"}
    assert [h.source for h in result.hits] == ["a.txt"] and result.hits[0].origin == mesh.nodes[2].identity.peer_id_hex


class _FixedTrust:
    def __init__(self, per_peer: dict[str, float]) -> None:
        self.per_peer = per_peer

    async def claim_opinion(self, claim: str, peers: Sequence[str]) -> ChunkTrust:
        o = fuse_all(discount(self.per_peer[p], Opinion.from_evidence(1, 0)) for p in peers)
        return ChunkTrust(-1, claim, o, tuple(peers), ())


async def test_merge_weights_rank_by_trust_and_joins_local_hits() -> None:
    def ph(i: int, claim: str) -> PeerHit:
        return PeerHit(i, i, 1.0, "", f"/{claim}", claim, claim)

    answers = {"aa": [ph(1, "x"), ph(2, "y")], "bb": [ph(3, "z"), ph(4, "x")]}
    local = [FederatedHit("local", [], "", 9, 9, "", "/mine", "", 1.0, "m", 0.9, 0.1, Opinion(0.85, 0.0, 0.1))]
    hits = await merge(answers, {"aa": "A", "bb": "B"}, _FixedTrust({"aa": 0.2, "bb": 0.9}), k=10, local=local)
    order = [h.claim for h in hits]
    # z: B's first (0.9 trust); m: local first (0.9); x: A#1 + B#2 fused; y: A's second, low trust.
    assert order[-1] == "y"
    x = next(h for h in hits if h.claim == "x")
    assert x.peers == ["aa", "bb"] and x.origin == "aa" and x.nickname == "A"
    assert next(h for h in hits if h.claim == "m").peers == ["local"]
    assert len(await merge(answers, {}, None, k=2)) == 2


async def test_mesh_query_merges_local_results_with_the_peers(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _star(nursery, tmp_path, 2)
    n0, n1 = mesh.nodes
    rag0 = await _service(nursery, [("/mine.txt", COMMON, False), ("/other.txt", "Insulin.", False)])
    rag1 = await _service(nursery, [("/theirs.txt", COMMON, True), ("/x.txt", "Metformin dose.", True)])
    assert federated.serve(n1, rag1) is not None
    with trio.fail_after(SIM_TIMEOUT_S):
        out = await federated.mesh_query(n0, rag0, "metformin glucose", k=5, timeout_s=5.0)
    json.dumps(out)
    assert out["mesh"] is True and [p["status"] for p in out["peers"]] == ["ok"]
    by_source = {h["source"]: h for h in out["results"]}
    assert set(by_source) == {"/mine.txt", "x.txt"}  # the peer's copy of COMMON joined the local result
    mine = by_source["/mine.txt"]
    assert mine["origin"] == "local" and mine["origin_peer"] is None
    assert mine["peers"] == ["local", n1.identity.peer_id_hex]
    assert by_source["x.txt"]["origin"] == n1.identity.peer_id_hex and by_source["x.txt"]["nickname"] == "n1"
    # Local file and peer both assert the claim: more certain than the peer's lone claim.
    assert mine["uncertainty"] < by_source["x.txt"]["uncertainty"]

    # Feedback on the peer's result (its `ref`, through the rag.feedback method) rates peer:<hex> and records the
    # user's stance on the claim; no local chunk or file source is touched.
    reg = Registry()
    rag_rpc.register(reg, lambda: rag0)
    method = reg.lookup("rag.feedback")

    async def no_notify(name: str, params: Any) -> None:
        raise AssertionError("no notifications")

    x = by_source["x.txt"]
    fb = await method.handler(reg.bind_params(method, {"ref": x["ref"], "verdict": "bad"}), no_notify)
    peer_key = f"peer:{n1.identity.peer_id_hex}"
    assert fb["source"]["source"] == peer_key and fb["source"]["beta"] > fb["source"]["alpha"]
    assert "user" in " ".join(fb["chunk"]["contradicting"]) and fb["chunk"]["trust"] < x["trust"]
    ts = rag0._trust
    assert [r.source_key for r in ts.sources(1_700_000_000.0)] == [peer_key]
    with trio.fail_after(SIM_TIMEOUT_S):
        again = await federated.mesh_query(n0, rag0, "metformin glucose", k=5, timeout_s=5.0)
    x2 = next(h for h in again["results"] if h["source"] == "x.txt")
    assert x2["trust"] < x["trust"]
    with pytest.raises(RagError):
        await rag0.feedback_peer("zz", x["claim"], True)


async def test_mesh_query_without_peers_returns_the_local_results(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 1)
    (n0,) = mesh.nodes
    rag0 = await _service(nursery, [("/mine.txt", COMMON, False)])
    with trio.fail_after(SIM_TIMEOUT_S):
        out = await federated.mesh_query(n0, rag0, "metformin", k=3)
    assert out["peers"] == [] and [r["source"] for r in out["results"]] == ["/mine.txt"]
    assert out["results"][0]["trust"] == pytest.approx(7 / 12)  # one local file of reputation 1/2


HOSTILE = [
    b"[" * 40_000 + b"]" * 40_000,
    b'{"v": 1, "hits": [' + b"9" * 5000 + b"]}",
    b'{"v": 1, "q": "glucose \\udfff", "k": 3, "hits": []}',  # a lone surrogate in a query (and an answer)
]


@pytest.mark.parametrize("body", HOSTILE)
async def test_hostile_json_is_refused_not_crashing(body: bytes) -> None:
    with pytest.raises(RagError):
        decode_answer_untrusted(body, 10)
    responder = FederatedResponder(_Silent())
    with pytest.raises(RagError):
        await responder.handle(b"P" * 8, body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
hit_like = st.fixed_dictionaries(
    {},
    optional={k: json_values for k in ("doc", "chunk", "score", "title", "source", "snippet", "claim")},
)


@given(st.one_of(json_values, st.fixed_dictionaries({"v": st.just(1), "hits": st.lists(hit_like, max_size=5)})))
@settings(max_examples=300, deadline=None)
def test_decoding_any_json_answer_either_parses_or_refuses(value: object) -> None:
    try:
        hits = decode_answer_untrusted(json.dumps(value).encode(), 10)
    except RagError:
        return
    assert all(isinstance(h, PeerHit) and math.isfinite(h.score) for h in hits)


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
@pytest.mark.parametrize("n_unshared", [3, 30, 150])
async def test_a_peer_answer_is_byte_identical_whatever_unshared_documents_exist(
    nursery: trio.Nursery, mode: str, n_unshared: int
) -> None:
    shared = [
        ("/pub/insulin.txt", "Insulin resistance raises blood glucose; metformin lowers it in the liver."),
        ("/pub/garden.txt", "Tomatoes need sun, water and a little glucose-free compost."),
    ]
    unshared = [
        (f"/priv/{i}.txt", f"Private lab note {i}: metformin glucose insulin trial number {i} liver blood.")
        for i in range(n_unshared)
    ]

    async def answer(before: Sequence[tuple[str, str]], after: Sequence[tuple[str, str]]) -> bytes:
        emb: Embedder = NoEmbedder() if mode == "bm25" else HashEmbedder()
        svc = RagService(RagSection(mode=mode), None, wall_s=lambda: 1_700_000_000.0, embedder=emb)
        await nursery.start(svc.run)
        for source, text in before:
            await svc.add_text(source, text, shared=False)
        for source, text in shared:
            await svc.add_text(source, text, shared=True)
        for source, text in after:
            await svc.add_text(source, text, shared=False)
        responder = FederatedResponder(RagServiceSearch(svc))
        return await responder.handle(b"P" * 8, federated.encode_request("metformin glucose insulin liver", 5))

    alone = await answer([], [])
    hits = decode_answer_untrusted(alone, 5)
    assert [h.source for h in hits] == ["insulin.txt", "garden.txt"][: len(hits)] and hits
    assert b"score" not in alone
    half = n_unshared // 2
    assert await answer(unshared[:half], unshared[half:]) == alone
    assert await answer(unshared, []) == alone


async def test_shared_fts_follows_sharing_deletion_and_migrates_a_v1_store(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    svc = await _service(nursery, [("/a.txt", "Zebrafish regenerate fins.", False)])
    store = svc._store
    assert store is not None
    doc = store.documents()[0]
    assert store.bm25("zebrafish", 10, shared_only=True) == []
    store.set_shared(doc.id, True)
    assert [c for c, _ in store.bm25("zebrafish", 10, shared_only=True)] == store.chunk_ids(doc.id)
    store.set_shared(doc.id, False)
    assert store.bm25("zebrafish", 10, shared_only=True) == []
    store.set_shared(doc.id, True)
    await svc.add_text("/a.txt", "Axolotls regrow limbs.", shared=True)  # replaced: old chunks leave shared_fts
    assert store.bm25("zebrafish", 10, shared_only=True) == []
    (doc,) = store.documents()
    assert [c for c, _ in store.bm25("axolotls", 10, shared_only=True)] == store.chunk_ids(doc.id)
    await svc.remove(doc_id=doc.id)
    assert store.bm25("axolotls", 10, shared_only=True) == []
    # a store written by schema v1 (no shared_fts) gets it filled from its shared documents on open
    import sqlite3

    from node.rag import store as store_mod

    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    for stmt in store_mod._SCHEMA_V1:
        conn.execute(stmt)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO documents(id, source, content_hash, added_at, shared) VALUES (1, '/s', 'h', 0, 1)")
    conn.execute("INSERT INTO documents(id, source, content_hash, added_at, shared) VALUES (2, '/p', 'g', 0, 0)")
    conn.execute("INSERT INTO chunks(id, doc_id, ordinal, text) VALUES (7, 1, 0, 'zebrafish shared')")
    conn.execute("INSERT INTO chunks(id, doc_id, ordinal, text) VALUES (8, 2, 0, 'zebrafish private')")
    conn.close()
    migrated = Store(path)
    try:
        assert [c for c, _ in migrated.bm25("zebrafish", 10, shared_only=True)] == [7]
        assert sorted(c for c, _ in migrated.bm25("zebrafish", 10)) == [7, 8]
    finally:
        migrated.close()


async def test_a_peer_repeating_a_claim_gets_no_extra_weight() -> None:
    def ph(i: int, claim: str) -> PeerHit:
        return PeerHit(i, i, 0.0, "", f"/{claim}", claim, claim)

    trust = _FixedTrust({"aa": 0.5, "bb": 0.5})
    honest = {"aa": [ph(1, "x")], "bb": [ph(1, "y")]}
    spam = {"aa": [ph(1, "x")], "bb": [ph(i, "y") for i in range(1, 21)]}
    w_honest = {h.claim: h.weight for h in await merge(honest, {}, trust, k=10)}
    w_spam = {h.claim: h.weight for h in await merge(spam, {}, trust, k=10)}
    assert w_spam == w_honest and w_spam["x"] == w_spam["y"]
    assert [h.peers for h in await merge(spam, {}, trust, k=10) if h.claim == "y"] == [["bb"]]


async def test_a_failing_search_answers_a_generic_error_without_details() -> None:
    from node.rag.errors import RagStoreError

    class _Broken:
        async def search_shared(self, text: str, k: int) -> list[SharedHit]:
            raise RagStoreError("cannot read /home/alice/private/rag.sqlite3: disk I/O error")

        async def shared_doc_ids(self, doc_ids: Sequence[int]) -> set[int]:
            return set()

    with pytest.raises(RagError) as info:
        await FederatedResponder(_Broken()).handle(b"P" * 8, federated.encode_request("q", 3))
    assert str(info.value) == "the knowledge base could not answer"
