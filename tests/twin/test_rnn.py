"""The recurrent neural tier (node/twin/rnn.py): carried states, the user's previous message as context, the
on-device adapter, its state, and a feed-forward user's state meeting it."""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

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
    arrays, meta = store.unpack_state(data, max_bytes=10_000_000)
    arrays["x_nn_s"] = np.full_like(arrays["x_nn_s"], 5.0)  # a GRU state is never outside [-1, 1]
    bad = store.pack_state(arrays, meta)
    hostile = TwinEngine(pr, neural=model(pr))
    hostile.decode(bad, 10_000_000)  # the neural tier alone starts again (test_neural_reset_on_load.py)
    assert isinstance(hostile.neural, rnn.RecurrentLM) and not hostile.neural.s_msg.any()
    assert "could not be used" in (hostile.neural_reset_reason or "") and hostile.lm.messages == eng.lm.messages


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


def _learned_engine(pr: GlobalPrior) -> TwinEngine:
    eng = TwinEngine(pr, neural=model(pr), gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, None, i))
    return eng


def test_a_huge_finite_adapter_in_a_saved_state_is_not_loaded() -> None:
    """A damaged state.bin whose adapter is finite but huge (3e38) would overflow every prediction into NaN and
    the next learning step would write NaN into the adaptation: it is not loaded (the tier starts again from the
    shipped model; the rest of the file loads: test_neural_reset_on_load.py)."""
    pr = tiny_prior()
    data = _learned_engine(pr).encode(10_000_000)
    for name in ("x_nn_w", "x_nn_b"):
        arrays, meta = store.unpack_state(data, max_bytes=10_000_000)
        arrays[name] = np.full_like(arrays[name], 3e38)
        bad = store.pack_state(arrays, meta)
        back = TwinEngine(pr, neural=model(pr))
        back.decode(bad, 10_000_000)
        assert isinstance(back.neural, rnn.RecurrentLM) and not back.neural.a_w.any() and not back.neural.a_b.any()
        assert "out of range" in (back.neural_reset_reason or "")


def test_a_damaged_adaptation_at_run_time_is_dropped_not_learned_or_saved() -> None:
    """An adapter that overflows the predictions while running: the tier drops it (status says why), the
    surprisal and suggestions stay numbers, the mixture weight is not pinned, and the next save loads with the
    counts."""
    pr = tiny_prior()
    eng = _learned_engine(pr)
    nn = eng.neural
    assert isinstance(nn, rnn.RecurrentLM)
    nn.a_w[:] = 3e38  # what a finite but huge adapter does at run time
    obs = eng.observe(Event("message", "how are you there", None, 99))
    assert obs.bits_per_token is not None and math.isfinite(obs.bits_per_token)
    reason = eng.status()["neural"]["reset"]
    assert reason is not None and "not finite" in reason
    assert np.isfinite(nn.a_w).all() and np.abs(nn.a_w).max() < 1.0 and eng.lm.mu > 0.02
    assert all(math.isfinite(s["p"]) for s in eng.suggest("how are ", 3))
    back = TwinEngine(pr, neural=model(pr))
    back.decode(eng.encode(10_000_000), 10_000_000)
    assert back.lm.personal.tokens == eng.lm.personal.tokens > 0


def test_a_non_finite_adaptation_is_not_saved() -> None:
    """NaN in the adaptation when the state is saved: the adaptation is reset, and the file loads with the counts
    (before, the next load refused the whole file and everything learned was lost)."""
    pr = tiny_prior()
    eng = _learned_engine(pr)
    nn = eng.neural
    assert isinstance(nn, rnn.RecurrentLM)
    nn.a_b[0] = np.nan
    data = eng.encode(10_000_000)
    assert eng.neural_reset_reason is not None and "not finite" in eng.neural_reset_reason
    back = TwinEngine(pr, neural=model(pr))
    back.decode(data, 10_000_000)
    assert isinstance(back.neural, rnn.RecurrentLM) and np.isfinite(back.neural.a_b).all()
    assert back.lm.personal.tokens == eng.lm.personal.tokens > 0


def test_the_disk_bound_drops_the_whole_recurrent_adaptation_context_included() -> None:
    """Over twin.max_disk_bytes the GRU adapter, output bias and carried context state all go (the context state
    is derived from the user's text too), the counts stay whole, and the load says why the tier starts again."""
    pr = tiny_prior()
    eng = TwinEngine(pr, neural=model(pr, d=48), gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, None, i))
    full = eng.encode(10_000_000)
    small = eng.encode(len(full) - 1)
    arrays, meta = store.unpack_state(small, max_bytes=10_000_000)
    assert meta.get("neural_dropped") is True
    assert not [k for k in arrays if k.startswith("x_nn_")], sorted(arrays)
    back = TwinEngine(pr, neural=model(pr, d=48))
    back.decode(small, len(full) - 1)
    assert isinstance(back.neural, rnn.RecurrentLM) and not back.neural.s_msg.any() and not back.neural.a_w.any()
    assert back.lm.personal.tokens == eng.lm.personal.tokens > 0
    assert "max_disk_bytes" in (back.status()["neural"]["reset"] or "")


def test_suggestions_on_a_long_text_edited_at_its_start_recompute_no_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """Suggestions see a bounded window of the text being typed: editing the start of a long text costs no GRU
    step, typing one more word costs a few (the window's start moves in steps), never the whole text."""
    pr = tiny_prior()
    nn = model(pr)
    lm = TwinLM(pr, neural=nn)
    words = ["hello", "how", "are", "you", "i", "am", "fine", "thanks"]
    text = [words[i % len(words)] for i in range(400)]
    steps = 0
    real = nn._step

    def counted(s: rnn.F32, tok: int) -> rnn.F32:
        nonlocal steps
        steps += 1
        return real(s, tok)

    monkeypatch.setattr(nn, "_step", counted)
    assert lm.suggest(" ".join(text) + " ")
    assert 0 < steps <= 65
    steps = 0
    text[0] = "thanks"
    assert lm.suggest(" ".join(text) + " ")
    assert steps == 0
    worst = 0
    for w in words * 4:  # typing on: at most the window once per stride, one step otherwise
        text.append(w)
        steps = 0
        lm.suggest(" ".join(text) + " ")
        worst = max(worst, steps)
    assert worst <= 65


def _repacked(good: bytes, magic: bytes, **changes: np.ndarray[Any, Any]) -> bytes:
    arrays, meta = blob.unpack_untrusted(good, magic, 1, max_bytes=1 << 24)
    arrays.update(changes)
    return blob.pack(magic, 1, arrays, meta)


def test_model_files_are_checked_before_any_arithmetic_and_must_be_finite() -> None:
    """A 1-D ``e`` beside a scale of its length would broadcast to a square (a tiny file asking for a huge
    allocation); NaN or huge weights would make every prediction NaN. Both tiers refuse such files."""
    pr = tiny_prior()
    n = 6000  # the square: 144 MB, over the unpacking buffer (max_bytes, 64 MiB) whose peak both share
    tiny: dict[str, np.ndarray[Any, Any]] = {
        "e": np.ones(n, np.int8),
        "e_scale": np.ones(n, np.float32),
        "wx": np.ones(1, np.int8),
        "wx_scale": np.ones(1, np.float32),
        "wh": np.ones(1, np.int8),
        "wh_scale": np.ones(1, np.float32),
        "bx": np.ones(1, np.float32),
        "bh": np.ones(1, np.float32),
        "c": np.ones(1, np.float32),
    }
    data = blob.pack(rnn.MAGIC, 1, tiny, {})

    def peak_bytes(fn: Any) -> tuple[int, str]:
        tracemalloc.start()
        try:
            fn()
            return int(tracemalloc.get_traced_memory()[1]), ""
        except TwinStoreError as exc:
            return int(tracemalloc.get_traced_memory()[1]), str(exc)
        finally:
            tracemalloc.stop()

    unpacking, _ = peak_bytes(lambda: blob.unpack_untrusted(data, rnn.MAGIC, 1, max_bytes=neural.MAX_RAW_BYTES))
    loading, why = peak_bytes(lambda: rnn.load_neural(data, pr.p1, pr.unk, pr.bos))
    assert "int8 matrix" in why
    assert loading < unpacking + n * n * 4 // 4  # never the (n, n) float32 square the broadcast asked for
    ff_tiny = {"e": tiny["e"], "e_scale": tiny["e_scale"], "w": tiny["wx"], "w_scale": tiny["wx_scale"]}
    with pytest.raises(TwinStoreError, match="int8 matrix"):
        rnn.load_neural(blob.pack(neural.MAGIC, 1, {**ff_tiny, "b": tiny["bx"], "c": tiny["c"]}, {}), pr.p1, 0, 1)
    good = packed(pr, seed=1)
    vn = pr.v - 5
    for bad in (
        {"c": np.full(vn, np.nan, np.float32)},
        {"bh": np.full(36, np.inf, np.float32)},
        {"e_scale": np.full(vn, np.nan, np.float32)},
        {"wh_scale": np.full(12, 3e36, np.float32)},
        {"c": np.zeros(vn, np.float64)},
    ):
        with pytest.raises(TwinStoreError):
            rnn.load_neural(_repacked(good, rnn.MAGIC, **bad), pr.p1, pr.unk, pr.bos)
    rng = np.random.default_rng(2)
    ff_good = neural.pack(rng.standard_normal((vn, 8)), rng.standard_normal((24, 8)), np.zeros(8), np.zeros(vn), {})
    for bad in ({"c": np.full(vn, np.nan, np.float32)}, {"w_scale": np.full(24, np.nan, np.float32)}):
        with pytest.raises(TwinStoreError):
            rnn.load_neural(_repacked(ff_good, neural.MAGIC, **bad), pr.p1, pr.unk, pr.bos)
    assert isinstance(rnn.load_neural(ff_good, pr.p1, pr.unk, pr.bos), neural.NeuralLM)


def test_export_holds_every_learned_number_the_neural_adaptation_included() -> None:
    """`village twin export` says it prints everything learned: the GRU adapter, output bias and carried context
    (numbers derived from the user's text, kept in state.bin) and the next-action weights are in it, as JSON."""
    pr = tiny_prior()
    eng = TwinEngine(pr, neural=model(pr), gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, "message.send", i))
    nn = eng.neural
    assert isinstance(nn, rnn.RecurrentLM) and nn.a_w.any()
    out = json.loads(json.dumps(eng.export(), allow_nan=False))
    adaptation = out["neural_adaptation"]
    assert sorted(adaptation["arrays"]) == ["nn_b", "nn_c", "nn_s", "nn_w"] and adaptation["model"] == nn.model_id
    np.testing.assert_allclose(np.asarray(adaptation["arrays"]["nn_w"]), nn.a_w, atol=1e-6)
    np.testing.assert_allclose(np.asarray(adaptation["arrays"]["nn_s"]), nn.s_msg, atol=1e-6)
    assert np.asarray(out["action_weights"]["act_w"]).size > 0


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
