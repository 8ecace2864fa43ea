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


@pytest.fixture(scope="module")
def neural_bytes() -> bytes:
    from importlib import resources

    return resources.files("node.twin.data").joinpath("neural.bin").read_bytes()


def _with_neural(prior: GlobalPrior, data: bytes, **kw: object) -> TwinLM:
    from node.twin import rnn

    return TwinLM(prior, neural=rnn.load_neural(data, prior.p1, prior.unk, prior.bos), **kw)  # type: ignore[arg-type]


def test_the_batched_neural_step_learns_like_the_per_token_one(prior: GlobalPrior, neural_bytes: bytes) -> None:
    """The shipped update (one mini-batch per message from the predictions' forward passes) adapts the neural
    tier about as much as one SGD step per token with its own forward pass, and lowers the phrase's surprisal."""
    msgs = ["see you at the gym tonight bro", "gym later ? bro", "at the gym now bro"] * 4
    batched, per_token = _with_neural(prior, neural_bytes), _with_neural(prior, neural_bytes, batched_steps=False)
    assert batched.neural is not None and per_token.neural is not None
    probe = batched.ids(["at", "the"])
    gym = batched.token_id("gym", add=False)
    before = batched.neural.probs(probe, np.asarray([gym]))[0]
    for m in msgs:
        batched.observe(m)
        per_token.observe(m)
    assert batched.neural.updates == per_token.neural.updates == sum(len(m.split()) + 1 for m in msgs)
    d_batch = batched.neural.state()["nn_w"]
    d_tok = per_token.neural.state()["nn_w"]
    cos = float((d_batch * d_tok).sum() / np.linalg.norm(d_batch) / np.linalg.norm(d_tok))
    assert cos > 0.9
    assert 0.5 < float(np.linalg.norm(d_batch) / np.linalg.norm(d_tok)) < 2.0
    assert batched.neural.probs(probe, np.asarray([gym]))[0] > 1.5 * before


def test_the_neural_tiers_favourites_can_be_suggested(prior: GlobalPrior, neural_bytes: bytes) -> None:
    """A word only the neural tier ranks high is among the ranked candidates (it could never be suggested
    before, whatever its probability)."""
    lm = _with_neural(prior, neural_bytes)
    off = _with_neural(prior, neural_bytes, neural_candidates=0)
    assert lm.neural is not None
    found = 0
    for text in ["how are you", "i am going to the", "what do you", "thanks for the", "see you"]:
        hist = lm.ids(text.split())
        top_nn = set(lm.neural.top_ids(lm._nn_history(hist), 8).tolist())
        with_nn, without = set(lm.candidates(hist).tolist()), set(off.candidates(hist).tolist())
        assert top_nn <= with_nn
        found += len(top_nn - without)
    assert found > 0  # some of them were missing from the n-gram tiers' candidates
