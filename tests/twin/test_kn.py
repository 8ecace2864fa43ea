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
    assert _key(pr, once3) in set(pr.orders[3].keys(pr.v).tolist())
    assert _key(pr, once4) not in set(pr.orders[4].keys(pr.v).tolist())
    assert _key(pr, thrice4) in set(pr.orders[4].keys(pr.v).tolist())
    pruned_more = tiny_prior(order=4, min_count=(1, 1, 2, 2))
    assert _key(pruned_more, once3) not in set(pruned_more.orders[3].keys(pruned_more.v).tolist())


def test_loaded_prior_keeps_six_bytes_per_ngram() -> None:
    """RAM: a loaded prior keeps per n-gram only its last word (uint16) and its probability term (float32), per
    context its key (int64), back-off weight (float32) and offset (int32); the raw counts, context totals and
    full n-gram keys are dropped after loading, and nothing kept is a view of the decompressed payload (which
    would keep all of it alive: 9 MB for the shipped prior)."""
    pr = tiny_prior(order=4, min_count=(1, 1, 1, 1))
    for o in pr.orders.values():
        assert o.num.dtype == np.float32 and o.words.dtype == np.uint16 and len(o.num) == len(o.words)
        kept = sum(a.nbytes for a in vars_of(o))
        assert kept == 6 * len(o.words) + 16 * len(o.ctx_keys) + 4
        for a in vars_of(o):
            base: object = a
            while base is not None:
                assert not isinstance(base, bytes | bytearray | memoryview)
                base = getattr(base, "base", None)


def _reference_probs(data: bytes, history: list[int], cand: list[int]) -> list[float]:
    """p(w | history) straight from the blob's arrays, one candidate at a time with dicts: the layout-free
    definition the loaded prior's vectorised lookups must match bit for bit (same float32 terms, same order of
    operations)."""
    from node.twin import blob
    from node.twin.prior import FORMAT_VERSION, MAGIC

    arrays, meta = blob.unpack_untrusted(data, MAGIC, FORMAT_VERSION, max_bytes=1 << 28)
    order, v = int(meta["order"]), int(meta["vocab_size"])
    h = ([0] * (order - 1) + list(history))[-(order - 1) :]
    tables = {}
    for k in range(2, order + 1):
        keys = np.cumsum(arrays[f"keys{k}"].astype(np.int64)).tolist()
        counts = arrays[f"counts{k}"].tolist()
        d = [np.float32(x) for x in meta["discounts"][str(k)]]
        ctxs = sorted({key // v for key in keys})
        tot = dict(zip(ctxs, arrays[f"ctx_tot{k}"].tolist(), strict=True))
        gamma = dict(zip(ctxs, arrays[f"ctx_gamma{k}"].tolist(), strict=True))
        num = {}
        for key, c in zip(keys, counts, strict=True):
            disc = d[0] if c == 1 else d[1] if c == 2 else d[2]
            num[key] = (np.float32(c) - disc) / np.float32(tot[key // v])
        tables[k] = (num, gamma)
    out = []
    for w in cand:
        p = float(np.float64(arrays["p1"][w]))
        for k in range(2, order + 1):
            ctx = 0
            for t in h[len(h) - (k - 1) :]:
                ctx = ctx * v + t
            num, gamma = tables[k]
            if ctx not in gamma:
                continue
            p = p * float(np.float32(gamma[ctx])) + float(num.get(ctx * v + w, 0.0))
        out.append(p)
    return out


def test_loaded_prior_gives_the_blobs_probabilities_bit_for_bit() -> None:
    """The compact layout changes where the terms live, not the numbers: every candidate's probability after
    seen and unseen contexts equals the definition computed from the blob with dicts, exactly."""
    from node.twin import prior

    msgs = [message_tokens(m) for m in CORPUS]
    data = prior.build(msgs, prior.BuildSettings(order=4, min_word_count=1, max_vocab=1000, min_count=(1, 1, 1, 2)))
    pr = GlobalPrior(data)
    cand = list(range(pr.v))
    histories = [[], pr.ids(["i"]), pr.ids(["i", "am"]), pr.ids(["am", "doing", "well"]), pr.ids(["zzz", "i"])]
    for h in histories:
        got = pr.probs(h, np.asarray(cand, dtype=np.int64)).tolist()
        assert got == _reference_probs(data, h, cand)
        assert math.fsum(got) == pytest.approx(1.0)
    padded = [[pr.bos] * 3 + h for h in histories]
    seen = {k for h in padded for k in (2, 3, 4) if pr.orders[k].find(pr._ctx_key(h, k)) >= 0}
    assert seen == {2, 3, 4}  # the histories above reach a context of every order: each order's lookup ran


def test_prior_with_unsorted_ngram_keys_is_refused() -> None:
    """A hostile or damaged prior whose n-gram keys are not strictly increasing (the contexts' segments would
    overlap) is refused at load, naming the order, instead of giving wrong or out-of-range lookups later."""
    from node.twin import blob, prior

    msgs = [message_tokens(m) for m in CORPUS]
    data = prior.build(msgs, prior.BuildSettings(order=3, min_word_count=1, max_vocab=1000))
    arrays, meta = blob.unpack_untrusted(data, prior.MAGIC, prior.FORMAT_VERSION, max_bytes=1 << 28)
    arrays = {name: np.array(a) for name, a in arrays.items()}
    deltas = arrays["keys3"]
    deltas[1], deltas[2] = deltas[1] + deltas[2], -deltas[2]  # key 1 jumps past key 2
    with pytest.raises(TwinStoreError, match="order 3"):
        GlobalPrior(blob.pack(prior.MAGIC, prior.FORMAT_VERSION, arrays, meta))
    arrays["keys3"][0] = -1  # a negative key
    with pytest.raises(TwinStoreError, match="order 3"):
        GlobalPrior(blob.pack(prior.MAGIC, prior.FORMAT_VERSION, arrays, meta))


def vars_of(o: object) -> list[np.ndarray]:
    return [getattr(o, name) for name in o.__slots__ if isinstance(getattr(o, name), np.ndarray)]  # type: ignore[attr-defined]
