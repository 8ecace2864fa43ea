"""Model calls grouped by length (Embedder.plan): sorted so a call pads little, at most ``batch_size`` texts and
``batch_tokens`` padded word pieces each, and the vectors bit-identical whatever the grouping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node.rag.embed import Embedder, EmbedderSettings

SHORT = [f"Gene {i} is expressed in the liver." for i in range(10)]
LONG = [
    ("The p53 tumour suppressor regulates apoptosis in T-cells after DNA damage. " * 6) + f"Cohort {i}."
    for i in range(3)
]
MEDIUM = ["IL-6 and TNF-alpha levels rose in the cohort of patients treated with the new inhibitor. " * 3]
TEXTS = [LONG[0], *SHORT[:4], LONG[1], *SHORT[4:7], LONG[2], *SHORT[7:], *MEDIUM]  # mixed lengths


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model")


def _embedder(cache: Path, batch: int, tokens: int | None) -> Embedder:
    return Embedder(EmbedderSettings(intra_op_threads=1, batch_size=batch, batch_tokens=tokens, cache_dir=cache))


def test_the_plan_sorts_by_length_and_bounds_texts_and_padded_tokens(cache: Path) -> None:
    e = _embedder(cache, 8, 256)
    counts = e.token_counts(TEXTS)
    assert max(counts) == 120 and min(counts) == 10  # word pieces with [CLS] and [SEP]
    plan = e.plan(TEXTS)
    assert sorted(i for call in plan for i in call) == list(range(len(TEXTS)))  # every text exactly once
    flat = [counts[i] for call in plan for i in call]
    assert flat == sorted(flat)  # ascending: each call holds texts of similar length
    for call in plan:
        assert len(call) <= 8 and len(call) * max(counts[i] for i in call) <= 256
    # Short texts go eight to a call, the medium one with the last two short ones, the long ones two at a time.
    assert [len(c) for c in plan] == [8, 3, 2, 1]
    assert [max(counts[i] for i in c) for c in plan] == [10, 68, 120, 120]
    # Without a token budget only the count bounds a call; the settings' values are overridden per call.
    assert [len(c) for c in e.plan(TEXTS, batch_tokens=1 << 20)] == [8, 6]
    assert [len(c) for c in e.plan(TEXTS, batch_size=3, batch_tokens=1 << 20)] == [3, 3, 3, 3, 2]
    assert e.plan([]) == []


def test_vectors_are_bit_identical_whatever_the_grouping(cache: Path) -> None:
    alone = np.stack([_embedder(cache, 1, None).embed([t])[0] for t in TEXTS])
    for batch, tokens in ((8, 256), (32, None)):
        vecs = _embedder(cache, batch, tokens).embed(TEXTS)
        assert vecs.shape == (len(TEXTS), 384)
        assert np.array_equal(vecs, alone), (batch, tokens)
