"""Bayesian trust: the formulas of node.rag.trust against values computed by hand, and the store's reputations,
forgetting, claim support across sources, and feedback — through a real knowledge-base SQLite store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.rag import graph
from node.rag.store import NewChunk, Store
from node.rag.trust import (
    USER_SOURCE,
    Opinion,
    TrustError,
    TrustStore,
    claim_hash,
    decay,
    discount,
    fuse,
    fuse_all,
)

APPROX = 1e-9


def close(o: Opinion, b: float, d: float, u: float) -> None:
    assert (o.b, o.d, o.u) == pytest.approx((b, d, u), abs=APPROX)
    assert o.b + o.d + o.u == pytest.approx(1.0, abs=APPROX)


def test_evidence_maps_to_an_opinion_whose_expectation_is_the_beta_mean() -> None:
    o = Opinion.from_evidence(3, 1)  # W = 2: b = 3/6, d = 1/6, u = 2/6
    close(o, 0.5, 1 / 6, 1 / 3)
    assert o.expected == pytest.approx(2 / 3)  # (r + 1) / (r + s + 2) = 4/6
    close(Opinion.from_evidence(0, 0), 0, 0, 1)  # no evidence: vacuous
    with pytest.raises(TrustError):
        Opinion.from_evidence(-1, 0)


def test_cumulative_fusion_adds_evidence() -> None:
    one = Opinion.from_evidence(1, 0)  # (1/3, 0, 2/3)
    close(fuse(one, one), 0.5, 0, 0.5)  # = evidence (2, 0)
    close(fuse(one, Opinion.from_evidence(0, 1)), 0.25, 0.25, 0.5)  # = evidence (1, 1)
    close(fuse(Opinion(1, 0, 0), Opinion(0, 1, 0)), 0.5, 0.5, 0)  # two dogmatic opinions: the average
    close(fuse(Opinion.vacuous(), one), 1 / 3, 0, 2 / 3)  # a vacuous opinion changes nothing
    close(fuse_all([]), 0, 0, 1)
    # Associative: three sources in any order.
    a, b, c = Opinion.from_evidence(2, 1), Opinion.from_evidence(0, 3), Opinion.from_evidence(5, 0)
    abc, cab = fuse(fuse(a, b), c), fuse(c, fuse(a, b))
    close(abc, cab.b, cab.d, cab.u)
    close(abc, 7 / 13, 4 / 13, 2 / 13)  # = evidence (7, 4): 7/13, 4/13, 2/13


def test_discounting_by_a_sources_trust_probability() -> None:
    one = Opinion.from_evidence(1, 0)
    d = discount(0.5, one)
    close(d, 1 / 6, 0, 5 / 6)
    assert d.expected == pytest.approx(7 / 12)
    close(discount(0.0, one), 0, 0, 1)  # a source not trusted at all tells us nothing
    close(discount(1.0, one), 1 / 3, 0, 2 / 3)
    with pytest.raises(TrustError):
        discount(1.5, one)


def test_forgetting_halves_evidence_every_half_life() -> None:
    assert decay(4.0, 10.0, 10.0) == pytest.approx(2.0)
    assert decay(4.0, 20.0, 10.0) == pytest.approx(1.0)
    assert decay(4.0, -5.0, 10.0) == pytest.approx(4.0)  # a clock step backwards does not inflate evidence


def test_reputation_with_feedback_and_forgetting() -> None:
    store = Store(None)
    ts = TrustStore(store.conn, half_life_s=10.0)
    fresh = ts.reputation("file:/a", 0.0)
    assert (fresh.alpha, fresh.beta, fresh.expected) == (1.0, 1.0, 0.5)
    close(fresh.opinion, 0, 0, 1)
    for _ in range(3):
        ts.feedback("file:/a", True, 0.0)
    assert ts.reputation("file:/a", 0.0).expected == pytest.approx(4 / 5)  # α = 4, β = 1
    later = ts.reputation("file:/a", 10.0)  # r: 3 -> 1.5 after one half-life
    assert (later.alpha, later.beta) == pytest.approx((2.5, 1.0))
    assert later.expected == pytest.approx(2.5 / 3.5)
    assert later.opinion.expected == pytest.approx(later.expected)  # Beta mean = projected probability
    after_bad = ts.feedback("file:/a", False, 10.0)
    assert (after_bad.alpha, after_bad.beta) == pytest.approx((2.5, 2.0))
    assert ts.reputation("file:/b", 10.0).expected == 0.5  # other sources untouched
    with pytest.raises(TrustError):
        ts.feedback("no-kind", True, 0.0)


def _add(store: Store, source: str, text: str, origin_peer: str | None = None) -> int:
    with store.transaction() as conn:
        _, ids = store.insert_document(
            conn,
            source=source,
            content_hash=source,
            origin_peer=origin_peer,
            added_at=0.0,
            shared=False,
            title="",
            mime="text/plain",
            size_bytes=len(text),
            chunks=[NewChunk(0, text, 0, len(text), None)],
        )
        graph.index_chunks(conn, [(ids[0], text)])
    return ids[0]


def test_claim_key_ignores_case_spacing_and_punctuation_only() -> None:
    assert claim_hash("Vitamin D lowers  fracture risk.") == claim_hash("vitamin d lowers fracture-risk")
    assert claim_hash("Vitamin D lowers fracture risk") != claim_hash("Vitamin D raises fracture risk")


def test_same_claim_from_two_sources_is_more_certain_and_user_feedback_contradicts() -> None:
    store = Store(None)
    ts = TrustStore(store.conn, half_life_s=1e9)
    a = _add(store, "/notes/a.txt", "Vitamin D lowers fracture risk in older adults.")
    b = _add(store, "/notes/b.md", "vitamin D lowers fracture risk in older adults")
    c = _add(store, "/notes/c.txt", "Something else entirely about tumour necrosis factor.")
    single = ts.opinion_for_chunk(c, 0.0)
    close(single.opinion, 1 / 6, 0, 5 / 6)  # one source of reputation 0.5 asserting it
    assert single.trust == pytest.approx(7 / 12)
    both = ts.opinion_for_chunk(a, 0.0)
    assert both.supporting == ("file:/notes/a.txt", "file:/notes/b.md")
    close(both.opinion, 2 / 7, 0, 5 / 7)  # two discounted (1/6, 0, 5/6) fused
    assert both.trust == pytest.approx(9 / 14) and both.trust > single.trust
    assert ts.opinion_for_chunk(b, 0.0).opinion == both.opinion  # one claim, one opinion

    rep = ts.feedback_chunk(a, False, 0.0)  # the user marks the result bad
    assert rep.source_key == "file:/notes/a.txt" and rep.expected == pytest.approx(1 / 3)
    after = ts.opinion_for_chunk(a, 0.0)
    assert after.contradicting == (USER_SOURCE,)
    # a: P = 1/3 -> (1/9, 0, 8/9); b: (1/6, 0, 5/6); fused (13/53, 0, 40/53); with the user's (0, 1/3, 2/3):
    close(after.opinion, 13 / 73, 20 / 73, 40 / 73)
    assert after.trust == pytest.approx(33 / 73)
    assert ts.reputation("file:/notes/b.md", 0.0).expected == 0.5  # only the marked chunk's source changed


def test_a_peer_source_and_an_explicit_contradiction() -> None:
    store = Store(None)
    ts = TrustStore(store.conn)
    cid = _add(store, "remote.txt", "Aspirin prevents migraine.", origin_peer="AABBCCDDEEFF0011")
    assert ts.chunk_source(cid) == "peer:aabbccddeeff0011"
    for _ in range(2):
        ts.feedback("peer:aabbccddeeff0011", True, 0.0)  # P = 3/4
    close(ts.opinion_for_chunk(cid, 0.0).opinion, 1 / 4, 0, 3 / 4)
    ts.record_stance(ts.chunk_claim(cid), "peer:aabbccddeeff0011", False, 0.0)  # the peer retracts it
    after = ts.opinion_for_chunk(cid, 0.0)
    assert after.contradicting == ("peer:aabbccddeeff0011",) and after.supporting == ()
    close(after.opinion, 0, 1 / 4, 3 / 4)
    assert after.trust == pytest.approx(3 / 8)


opinions = st.builds(
    lambda r, s: Opinion.from_evidence(r, s),
    st.floats(min_value=0, max_value=1e3, allow_nan=False),
    st.floats(min_value=0, max_value=1e3, allow_nan=False),
)


@given(opinions, opinions, opinions)
@settings(max_examples=200, deadline=None)
def test_fusion_is_commutative_associative_and_adds_evidence(a: Opinion, b: Opinion, c: Opinion) -> None:
    ab, ba = fuse(a, b), fuse(b, a)
    assert (ab.b, ab.d, ab.u) == pytest.approx((ba.b, ba.d, ba.u), abs=1e-9)
    left, right = fuse(fuse(a, b), c), fuse(a, fuse(b, c))
    assert (left.b, left.d, left.u) == pytest.approx((right.b, right.d, right.u), abs=1e-9)
    assert left.b + left.d + left.u == pytest.approx(1.0, abs=1e-9)
    assert left.u <= min(a.u, b.u, c.u) + 1e-12  # more sources, never less certain


@given(opinions, st.floats(min_value=0, max_value=1, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_discounting_keeps_an_opinion_and_never_adds_belief(o: Opinion, p: float) -> None:
    d = discount(p, o)
    assert d.b + d.d + d.u == pytest.approx(1.0, abs=1e-9)
    assert d.b <= o.b + 1e-12 and d.d <= o.d + 1e-12 and d.u >= o.u - 1e-12
