from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from node.twin import neural
from node.twin.errors import TwinStoreError
from node.twin.neural import NeuralLM

from .helpers import tiny_prior


def random_model(vn: int, d: int = 8, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return neural.pack(
        rng.standard_normal((vn, d)) * 0.3,
        rng.standard_normal((3 * d, d)) * 0.3,
        np.zeros(d),
        np.zeros(vn),
        {"params": 0},
    )


def test_int8_quantisation_is_close() -> None:
    m = np.random.default_rng(1).standard_normal((20, 16)).astype(np.float32)
    q, s = neural.quantize_rows(m)
    assert q.dtype == np.int8
    np.testing.assert_allclose(q * s[:, None], m, atol=float(np.abs(m).max()) / 127)


def test_probabilities_cover_the_vocabulary_and_adaptation_learns() -> None:
    pr = tiny_prior()
    vn = pr.v - 5  # the last five prior words are outside the neural vocabulary
    nn = NeuralLM(random_model(vn), pr.p1, pr.unk, pr.bos)
    cand = np.asarray([i for i in range(1, pr.v) if i != pr.unk], dtype=np.int64)  # unk's mass is the rare words'
    hist = pr.ids(["how", "are"])
    assert float(nn.probs(hist, cand).sum()) == pytest.approx(1.0, abs=1e-4)
    target = pr.index["thanks"]
    before = nn.probs(hist, np.asarray([target]))[0]
    for _ in range(20):
        nn.adapt(hist, target, 0.1)
    assert nn.probs(hist, np.asarray([target]))[0] > 3 * before
    state = nn.state()
    fresh = NeuralLM(random_model(vn), pr.p1, pr.unk, pr.bos)
    fresh.load_state(state)
    np.testing.assert_allclose(fresh.probs(hist, cand), nn.probs(hist, cand), rtol=1e-5)
    nn.reset()
    assert nn.probs(hist, np.asarray([target]))[0] == pytest.approx(before, rel=1e-6)


def test_bad_model_file_refused() -> None:
    pr = tiny_prior()
    with pytest.raises(TwinStoreError):
        NeuralLM(b"AVTN\x00\x01\x00\x00\x00\x02{}", pr.p1, pr.unk, pr.bos)


def test_the_batched_step_matches_the_per_token_steps_and_learns() -> None:
    """adapt_batch from the predictions' own forward passes: the same step as adapt() for one token, close to
    adapt() token by token for a message, and it raises the targets' probability."""
    pr = tiny_prior()
    vn = pr.v - 5
    seq = pr.ids(["how", "are", "you", "thanks"])
    hist_targets = [(seq[:i], seq[i]) for i in range(1, len(seq))]

    def forwards(nn: NeuralLM, weight: float) -> list[tuple[Any, Any, Any, int, float]]:
        out = []
        for hist, t in hist_targets:
            x, h, p = nn._forward(hist)
            out.append((x, h, p, t, weight))
        return out

    one_a, one_b = (NeuralLM(random_model(vn), pr.p1, pr.unk, pr.bos) for _ in range(2))
    x, h, p = one_a._forward(hist_targets[0][0])
    one_a.adapt_batch([(x, h, p.copy(), hist_targets[0][1], 1.0)], 0.1, bias=True)
    one_b.adapt(hist_targets[0][0], hist_targets[0][1], 0.1, bias=True)
    np.testing.assert_allclose(one_a.w, one_b.w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one_a.c, one_b.c, rtol=1e-5, atol=1e-7)

    seq_nn, batch_nn = (NeuralLM(random_model(vn), pr.p1, pr.unk, pr.bos) for _ in range(2))
    before = [float(batch_nn.probs(hh, np.asarray([t]))[0]) for hh, t in hist_targets]
    for hh, t in hist_targets:
        seq_nn.adapt(hh, t, 0.01, bias=False)
    fw = forwards(batch_nn, 1.0)
    kept = [f[2].copy() for f in fw]
    assert batch_nn.adapt_batch(fw, 0.01) == len(hist_targets)
    assert all(np.array_equal(f[2], k) for f, k in zip(fw, kept, strict=True))  # the callers' arrays untouched
    np.testing.assert_allclose(batch_nn.w - batch_nn.w0, seq_nn.w - seq_nn.w0, rtol=0.05, atol=1e-5)
    for _ in range(30):
        batch_nn.adapt_batch(forwards(batch_nn, 2.0), 0.05, bias=True)
    after = [float(batch_nn.probs(hh, np.asarray([t]))[0]) for hh, t in hist_targets]
    assert all(a > 2 * b for a, b in zip(after, before, strict=True)), (before, after)
    assert batch_nn.adapt_batch([], 0.05) == 0
