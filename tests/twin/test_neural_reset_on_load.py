"""A state file whose neural adaptation cannot be used (session 7's known limit): only the neural tier starts again
from the shipped model, with a note in status and in the log; the counts, words, recency cache, mixture weights and
action head load. (Before, the whole file was set aside as state.bin.bad and all of that was lost with it.)"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from node.twin import neural, rnn, store
from node.twin.engine import Event, TwinEngine
from node.twin.model import MU_INIT
from node.twin.service import TwinService
from node.twin.settings import TwinSettings

from .helpers import tiny_prior
from .test_rnn import TEXTS, model
from .test_service import Power, fake_embed

Arrays = dict[str, np.ndarray[Any, Any]]
D = 12  # the test model's state size (tests.twin.test_rnn.model)

DAMAGED: dict[str, Callable[[Arrays], None]] = {
    # finite but beyond MAX_ADAPTER: every prediction would overflow into NaN
    "adapter past MAX_ADAPTER": lambda a: a.__setitem__("x_nn_w", np.full_like(a["x_nn_w"], 3e38)),
    "adapter just past MAX_ADAPTER": lambda a: a.__setitem__(
        "x_nn_w", np.full_like(a["x_nn_w"], 1.01 * rnn.MAX_ADAPTER / D)
    ),
    "adapter bias past MAX_ADAPTER": lambda a: a.__setitem__("x_nn_b", np.full_like(a["x_nn_b"], 2 * rnn.MAX_ADAPTER)),
    "output bias NaN": lambda a: a.__setitem__("x_nn_c", np.full_like(a["x_nn_c"], np.nan)),
    "adapter infinite": lambda a: a.__setitem__("x_nn_w", np.full_like(a["x_nn_w"], np.inf)),
    "output bias past float32": lambda a: a.__setitem__("x_nn_c", np.full(a["x_nn_c"].shape, 1e300)),
    "context state outside [-1, 1]": lambda a: a.__setitem__("x_nn_s", np.full_like(a["x_nn_s"], 5.0)),
    "context state NaN": lambda a: a.__setitem__("x_nn_s", np.full_like(a["x_nn_s"], np.nan)),
    "adapter of another shape": lambda a: a.__setitem__("x_nn_w", np.zeros((D, D - 1), np.float32)),
    "output bias of another length": lambda a: a.__setitem__("x_nn_c", np.zeros(7, np.float32)),
    "context state of another length": lambda a: a.__setitem__("x_nn_s", np.zeros(D + 1, np.float32)),
}


def _learned() -> TwinEngine:
    pr = tiny_prior()
    eng = TwinEngine(pr, neural=model(pr), gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, "messages.send", i))
    eng.observe(Event("message", "the zorblat club meets at nine", "messages.send", 99))  # a word of the user's own
    assert isinstance(eng.neural, rnn.RecurrentLM) and eng.neural.a_w.any() and eng.lm.words
    eng.lm.mu = 0.55  # a learned weight of the tier (it goes with the adaptation)
    return eng


def _damage(data: bytes, how: Callable[[Arrays], None]) -> bytes:
    arrays, meta = store.unpack_state(data, max_bytes=1 << 30)
    arrays = dict(arrays)
    how(arrays)
    return store.pack_state(arrays, meta)


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_neural_adaptation_resets_the_neural_tier_alone(case: str) -> None:
    eng = _learned()
    bad = _damage(eng.encode(10_000_000), DAMAGED[case])
    pr = eng.prior
    assert pr is not None
    back = TwinEngine(pr, neural=model(pr))
    back.decode(bad, 10_000_000)  # loads: nothing is set aside
    nn = back.neural
    assert isinstance(nn, rnn.RecurrentLM)
    # the neural tier is the shipped model: no adapter, the shipped output bias, no carried context, default weight
    assert not nn.a_w.any() and not nn.a_b.any() and not nn.s_msg.any()
    np.testing.assert_array_equal(nn.c, nn.c0)
    assert back.lm.mu == MU_INIT and back.lm.mu_n == 0 and back.neural_updates == 0
    reason = back.status()["neural"]["reset"]
    assert reason is not None and "could not be used" in reason and "shipped model" in reason, reason
    # everything else the user taught is kept
    assert back.lm.personal.to_arrays()["tri"].tolist() == eng.lm.personal.to_arrays()["tri"].tolist()
    assert back.lm.words == eng.lm.words and back.lm.messages == eng.lm.messages > 0
    assert back.lm.lam == eng.lm.lam and back.events == eng.events
    assert back.lm.recency is not None and eng.lm.recency is not None
    assert back.lm.recency.to_arrays().keys() == eng.lm.recency.to_arrays().keys()
    for name, arr in eng.lm.recency.to_arrays().items():
        np.testing.assert_array_equal(back.lm.recency.to_arrays()[name], arr)
    for name, arr in eng.actions.state().items():
        np.testing.assert_array_equal(back.actions.state()[name], arr)
    assert back.actions.actions == eng.actions.actions
    # and it goes on: predictions are numbers, the next save loads whole with nothing to report
    assert all(np.isfinite(s["p"]) for s in back.suggest("how are ", 3))
    again = TwinEngine(pr, neural=model(pr))
    again.decode(back.encode(10_000_000), 10_000_000)
    assert again.status()["neural"]["reset"] is None and again.lm.messages == eng.lm.messages


def test_a_feed_forward_adaptation_of_another_shape_resets_that_tier_alone() -> None:
    """The same for the feed-forward tier (its load_state raises on shapes and on float32 overflow)."""
    pr = tiny_prior()
    rng = np.random.default_rng(3)
    vn, d = pr.v - 5, 8
    ff_data = neural.pack(
        rng.standard_normal((vn, d)) * 0.3, rng.standard_normal((3 * d, d)) * 0.3, np.zeros(d), np.zeros(vn), {}
    )

    def ff() -> neural.NeuralLM:
        lm = rnn.load_neural(ff_data, pr.p1, pr.unk, pr.bos)
        assert isinstance(lm, neural.NeuralLM)
        return lm

    eng = TwinEngine(pr, neural=ff(), gate_fraction=1.0)
    for i, t in enumerate(TEXTS):
        eng.observe(Event("message", t, None, i))
    for how in (
        lambda a: a.__setitem__("x_nn_w", np.zeros((3, 3), np.float32)),
        lambda a: a.__setitem__("x_nn_b", np.full(d, 1e300)),
    ):
        back = TwinEngine(pr, neural=ff())
        back.decode(_damage(eng.encode(10_000_000), how), 10_000_000)
        assert isinstance(back.neural, neural.NeuralLM)
        np.testing.assert_array_equal(back.neural.w, back.neural.w0)
        np.testing.assert_array_equal(back.neural.b, back.neural.b0)
        assert back.lm.personal.tokens == eng.lm.personal.tokens > 0
        assert "could not be used" in (back.status()["neural"]["reset"] or "")


async def test_the_service_keeps_the_file_and_says_why_in_status_and_the_log(tmp_path: Path, caplog: Any) -> None:
    """Through the service, on the shipped model: the state file is not moved aside, load_error stays empty, status
    (what `village twin status` prints as a note) says why the neural tier restarted, and the log says it too."""

    def make(d: Path) -> TwinService:
        settings = TwinSettings(neural=True, poll_interval_s=60, save_interval_s=3600)
        return TwinService(settings, d, battery_reader=Power(90, True), thermal_reader=lambda: 35.0, embed=fake_embed)

    svc = make(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "hello there friend of the zorblat club", action="messages.send")
        svc.record("message", "see you at the zorblat club tonight", action="messages.send")
        await svc.idle.wait()
        assert await svc.save_now() > 0
        n.cancel_scope.cancel()
    svc.path.write_bytes(_damage(svc.path.read_bytes(), DAMAGED["adapter past MAX_ADAPTER"]))
    again = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="village.twin"):
        async with trio.open_nursery() as n:
            await n.start(again.run, None)
            await again.suggest("see you at the ")  # the language model (and the neural tier) loads at its first use
            st = await again.status()
            n.cancel_scope.cancel()
    assert st["load_error"] is None and st["messages_learned"] == 2 and st["personal_words"] >= 1, st
    reason = st["neural"]["reset"]
    assert reason is not None and "adapter out of range" in reason, st
    assert not list(tmp_path.glob("twin/state.bin.bad*")) and again.path.exists()
    assert any("neural tier" in r.getMessage() and "adapter out of range" in r.getMessage() for r in caplog.records)
