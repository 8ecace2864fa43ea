"""The personal trigram counts in memory are bounded (entries): past the bound the rarest trigrams go until exactly
3/4 of the bound remain (the commonest; ties kept for the latest learned), and what is derived from them is
rebuilt."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest

from node.twin import personal, store
from node.twin.engine import Event, TwinEngine
from node.twin.personal import PersonalKN, ctx_key, rarest_dropped
from node.twin.prior import GlobalPrior


def _entries(m: PersonalKN) -> tuple[int, int]:
    return sum(len(f) for f in m.f3.values()), sum(len(f) for f in m.f2.values())


def test_a_long_stream_of_distinct_trigrams_stays_under_the_bound() -> None:
    """Before: f3/s3/f2/s2 grew with every new trigram for the process's lifetime (only the file was pruned)."""
    m = PersonalKN(0, max_trigrams=1000)
    rng = random.Random(3)
    pruned = 0
    for i in range(3000):
        before = m.trigrams
        if i % 10 == 0:
            m.add_message([7, 8, 9])  # the user's habit: recurs, so it outlives every prune
        else:
            m.add_message([rng.randint(10, 1_000_000) for _ in range(6)])  # all new
        pruned += m.trigrams < before
        tri, bi = _entries(m)
        assert m.trigrams == tri <= 1000 and len(m.s3) == len(m.f3) <= 1000
        assert bi <= tri and len(m.s2) == len(m.f2) <= 1000
    assert pruned >= 10 and m.tokens == 300 * 3 + 2700 * 6  # (the lifetime token count is a counter: kept)
    assert m.f3[ctx_key(0, 0)][7] == 300 and m.f3[ctx_key(7, 8)][9] == 300
    a = m.to_arrays()  # and the pruned model is exactly the one its counts load to
    back = PersonalKN.from_arrays(0, a["tri"], a["tri_counts"])
    assert (back.f3, back.s3, back.f2, back.s2, back.f1, back.s1) == (m.f3, m.s3, m.f2, m.s2, m.f1, m.s1)
    assert back.coc == m.coc and back.d == m.d
    assert back.probs(7, 8, range(1, 20), 100) == m.probs(7, 8, range(1, 20), 100)


def test_the_rarest_go_first_and_exactly_keep_remain() -> None:
    counts = np.array([1, 1, 2, 3, 5, 1, 8, 2], dtype=np.int32)
    assert rarest_dropped(counts, 8).tolist() == [True] * 8
    assert rarest_dropped(counts, 5).tolist() == [c >= 2 for c in counts.tolist()]
    assert rarest_dropped(counts, 4).tolist() == [False, False, False, True, True, False, True, True]  # the later 2
    assert rarest_dropped(counts, 2).tolist() == [c >= 5 for c in counts.tolist()]
    huge = np.array([100, 90, 200, 95], dtype=np.int32)
    assert rarest_dropped(huge, 2).tolist() == [True, False, True, False]
    with pytest.raises(ValueError):
        PersonalKN(0, max_trigrams=0)


def test_a_prune_keeps_three_quarters_of_the_bound_not_a_count_steps_worth() -> None:
    """Review MEDIUM: dropping every trigram under a count step at once left almost nothing — text whose trigrams
    are nearly all seen once, or a user whose every count is 2, lost (nearly) every learned count."""
    m = PersonalKN(0, max_trigrams=1000)
    rng = random.Random(5)
    for _ in range(200):
        msg = [rng.randint(10, 1_000_000) for _ in range(6)]
        m.add_message(msg)
        m.add_message(msg)  # every count 2
    assert m.trigrams >= int(1000 * personal.PRUNE_TO)  # the old ladder left 0 here (every count is 2)
    last = m.to_arrays()
    assert int(last["tri_counts"].min()) >= 1 and m.trigrams <= 1000


def test_a_loaded_state_over_the_bound_keeps_its_commonest_trigrams(monkeypatch: pytest.MonkeyPatch) -> None:
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    for i in range(40):
        eng.observe(Event("message", f"see you at {i} said the zorblat {i * 7}", "messages.send", 0))
        eng.observe(Event("message", "see you soon", "messages.send", 0))
    data = eng.encode(10_000_000)
    assert eng.lm.personal.trigrams > 100
    monkeypatch.setattr(store, "MAX_TRIGRAMS", 20)
    back = TwinEngine(prior)
    back.decode(data, 10_000_000)
    kept = back.lm.personal
    common = {(h, w) for h, f in eng.lm.personal.f3.items() for w, c in f.items() if c >= 2}
    assert 0 < len(common) < 20 and kept.trigrams == 20
    assert all(kept.f3.get(h, {}).get(w, 0) >= 2 for h, w in common)  # every trigram seen twice or more stays
    assert PersonalKN(0).max_trigrams == personal.MAX_TRIGRAMS  # the default bound the engine's model runs with


_FIELDS = ("f3", "s3", "f2", "s2", "f1", "s1", "coc", "d", "trigrams", "tokens")


def test_the_in_place_prune_gives_the_model_the_kept_counts_load_to() -> None:
    """A prune (in place, session 7) leaves exactly what the session-6 prune built beside the old model: the kept
    trigrams' from_arrays, contexts in the same order, on thousands of random messages with hundreds of prunes
    (a small vocabulary: counts of 1 to 5+, contexts emptied and lower-order types lost)."""
    bound = 300
    m = PersonalKN(0, max_trigrams=bound)
    ref = PersonalKN(0, max_trigrams=10**9)  # the per-token path, pruned the session-6 way below
    rng = random.Random(11)
    prunes = 0
    for _ in range(4000):
        ids = [rng.randint(1, 40) for _ in range(rng.randint(0, 9))]
        m.add_message(ids)
        h = [0, 0, *ids]
        for i in range(2, len(h)):
            ref.add(h[i - 2], h[i - 1], h[i])
        ref.tokens -= len(ids)  # (add counts them; re-added after the rebuild below, as add_message does)
        if ref.trigrams > bound:
            a = ref.to_arrays()
            mask = rarest_dropped(a["tri_counts"], int(bound * personal.PRUNE_TO))
            kept = PersonalKN.from_arrays(0, a["tri"][mask], a["tri_counts"][mask])
            kept.tokens, kept._since_discounts = ref.tokens, ref._since_discounts
            ref = kept
            prunes += 1
        ref.tokens += len(ids)
        ref.tick(len(ids))
        for name in _FIELDS:
            assert getattr(m, name) == getattr(ref, name), name
        assert list(m.f3) == list(ref.f3)  # (the order ties are broken by at the next prune)
        assert [list(f) for f in m.f3.values()] == [list(f) for f in ref.f3.values()]
    assert prunes > 100
    assert m.probs(3, 4, range(1, 41), 50) == ref.probs(3, 4, range(1, 41), 50)


def test_a_prune_does_not_build_the_kept_model_beside_the_old_one() -> None:
    """Review leftover (session 6): the prune built the kept model as a second copy (~+35 MiB for a moment at the
    default bound). In place, its transient Python allocations are a small fraction of the model's."""
    n = 20_000
    rng = np.random.default_rng(2)
    tri = np.stack([np.arange(n) % 5000 + 1, rng.integers(1, 30_000, n), rng.integers(1, 30_000, n)], axis=1)
    counts = np.where(rng.random(n) < 0.3, 2, 1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        m = PersonalKN.from_arrays(0, tri, counts)
        size = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.reset_peak()
        at = tracemalloc.get_traced_memory()[0]
        m.prune(int(n * personal.PRUNE_TO))
        transient = tracemalloc.get_traced_memory()[1] - at
    finally:
        tracemalloc.stop()
    assert m.trigrams == int(n * personal.PRUNE_TO)
    assert transient < size * 0.15, (transient, size)
