"""A user's neural adaptation belongs to the neural model it was learned on (the state records the model's id)."""

from __future__ import annotations

import numpy as np
import pytest

from node.twin import neural, store
from node.twin.engine import Event, TwinEngine
from node.twin.errors import TwinStoreError
from node.twin.neural import NeuralLM
from node.twin.prior import GlobalPrior

from .helpers import tiny_prior

TEXTS = ["hello how are you", "i am fine thanks", "are you there ?", "how is it going", "thanks a lot"] * 4


def model(pr: GlobalPrior, *, seed: int, context: int = 3, d: int = 8) -> NeuralLM:
    vn = pr.v - 5
    rng = np.random.default_rng(seed)
    data = neural.pack(
        rng.standard_normal((vn, d)) * 0.3,
        rng.standard_normal((context * d, d)) * 0.3,
        np.zeros(d),
        np.zeros(vn),
        {"params": 0, "context": context},
    )
    return NeuralLM(data, pr.p1, pr.unk, pr.bos)


def learned(pr: GlobalPrior, nn: NeuralLM) -> TwinEngine:
    eng = TwinEngine(pr, neural=nn, gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, None, i))
    assert nn.updates > 0 and not np.allclose(nn.w, nn.w0)
    return eng


def test_the_same_model_gets_its_adaptation_back() -> None:
    pr = tiny_prior()
    eng = learned(pr, model(pr, seed=1))
    back = TwinEngine(pr, neural=model(pr, seed=1))
    back.decode(eng.encode(10_000_000), 10_000_000)
    assert back.neural is not None and eng.neural is not None
    np.testing.assert_allclose(back.neural.w, eng.neural.w, rtol=1e-6)
    assert back.lm.mu == eng.lm.mu and back.neural_updates == eng.neural_updates > 0
    assert back.status()["neural"]["reset"] is None


@pytest.mark.parametrize("context", [3, 4])
def test_another_model_starts_its_adaptation_again_and_keeps_the_counts(context: int) -> None:
    """A retrained neural.bin (same shape or not): the old deltas are not applied to it, the state is not refused,
    and everything else the user taught the twin stays."""
    pr = tiny_prior()
    eng = learned(pr, model(pr, seed=1))
    other = model(pr, seed=2, context=context)
    back = TwinEngine(pr, neural=other)
    back.decode(eng.encode(10_000_000), 10_000_000)
    np.testing.assert_array_equal(other.w, other.w0)
    np.testing.assert_array_equal(other.c, other.c0)
    assert back.lm.mu == TwinEngine(pr, neural=model(pr, seed=3)).lm.mu and back.neural_updates == 0
    assert back.lm.personal.tokens == eng.lm.personal.tokens > 0 and back.lm.words == eng.lm.words
    assert back.events == eng.events
    assert "another neural model" in (back.status()["neural"]["reset"] or "")
    # The next save records the new model, so its adaptation comes back the time after.
    back.observe(Event("message", "hello there", None, 99))
    again = TwinEngine(pr, neural=model(pr, seed=2, context=context))
    again.decode(back.encode(10_000_000), 10_000_000)
    assert again.neural is not None and again.status()["neural"]["reset"] is None
    np.testing.assert_allclose(again.neural.w, other.w, rtol=1e-6)


def test_a_state_from_before_the_model_id_drops_only_its_neural_deltas() -> None:
    """Session-5 states carry nn_* deltas but no model id: they are not trusted to match the shipped model."""
    pr = tiny_prior()
    nn = model(pr, seed=1)
    eng = learned(pr, nn)
    old = store.encode(eng.lm, dict(nn.state()), {"events": eng.events, "mu": 0.5, "neural_updates": 7})
    back = TwinEngine(pr, neural=model(pr, seed=1))
    back.decode(old, 10_000_000)
    assert isinstance(back.neural, NeuralLM)
    np.testing.assert_array_equal(back.neural.w, back.neural.w0)
    assert back.lm.personal.tokens == eng.lm.personal.tokens > 0 and back.neural_updates == 0
    assert "unrecorded" in (back.status()["neural"]["reset"] or "")


def test_a_small_disk_bound_saves_the_counts_without_the_neural_adaptation() -> None:
    """twin.max_disk_bytes below the neural deltas' size (context x d x d floats): the state is still saved, with
    the counts, instead of every save failing."""
    pr = tiny_prior()
    eng = learned(pr, model(pr, seed=1, d=48))
    full = eng.encode(10_000_000)
    bound = len(full) // 3
    small = eng.encode(bound)
    assert len(small) <= bound < len(full)
    back = TwinEngine(pr, neural=model(pr, seed=1, d=48))
    back.decode(small, bound)
    assert isinstance(back.neural, NeuralLM)
    np.testing.assert_array_equal(back.neural.w, back.neural.w0)
    assert back.lm.personal.tokens == eng.lm.personal.tokens > 0 and back.lm.words == eng.lm.words


def test_a_bound_between_the_counts_and_the_whole_state_drops_the_neural_deltas_first() -> None:
    """A bound just under the full state: the personal counts are kept whole and the neural adaptation is what goes
    (it is relearnt; pruned counts are not); the loaded state says why the tier starts again, with its default
    weight, not the learned one."""
    pr = tiny_prior()
    eng = learned(pr, model(pr, seed=1, d=48))
    eng.lm.mu = 0.77
    full = eng.encode(10_000_000)
    bound = len(full) - 1
    small = eng.encode(bound)
    assert len(small) <= bound
    back = TwinEngine(pr, neural=model(pr, seed=1, d=48))
    default_mu = back.lm.mu
    back.decode(small, bound)
    assert back.lm.personal.tokens == eng.lm.personal.tokens
    assert back.lm.personal.trigrams == eng.lm.personal.trigrams  # no count pruned
    assert isinstance(back.neural, NeuralLM)
    np.testing.assert_array_equal(back.neural.w, back.neural.w0)
    assert back.lm.mu == default_mu != 0.77
    assert back.neural_reset_reason is not None and "max_disk_bytes" in back.neural_reset_reason


def test_a_state_with_the_models_id_but_no_deltas_is_not_taken_as_adapted() -> None:
    pr = tiny_prior()
    eng = learned(pr, model(pr, seed=1))
    eng.lm.mu = 0.77
    data = eng.encode(10_000_000)
    arrays, meta = store.unpack_state(data, max_bytes=10_000_000)
    del arrays["x_nn_w"]
    partial = store.pack_state(arrays, meta)
    back = TwinEngine(pr, neural=model(pr, seed=1))
    back.decode(partial, 10_000_000)
    assert back.lm.mu != 0.77 and back.neural_reset_reason is not None and "incomplete" in back.neural_reset_reason


def test_deltas_that_overflow_float32_are_refused() -> None:
    pr = tiny_prior()
    eng = learned(pr, model(pr, seed=1))
    state = {k: v.astype(np.float64) for k, v in eng.neural.state().items()} if eng.neural else {}
    state["nn_w"] = np.full_like(state["nn_w"], 1e300)
    nn = model(pr, seed=1)
    with pytest.raises(TwinStoreError, match="out of range"):
        nn.load_state(state)
    assert np.isfinite(nn.w).all()


@pytest.mark.parametrize("key", ["neural_model", "gate_score"])
def test_a_hostile_model_id_or_gate_score_reaches_status_escaped(key: str) -> None:
    """The state file's saved neural model id and gate score are quoted in status's reset notes (printed as they are
    by the human `village twin status`): a terminal escape in one arrives escaped, never raw."""
    pr = tiny_prior()
    eng = learned(pr, model(pr, seed=1))
    arrays, meta = store.unpack_state(eng.encode(10_000_000), max_bytes=1 << 30)
    meta[key] = "\x1b]0;pwned\x07\x1b[2J"
    back = TwinEngine(pr, neural=model(pr, seed=1))
    back.decode(store.pack_state(dict(arrays), meta), 10_000_000)
    note = back.status()["neural"]["reset" if key == "neural_model" else "gate_reset"]
    assert note is not None and "\\x1b]0;pwned\\x07\\x1b[2J" in note, note
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in note), note
