"""The mixture on the shipped prior: it learns a user's phrasing, online, and stays a distribution."""

from __future__ import annotations

import numpy as np
import pytest

from node.twin.gate import SurpriseGate
from node.twin.model import TwinLM
from node.twin.prior import GlobalPrior


@pytest.fixture(scope="module")
def prior() -> GlobalPrior:
    return GlobalPrior.load_packaged()


def test_packaged_prior_is_small_and_sane(prior: GlobalPrior) -> None:
    assert prior.size_bytes < 4_000_000
    assert 5_000 < prior.v <= 50_000
    lm = TwinLM(prior)
    assert [s.token for s in lm.suggest("how are ", 3)].count("you") == 1
    assert lm.suggest("how are", 3)[0].token == "are"  # no space: completions of the word being typed


def test_learns_the_users_phrase(prior: GlobalPrior) -> None:
    lm = TwinLM(prior)
    phrase = "meet me at the zorblax cafe"
    before = sum(lm.observe(phrase, learn=False))
    for _ in range(5):
        lm.observe(phrase)
    after = sum(lm.observe(phrase, learn=False))
    assert after < before - 20  # bits for the whole message
    assert lm.suggest("meet me at the ")[0].token == "zorblax"
    assert lm.suggest("at the zor")[0].token == "zorblax"  # completion of a word the prior never saw


def test_mixture_is_a_distribution(prior: GlobalPrior) -> None:
    lm = TwinLM(prior)
    for m in ["hey what's up", "not much, you?", "hey what's new"]:
        lm.observe(m)
    hist = lm.ids(["hey", "what's"])
    cand = np.arange(1, lm.vocab_size, dtype=np.int64)
    p = lm._mix(hist, cand).p
    # <unk>'s own id and the user's new words share the prior's unknown mass; the rest sums to ~1.
    assert float(p.sum()) == pytest.approx(1.0, abs=0.02)


def test_mixture_weights_move_towards_the_better_tier(prior: GlobalPrior) -> None:
    lm = TwinLM(prior)
    for _ in range(40):
        lm.observe("quux flibber wobble")
    assert max(lm.lam) > 0.5


def test_gated_count_learning_learns_less(prior: GlobalPrior) -> None:
    always, gated = TwinLM(prior), TwinLM(prior)
    gate = SurpriseGate(0.2)
    for m in ["i love pizza so much", "do you like pizza", "pizza is the best"] * 5:
        always.observe(m)
        gated.observe(m, gate=gate, gate_counts=True)
    assert gated.personal.tokens < always.personal.tokens
    assert gated.personal.tokens > 0
