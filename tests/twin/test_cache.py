"""The recency tier (a decaying unigram + bigram cache of the user's latest tokens) and the neural tier's cheap
output-bias step."""

from __future__ import annotations

import numpy as np
import pytest

from node.twin import rnn, store
from node.twin.cache import RecencyCache
from node.twin.errors import TwinStoreError
from node.twin.model import TwinLM
from node.twin.prior import GlobalPrior


@pytest.fixture(scope="module")
def prior() -> GlobalPrior:
    return GlobalPrior.load_packaged()


def test_recent_words_outweigh_old_ones() -> None:
    c = RecencyCache(bos=0, decay=0.9)
    c.add_message([5, 6, 7])
    for _ in range(10):
        c.add_message([8, 9])
    p_old, p_new = c.probs(0, [5, 8])
    assert 0 < p_old < p_new
    assert c.probs(8, [9])[0] > 0.5  # the bigram seen most recently dominates its context
    assert c.probs(0, [1234]) == [0.0]  # never typed: the other tiers carry it


def test_cache_stays_bounded() -> None:
    c = RecencyCache(bos=0, decay=0.9999, max_entries=100)
    for i in range(5_000):
        c.add(i, i + 1)
    assert len(c.c1) <= 100 and c.n2 <= 100
    assert sum(len(f) for f in c.c2.values()) == c.n2
    assert c.probs(4_999, [5_000])[0] > 0  # the latest is kept


def test_cache_rescales_without_overflow() -> None:
    c = RecencyCache(bos=0, decay=0.5)
    for _ in range(500):  # 2**500 would overflow a float without rescaling
        c.add(1, 2)
    assert c.scale < 1e31 and abs(c.probs(1, [2])[0] - 1.0) < 1e-6


def test_twin_learns_a_users_recent_phrase_faster_with_the_cache(prior: GlobalPrior) -> None:
    with_cache, without = TwinLM(prior), TwinLM(prior, recency=False)
    for lm in (with_cache, without):
        for _ in range(3):
            lm.observe("meet me at the quokka bar tonight")
    hist = with_cache.ids(["meet", "me", "at", "the"])
    q = with_cache.token_id("quokka", add=False)
    assert with_cache.prob(hist, q) > without.prob(hist, q)
    assert with_cache.kappa != without.kappa or with_cache.kappa_n[0] + sum(with_cache.kappa_n) > 0


def test_cache_round_trips_and_hostile_cache_arrays_are_refused(prior: GlobalPrior) -> None:
    lm = TwinLM(prior)
    lm.observe("the zorblax is ready")
    data = store.encode(lm)
    back = TwinLM(prior)
    store.decode_into(back, data, 1_000_000)
    z = lm.token_id("zorblax", add=False)
    v = lm.token_id("the", add=False)
    assert back.recency is not None and lm.recency is not None
    assert back.recency.probs(v, [z]) == pytest.approx(lm.recency.probs(v, [z]), rel=1e-12)
    bad = RecencyCache(bos=0)
    arrays = lm.recency.to_arrays()
    arrays["rc_uni"] = arrays["rc_uni"] + 10**6  # ids past the vocabulary
    with pytest.raises(TwinStoreError):
        bad.load_arrays(arrays, top=prior.v + 10)
    arrays = lm.recency.to_arrays()
    arrays["rc_bi_c"] = arrays["rc_bi_c"] * np.nan
    with pytest.raises(TwinStoreError):
        bad.load_arrays(arrays, top=prior.v + 10)


def test_bias_step_raises_the_target_without_a_forward_pass(prior: GlobalPrior) -> None:
    nn = rnn.load_packaged(prior.p1, prior.unk, prior.bos)
    hist = prior.ids(["i", "love"])
    t = prior.index["pizza"]
    before = float(nn.probs(hist, np.asarray([t]))[0])
    p = nn.last_p
    assert p is not None
    nn.adapt_bias([(p, t)] * 5, 0.5)
    assert float(nn.probs(hist, np.asarray([t]))[0]) > before
