"""The KN arithmetic against an independent brute-force implementation, and normalisation."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from node.twin import kn
from node.twin.errors import TwinStoreError
from node.twin.personal import PersonalKN
from node.twin.prior import GlobalPrior
from node.twin.tokens import BOS, EOS, message_tokens

from .helpers import CORPUS, tiny_prior


def brute_force_kn(corpus: list[str], vocab: list[str]) -> dict[tuple[str, str], dict[str, float]]:
    """Interpolated modified KN trigram written out from the textbook (Chen & Goodman 1998), with dicts."""
    tri: Counter[tuple[str, str, str]] = Counter()
    for m in corpus:
        t = [BOS, BOS, *message_tokens(m)]
        for i in range(2, len(t)):
            tri[(t[i - 2], t[i - 1], t[i])] += 1
    bi_cc: Counter[tuple[str, str]] = Counter((v, w) for (_u, v, w) in tri)
    uni_cc: Counter[str] = Counter(w for (_v, w) in bi_cc)

    def disc(counts: Counter) -> tuple[float, float, float]:  # type: ignore[type-arg]
        n = [sum(1 for c in counts.values() if c == i) for i in (1, 2, 3, 4)]
        return kn.discounts(*n)

    d3, d2, d1 = disc(tri), disc(bi_cc), disc(uni_cc)
    targets = [w for w in vocab if w != BOS]

    def level(counts: dict[str, int], d: tuple[float, float, float], lower: dict[str, float]) -> dict[str, float]:
        tot = sum(counts.values())
        gamma = sum(kn.discount_for(c, d) for c in counts.values()) / tot
        return {
            w: max(counts.get(w, 0) - kn.discount_for(counts.get(w, 0), d), 0) / tot + gamma * lower[w] for w in targets
        }

    p1 = level(dict(uni_cc), d1, {w: 1 / len(targets) for w in targets})
    by_v: dict[str, dict[str, int]] = defaultdict(dict)
    for (v, w), c in bi_cc.items():
        by_v[v][w] = c
    by_uv: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for (u, v, w), c in tri.items():
        by_uv[(u, v)][w] = c
    out = {}
    for (u, v), fol in by_uv.items():
        p2 = level(by_v[v], d2, p1) if v in by_v else p1
        out[(u, v)] = level(fol, d3, p2)
    return out


def test_prior_matches_brute_force_kn() -> None:
    pr = tiny_prior()
    ref = brute_force_kn(CORPUS, pr.vocab)
    for (u, v), dist in ref.items():
        words = list(dist)
        got = pr.probs(pr.ids([u, v]), np.asarray(pr.ids(words), dtype=np.int64))
        assert got == pytest.approx([dist[w] for w in words], rel=1e-5)


def test_personal_online_counts_match_the_prior_built_in_batch() -> None:
    pr = tiny_prior()
    pers = PersonalKN(pr.bos)
    for m in CORPUS:
        pers.add_message(pr.ids(message_tokens(m)))
    pers.refresh_discounts()
    cand = np.arange(1, pr.v, dtype=np.int64)
    for ctx in (["how", "are"], ["i", "am"], [BOS, BOS], ["zzz", "hello"], ["going", "well"]):
        h = pr.ids(ctx)
        want = pr.probs(h, cand)
        got = pers.probs(h[0], h[1], cand.tolist(), pr.v - 1)
        assert got == pytest.approx(want.tolist(), rel=1e-6)


@pytest.mark.parametrize("min_count", [(1, 1, 1), (1, 1, 2), (1, 2, 2)])
def test_every_distribution_sums_to_one_even_pruned(min_count: tuple[int, ...]) -> None:
    pr = tiny_prior(min_count=min_count)
    cand = np.arange(1, pr.v, dtype=np.int64)
    for ctx in (["how", "are"], ["i", "am"], [BOS, BOS], ["are", "you"], ["hello", "hello"]):
        assert float(pr.probs(pr.ids(ctx), cand).sum()) == pytest.approx(1.0, abs=1e-6)


def test_four_gram_prior_sums_to_one() -> None:
    pr = tiny_prior(order=4, min_count=(1, 1, 1, 2))
    cand = np.arange(1, pr.v, dtype=np.int64)
    assert float(pr.probs(pr.ids(["how", "are", "you"]), cand).sum()) == pytest.approx(1.0, abs=1e-6)


def test_personal_sums_to_one_and_learns() -> None:
    pers = PersonalKN(0)
    v = 50
    cand = list(range(1, v + 1))
    before = pers.probs(3, 4, [5], v)[0]
    for _ in range(3):
        pers.add_message([3, 4, 5, 1])
    assert math.fsum(pers.probs(3, 4, cand, v)) == pytest.approx(1.0)
    assert pers.probs(3, 4, [5], v)[0] > 10 * before


def test_corrupt_prior_is_refused() -> None:
    from node.twin.prior import GlobalPrior

    with pytest.raises(TwinStoreError):
        GlobalPrior(b"AVTP\x00\x01garbage")
    with pytest.raises(TwinStoreError):
        GlobalPrior(b"nope")


def _key(pr: GlobalPrior, words: list[str]) -> int:
    key = 0
    for i in pr.ids(words):
        key = key * pr.v + i
    return key


def test_pruning_keeps_singleton_trigrams_and_drops_singleton_four_grams() -> None:
    """The shipped prior's settings (scripts/build_twin_prior.py: min counts 1 1 1 2): every trigram of the corpus
    keeps its own probability; a 4-gram seen once leaves its mass to the context's back-off weight."""
    pr = tiny_prior(order=4, min_count=(1, 1, 1, 2))
    once3 = ["doing", "well", EOS]  # "i am doing well" is the only message with it
    once4 = ["am", "doing", "well", EOS]
    thrice4 = [BOS, BOS, "i", "am"]  # three messages start with "i am"
    assert _key(pr, once3) in set(pr.orders[3].keys.tolist())
    assert _key(pr, once4) not in set(pr.orders[4].keys.tolist())
    assert _key(pr, thrice4) in set(pr.orders[4].keys.tolist())
    pruned_more = tiny_prior(order=4, min_count=(1, 1, 2, 2))
    assert _key(pruned_more, once3) not in set(pruned_more.orders[3].keys.tolist())


def test_loaded_prior_keeps_twelve_bytes_per_ngram() -> None:
    """RAM: a loaded prior keeps per n-gram only its key (int64) and its probability term (float32), per context
    its key and back-off weight; the raw counts and context totals are dropped after loading."""
    pr = tiny_prior(order=4, min_count=(1, 1, 1, 1))
    for o in pr.orders.values():
        assert o.num.dtype == np.float32 and len(o.num) == len(o.keys)
        kept = sum(a.nbytes for a in vars_of(o))
        assert kept == 12 * len(o.keys) + 12 * len(o.ctx_keys)


def vars_of(o: object) -> list[np.ndarray]:
    return [getattr(o, name) for name in o.__slots__ if isinstance(getattr(o, name), np.ndarray)]  # type: ignore[attr-defined]
