"""The recurrent neural tier (node/twin/rnn.py): carried states, the user's previous message as context, the
on-device adapter, its state, and a feed-forward user's state meeting it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from node.twin import blob, neural, rnn, store
from node.twin.engine import Event, TwinEngine
from node.twin.errors import TwinStoreError
from node.twin.model import TwinLM
from node.twin.prior import GlobalPrior

from .helpers import tiny_prior

TEXTS = ["hello how are you", "i am fine thanks", "are you there ?", "how is it going", "thanks a lot"] * 4


def packed(pr: GlobalPrior, *, seed: int, d: int = 12) -> bytes:
    vn = pr.v - 5
    rng = np.random.default_rng(seed)
    params = {
        "e": rng.standard_normal((vn, d)) * 0.5,
        "wx": rng.standard_normal((d, 3 * d)) * 0.5,
        "wh": rng.standard_normal((d, 3 * d)) * 0.5,
        "bx": np.zeros(3 * d),
        "bh": np.zeros(3 * d),
        "c": np.zeros(vn),
    }
    return rnn.pack(params, {"params": 0, "context": "sender"})


def model(pr: GlobalPrior, *, seed: int = 1, d: int = 12) -> rnn.RecurrentLM:
    lm = rnn.load_neural(packed(pr, seed=seed, d=d), pr.p1, pr.unk, pr.bos)
    assert isinstance(lm, rnn.RecurrentLM)
    return lm


def ids(pr: GlobalPrior, text: str) -> list[int]:
    return pr.ids(text.split())


def test_carried_states_give_what_a_fresh_pass_gives() -> None:
    """Predicting token by token continues the kept states; the result is the pass from the message start."""
    pr = tiny_prior()
    lm = model(pr)
    h = ids(pr, "how are you there")
    cand = np.arange(lm.vn)
    for i in range(len(h) + 1):
        lm.probs(h[:i], cand)
    steps = len(lm._states)
    again = lm.probs(h[:2], cand)  # a shorter prefix reuses the states kept
    assert len(lm._states) == 3 and steps == len(h) + 1
    fresh = model(pr)
    np.testing.assert_allclose(again, fresh.probs(h[:2], cand), rtol=1e-6)
    other = ids(pr, "how is it going")  # a different prefix recomputes from where it differs
    np.testing.assert_allclose(lm.probs(other, cand), model(pr).probs(other, cand), rtol=1e-6)


def test_the_previous_message_is_context_and_survives_a_save() -> None:
    pr = tiny_prior()
    lm = model(pr)
    cand = np.arange(lm.vn)
    before = lm.probs([], cand)
    msg = [*ids(pr, "thanks a lot"), pr.eos]
    lm.end_message(msg)
    after = lm.probs([], cand)
    assert not np.allclose(before, after)  # the next message starts from the last one's state
    saved = lm.state()
    back = model(pr)
    back.load_state(saved)
    np.testing.assert_allclose(back.probs([], cand), after, rtol=1e-6)
    back.reset()
    np.testing.assert_allclose(back.probs([], cand), before, rtol=1e-6)


def test_the_twin_carries_the_users_messages_and_learns_with_the_adapter() -> None:
    pr = tiny_prior()
    nn = model(pr)
    lm = TwinLM(pr, neural=nn)
    lm.observe("hello how are you")
    assert np.abs(nn.s_msg).sum() > 0 and nn._toks == []
    probe = ids(pr, "how is")
    target = pr.ids(["it"])[0]
    p0 = nn.probs(probe, np.asarray([target]))[0]
    for _ in range(20):
        lm.observe("how is it going")
    lm.flush_neural()
    assert nn.updates > 0 and np.abs(nn.a_w).sum() > 0
    assert nn.probs(probe, np.asarray([target]))[0] > p0
    assert len(nn._states) <= rnn.MAX_STEPS


def test_a_long_history_keeps_its_tail_only() -> None:
    pr = tiny_prior()
    lm = model(pr)
    h = ids(pr, "how are you") * 400
    p = lm.probs(h, np.arange(lm.vn))
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-4) and len(lm._states) == rnn.MAX_STEPS


def test_engine_state_round_trip_and_hostile_context_state() -> None:
    pr = tiny_prior()
    eng = TwinEngine(pr, neural=model(pr), gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, None, i))
    nn = eng.neural
    assert isinstance(nn, rnn.RecurrentLM)
    data = eng.encode(10_000_000)
    back = TwinEngine(pr, neural=model(pr))
    back.decode(data, 10_000_000)
    assert isinstance(back.neural, rnn.RecurrentLM) and back.status()["neural"]["reset"] is None
    np.testing.assert_allclose(back.neural.a_w, nn.a_w, rtol=1e-6)
    np.testing.assert_allclose(back.neural.s_msg, nn.s_msg, rtol=1e-6)
    arrays, meta = blob.unpack_untrusted(data, store.MAGIC, store.FORMAT_VERSION, max_bytes=10_000_000)
    arrays["x_nn_s"] = np.full_like(arrays["x_nn_s"], 5.0)  # a GRU state is never outside [-1, 1]
    bad = blob.pack(store.MAGIC, store.FORMAT_VERSION, arrays, meta, compact=True)
    with pytest.raises(TwinStoreError):
        TwinEngine(pr, neural=model(pr)).decode(bad, 10_000_000)


def test_a_feed_forward_users_state_keeps_its_counts_on_the_recurrent_tier() -> None:
    """The shipped tier changed kind: the old adaptation is not applied (the model id differs), the rest stays."""
    pr = tiny_prior()
    rng = np.random.default_rng(3)
    vn, d = pr.v - 5, 8
    ff_data = neural.pack(
        rng.standard_normal((vn, d)) * 0.3, rng.standard_normal((3 * d, d)) * 0.3, np.zeros(d), np.zeros(vn), {}
    )
    ff = rnn.load_neural(ff_data, pr.p1, pr.unk, pr.bos)
    assert isinstance(ff, neural.NeuralLM)
    eng = TwinEngine(pr, neural=ff, gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, None, i))
    back = TwinEngine(pr, neural=model(pr))
    back.decode(eng.encode(10_000_000), 10_000_000)
    assert isinstance(back.neural, rnn.RecurrentLM)
    assert not back.neural.a_w.any() and back.lm.personal.tokens == eng.lm.personal.tokens > 0
    assert "another neural model" in (back.status()["neural"]["reset"] or "")


def test_bad_model_files_are_refused() -> None:
    pr = tiny_prior()
    good = packed(pr, seed=1)
    arrays, meta = blob.unpack_untrusted(good, rnn.MAGIC, rnn.FORMAT_VERSION, max_bytes=1 << 24)
    arrays["wh"] = arrays["wh"][:, :-1]
    arrays["wh_scale"] = arrays["wh_scale"]
    with pytest.raises(TwinStoreError):
        rnn.RecurrentLM(blob.pack(rnn.MAGIC, rnn.FORMAT_VERSION, arrays, meta), pr.p1, pr.unk, pr.bos)
    with pytest.raises(TwinStoreError):
        rnn.RecurrentLM(good[:40], pr.p1, pr.unk, pr.bos)


def test_the_shipped_tier_is_the_recurrent_one() -> None:
    from importlib import resources

    data = resources.files("node.twin.data").joinpath(neural.NEURAL_FILE).read_bytes()
    pr = GlobalPrior.load_packaged()
    lm = rnn.load_packaged(pr.p1, pr.unk, pr.bos)
    assert data[:4] == rnn.MAGIC and isinstance(lm, rnn.RecurrentLM)
    assert lm.params <= 1_500_000 and len(data) < 2_000_000 and lm.vn <= pr.v
    assert TwinLM(pr, neural=lm).neural_lr == rnn.RecurrentLM.adapt_lr  # the tier's own on-device step


def test_the_output_bias_step_has_its_own_size() -> None:
    """The always-on step on c uses ``bias_lr``, the adapter step ``neural_lr`` (the tier's adapt_lr): doubling
    one doubles what it moves and leaves the other's parameters as they were."""
    pr = tiny_prior()

    def learned(bias_lr: float, neural_lr: float) -> rnn.RecurrentLM:
        nn = model(pr)
        lm = TwinLM(pr, neural=nn, bias_lr=bias_lr, neural_lr=neural_lr)
        lm.observe("hello how are you")
        lm.flush_neural()
        assert nn.updates > 0
        return nn

    base, bias2, adapter2 = learned(0.1, 0.002), learned(0.2, 0.002), learned(0.1, 0.004)
    dc = base.c - base.c0
    assert np.abs(dc).max() > 1e-4 and np.abs(base.a_w).max() > 0
    np.testing.assert_allclose(bias2.c - bias2.c0, 2 * dc, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(bias2.a_w, base.a_w)
    np.testing.assert_array_equal(adapter2.c, base.c)
    np.testing.assert_allclose(adapter2.a_w, 2 * base.a_w, rtol=1e-4, atol=1e-9)
    pr_lm = TwinLM(pr, neural=model(pr))  # the defaults: each tier's own steps
    assert (pr_lm.bias_lr, pr_lm.neural_lr) == (rnn.RecurrentLM.bias_lr, rnn.RecurrentLM.adapt_lr)
    assert rnn.RecurrentLM.bias_lr > rnn.RecurrentLM.adapt_lr  # c takes a larger step than the adapter
