"""The GRU tier's output-bias step is bounded (node/twin/rnn.py MAX_BIAS_STEP, MAX_BIAS_DRIFT): a hostile
repetitive message moves c by at most the step bound, many of them keep c within the drift bound, ordinary text
learns exactly what the unbounded step learned, and a stored c beyond the bound resets the adaptation on load."""

from __future__ import annotations

import math
import random

import numpy as np

from node.twin import neural, rnn, store
from node.twin.engine import Event, TwinEngine
from node.twin.model import TwinLM

from .helpers import tiny_prior
from .test_rnn import TEXTS, model

WORDS = [
    "hello",
    "how",
    "are",
    "you",
    "i",
    "am",
    "fine",
    "thanks",
    "there",
    "doing",
    "today",
    "well",
    "what",
    "think",
    "so",
    "not",
    "sure",
    "a",
    "lot",
    "is",
    "it",
    "going",
]


def test_a_hostile_repetitive_message_moves_the_output_bias_by_the_step_bound_at_most() -> None:
    pr = tiny_prior()
    nn = model(pr)
    lm = TwinLM(pr, neural=nn)
    assert lm.bias_lr == rnn.RecurrentLM.bias_lr == 0.1
    hostile = " ".join(["thanks"] * 200)  # 128 learned rows of one target: the unbounded step moved it ~12.8
    t = pr.ids(["thanks"])[0]
    before = nn.c.copy()
    bits = lm.observe(hostile)
    moved = np.abs(nn.c - before)
    assert moved.max() <= rnn.MAX_BIAS_STEP * (1 + 1e-6)
    assert moved[t] >= rnn.MAX_BIAS_STEP * (1 - 1e-6)  # the clip bound: the unbounded step went much further
    unbounded = before.copy()
    assert lm._pblock is not None
    unbounded -= lm.bias_lr * neural.bias_gradient(nn.vn, nn.unk, [], lm._pblock[:128], [t] * 128)
    assert abs(unbounded[t] - before[t]) > 5.0  # (what the old step did with the same rows)
    assert all(math.isfinite(b) for b in bits)
    flat = np.full((128, nn.vn), 1.0 / nn.vn, dtype=np.float32)  # distributions that never learn the target
    for _ in range(40):  # many such steps: c stays within the drift bound of the shipped bias
        nn.adapt_bias_rows(flat, [t] * 128, lm.bias_lr)
        assert np.abs(nn.c - nn.c0).max() <= rnn.MAX_BIAS_DRIFT * (1 + 1e-6)
    assert nn.c[t] - nn.c0[t] >= rnn.MAX_BIAS_DRIFT * (1 - 1e-6)
    assert nn.adaptation_ok() and all(math.isfinite(s.p) for s in lm.suggest("thanks ", 3))
    state = nn.state()  # c at its drift bound (float32 rounding of c0 ± 16 included) is one learning reached: kept
    again = model(pr)
    again.load_state(state)
    assert again.dropped is None
    np.testing.assert_allclose(again.c, nn.c, atol=1e-5)


def test_ordinary_text_learns_exactly_what_the_unbounded_step_learned() -> None:
    """No bound binds on ordinary messages: c equals, bit for bit, the step without any clip."""
    pr = tiny_prior()
    rng = random.Random(7)
    nn = model(pr)
    lm = TwinLM(pr, neural=nn)
    ref = nn.c.copy()
    for _ in range(300):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        ids = lm.ids(lm_tokens := text.split(), add=True)
        del lm_tokens
        for i, tok in enumerate(ids):
            lm.learn_weights(ids[:i], tok)
        assert lm._pblock is not None
        rows, targets = lm._pblock[: lm._pn].copy(), list(lm._bias_targets)
        lm.learn_counts(ids)
        lm.adapt_neural(ids, [1.0] * len(ids))
        lm.message_done(ids)
        ref -= lm.bias_lr * neural.bias_gradient(nn.vn, nn.unk, [], rows, targets)  # the session-7 step
        np.testing.assert_array_equal(nn.c, ref)
    assert np.abs(nn.c - nn.c0).max() > 0.1


def test_a_stored_output_bias_beyond_the_bound_resets_the_adaptation_with_a_reason() -> None:
    pr = tiny_prior()
    eng = TwinEngine(pr, neural=model(pr), gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, None, i))
    data = eng.encode(10_000_000)
    ok = TwinEngine(pr, neural=model(pr))
    ok.decode(data, 10_000_000)
    assert ok.status()["neural"]["reset"] is None
    arrays, meta = store.unpack_state(data, max_bytes=10_000_000)
    arrays["x_nn_c"] = arrays["x_nn_c"].copy()
    arrays["x_nn_c"][3] = rnn.MAX_BIAS_DRIFT + 1.0  # finite, but no learning reaches it
    bad = store.pack_state(arrays, meta)
    back = TwinEngine(pr, neural=model(pr))
    back.decode(bad, 10_000_000)
    nn = back.neural
    assert isinstance(nn, rnn.RecurrentLM)
    reason = back.status()["neural"]["reset"]
    assert reason is not None and "output bias" in reason
    np.testing.assert_array_equal(nn.c, nn.c0)
    assert not nn.a_w.any() and back.lm.personal.tokens == eng.lm.personal.tokens > 0  # the counts are kept
