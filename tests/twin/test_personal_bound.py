"""The personal trigram counts in memory are bounded (entries) by the rule the saved file uses: past the bound the
rarest trigrams go (seen once, then fewer than 2, 3, 5, ... times), and what is derived from them is rebuilt."""

from __future__ import annotations

import random

import numpy as np
import pytest

from node.twin import personal, store
from node.twin.engine import Event, TwinEngine
from node.twin.personal import PersonalKN, rarest_dropped
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
    assert m.f3[(0, 0)][7] == 300 and m.f3[(7, 8)][9] == 300
    a = m.to_arrays()  # and the pruned model is exactly the one its counts load to
    back = PersonalKN.from_arrays(0, a["tri"], a["tri_counts"])
    assert (back.f3, back.s3, back.f2, back.s2, back.f1, back.s1) == (m.f3, m.s3, m.f2, m.s2, m.f1, m.s1)
    assert back.coc == m.coc and back.d == m.d
    assert back.probs(7, 8, range(1, 20), 100) == m.probs(7, 8, range(1, 20), 100)


def test_the_rarest_go_first_by_the_saved_files_steps() -> None:
    counts = np.array([1, 1, 2, 3, 5, 1, 8, 2], dtype=np.int32)
    assert rarest_dropped(counts, 8).tolist() == [True] * 8
    assert rarest_dropped(counts, 5).tolist() == [c >= 2 for c in counts.tolist()]
    assert rarest_dropped(counts, 4).tolist() == [c >= 3 for c in counts.tolist()]
    assert rarest_dropped(counts, 2).tolist() == [c >= 5 for c in counts.tolist()]
    huge = np.array([100, 90, 200, 95], dtype=np.int32)  # every step leaves too many: the most frequent stay
    assert rarest_dropped(huge, 2).tolist() == [True, False, True, False]
    with pytest.raises(ValueError):
        PersonalKN(0, max_trigrams=0)


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
    assert 0 < kept.trigrams <= 20 and all(c >= 2 for f in kept.f3.values() for c in f.values())
    assert PersonalKN(0).max_trigrams == personal.MAX_TRIGRAMS  # the default bound the engine's model runs with
