from __future__ import annotations

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
