"""The always-on statistics' fast paths (session 6, twingate3) learn exactly what the per-token paths learned:
the personal KN counts and the recency cache per message with the per-token work inlined, and the neural output
bias step summing the message's distributions before subtracting its targets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from node.twin import cache as cache_mod
from node.twin import model
from node.twin.cache import RecencyCache
from node.twin.gate import MAX_THRESHOLD_BITS, MessageGate
from node.twin.model import TwinLM
from node.twin.neural import NeuralLM
from node.twin.personal import PersonalKN
from node.twin.tokens import message_tokens

from .helpers import tiny_prior
from .test_neural import random_model

_PERSONAL_FIELDS = ("f3", "s3", "f2", "s2", "f1", "s1", "coc", "d", "trigrams", "tokens")


def _messages(seed: int, n: int, vocab: int, longest: int = 9) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randint(1, vocab) for _ in range(rng.randint(0, longest))] for _ in range(n)]


def test_personal_counts_per_message_equal_the_per_token_path() -> None:
    fast, slow = PersonalKN(0), PersonalKN(0)
    # a small vocabulary so trigrams recur 1, 2, 3, 4, 5+ times (every branch of the count-of-counts update)
    for ids in _messages(1, 4000, 12):
        fast.add_message(ids)
        h = [0, 0, *ids]
        for i in range(2, len(h)):
            slow.add(h[i - 2], h[i - 1], h[i])
        slow.tick(len(ids))
    for name in _PERSONAL_FIELDS:
        assert getattr(fast, name) == getattr(slow, name), name
    assert max(max(f.values()) for f in fast.f3.values()) >= 5
    assert fast.probs(3, 4, range(1, 13), 20) == slow.probs(3, 4, range(1, 13), 20)


@pytest.mark.parametrize(("decay", "max_entries", "rescale_at"), [(0.995, 20_000, 1e30), (0.5, 40, 1e6)])
def test_recency_cache_per_message_equals_the_per_token_path(
    decay: float, max_entries: int, rescale_at: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_mod, "RESCALE_AT", rescale_at)  # the second case rescales and prunes often
    fast = RecencyCache(0, decay=decay, max_entries=max_entries)
    slow = RecencyCache(0, decay=decay, max_entries=max_entries)
    rescales = 0
    for ids in _messages(2, 3000, 60):
        before = fast.scale
        fast.add_message(ids)
        rescales += fast.scale < before
        v = 0
        for w in ids:
            slow.add(v, w)
            v = w
        for name in ("scale", "c1", "tot1", "c2", "tot2", "n2"):
            assert getattr(fast, name) == getattr(slow, name), name
    if rescale_at < 1e30:
        assert rescales > 0 and len(fast.c1) <= max_entries and fast.n2 <= max_entries


def test_the_bias_step_sums_like_the_per_token_loop() -> None:
    pr = tiny_prior()
    vn = pr.v - 5
    nn = NeuralLM(random_model(vn), pr.p1, pr.unk, pr.bos)
    rng = np.random.default_rng(3)
    seen = []
    for _ in range(12):
        p = rng.random(vn).astype(np.float32)
        seen.append((p / p.sum(), int(rng.integers(1, pr.v))))  # targets outside the neural vocabulary too
    seen.append((seen[0][0], seen[0][1]))  # a repeated target is subtracted twice
    old = np.zeros_like(nn.c)
    for p, t in seen:  # the per-token loop the step used before
        old += p
        old[t if t < vn else pr.unk] -= 1.0
    np.testing.assert_allclose(nn.bias_gradient(seen), old, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nn.bias_gradient(seen, np.stack([p for p, _ in seen])), old, rtol=1e-5, atol=1e-6)
    c0 = nn.c.copy()
    nn.adapt_bias(seen, 0.1)
    np.testing.assert_allclose(nn.c, c0 - 0.1 * old, rtol=1e-5, atol=1e-6)
    nn.adapt_bias([], 0.1)  # nothing seen: nothing moves
    np.testing.assert_allclose(nn.c, c0 - 0.1 * old, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batched", [False, True])
def test_the_bias_step_from_the_prediction_rows_equals_the_per_token_loop(batched: bool) -> None:
    """TwinLM's output-bias step sums the distributions its predictions wrote into one block per message (sized
    to the message by observe, grown past BIAS_BLOCK_ROWS when learn_weights is called without it): the same c as
    the per-token loop over each prediction's p, with the shipped batched steps (the queued forward passes alias
    the block's rows) or without, for a message past MAX_SEEN tokens too (review twingate3 #4)."""
    pr = tiny_prior()
    data = random_model(pr.v - 5)
    words = [w for w in pr.vocab[3:] if w.isalpha()]
    rng = random.Random(5)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(30)]
    long_text = " ".join(rng.choice(words) for _ in range(model.BIAS_BLOCK_ROWS * 2 + 7))
    texts.insert(5, long_text)  # learned below without observe's size hint: its block grows twice
    texts.insert(9, " ".join(rng.choice(words) for _ in range(model.MAX_SEEN + 20)))  # rows past MAX_SEEN: none
    fast_nn = NeuralLM(data, pr.p1, pr.unk, pr.bos)
    fast = TwinLM(pr, neural=fast_nn, batched_steps=batched)
    slow_nn = NeuralLM(data, pr.p1, pr.unk, pr.bos)
    slow = TwinLM(pr, neural=slow_nn, batched_steps=False, bias_always=False)  # the bias step done by hand below
    never = MessageGate(0.01, score="edge", threshold_bits=MAX_THRESHOLD_BITS, step_bits=0.0)
    for text in texts:
        if text is long_text:
            fids = fast.ids(message_tokens(text), add=True)
            fast_bits = [fast.learn_weights(fids[:i], t) for i, t in enumerate(fids)]
            assert fast._pblock is not None and len(fast._pblock) == model.BIAS_BLOCK_ROWS * 4
            fast.learn_counts(fids)
            fast.adapt_neural(fids, fast.gate_weights(never, fast_bits))
        else:
            fast_bits = fast.observe(text, gate=never)
        ids = slow.ids(message_tokens(text), add=True)
        g = np.zeros_like(slow_nn.c)
        slow_bits = []
        for i, t in enumerate(ids):
            slow_bits.append(slow.learn_weights(ids[:i], t))
            assert slow_nn.last_p is not None
            if i < model.MAX_SEEN:
                g += slow_nn.last_p
                g[t if t < slow_nn.vn else pr.unk] -= 1.0
        slow_nn.c -= slow.neural_lr * g
        slow.learn_counts(ids)
        np.testing.assert_allclose(fast_bits, slow_bits, rtol=1e-4)
        np.testing.assert_allclose(fast_nn.c, slow_nn.c, rtol=1e-4, atol=1e-5)
    assert fast_nn.updates == 0 and float(np.abs(fast_nn.c - fast_nn.c0).max()) > 1e-3  # the bias alone learned
