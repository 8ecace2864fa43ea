"""The dedupe cache: BitChat's key, expiry and 1000 → 750 trimming."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from hypothesis import example, given, settings
from hypothesis import strategies as st

from node.routing.dedupe import DedupeCache, dedupe_key


def test_key_matches_bitchat_format() -> None:
    payload = b"hello"
    key = dedupe_key(bytes.fromhex("a1b2c3d4e5f60718"), 1700000000000, 2, payload)
    assert key == f"a1b2c3d4e5f60718-1700000000000-2-{hashlib.sha256(payload).hexdigest()[:8]}"


def test_seen_within_ttl_then_forgotten() -> None:
    cache = DedupeCache(ttl_s=300, max_entries=1000)
    assert cache.check_and_add("k", now=0.0)
    assert not cache.check_and_add("k", now=299.0)
    assert cache.check_and_add("k", now=300.0)


def test_trims_oldest_to_three_quarters() -> None:
    cache = DedupeCache(ttl_s=300, max_entries=1000)
    for i in range(1001):
        assert cache.check_and_add(f"k{i}", now=0.0)
    assert len(cache) == 750
    assert cache.check_and_add("k0", now=0.0)  # the oldest were dropped...
    assert not cache.check_and_add("k1000", now=0.0)  # ...the newest kept


class _EagerCache:
    """The cache as it was written before its expiry became lazy: every check_and_add looks at the oldest entries."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s, self.max_entries, self.trim_to = ttl_s, max_entries, max(1, max_entries * 3 // 4)
        self.seen: OrderedDict[str, float] = OrderedDict()

    def check_and_add(self, key: str, now: float) -> bool:
        while self.seen:
            oldest, expiry = next(iter(self.seen.items()))
            if expiry > now:
                break
            del self.seen[oldest]
        if key in self.seen:
            return False
        self.seen[key] = now + self.ttl_s
        if len(self.seen) > self.max_entries:
            while len(self.seen) > self.trim_to:
                self.seen.popitem(last=False)
        return True


# (a clock step back, then the oldest entry leaves by a discard / by a trim, with an expired entry behind it)
@example([("add", 0, 10), ("add", 1, -10), ("add", 2, 22), ("discard", 0, 0), ("add", 1, 2)])
@example(
    [("add", 0, 10), ("add", 2, 0), ("add", 3, 0), ("add", 1, -10), ("add", 4, 22)]
    + [("add", k, 0) for k in range(5, 9)]
    + [("add", 1, 2)]
)
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "add", "add", "discard", "seen"]), st.integers(0, 12), st.integers(-3, 40)),
        max_size=120,
    )
)
def test_lazy_expiry_answers_as_the_eager_one(ops: list[tuple[str, int, int]]) -> None:
    """check_and_add skips the look at the oldest entry until one can have expired (one comparison per packet); it
    must answer, and hold, exactly what the eager version did — also after discards and trims change the oldest
    entry, and with a clock that steps back."""
    cache, eager = DedupeCache(ttl_s=10, max_entries=8), _EagerCache(10, 8)
    now = 0.0
    for op, k, step in ops:
        now += step / 2  # mostly forward, sometimes back
        key = f"k{k}"
        if op == "add":
            assert cache.check_and_add(key, now) == eager.check_and_add(key, now)
        elif op == "discard":
            cache.discard(key)
            eager.seen.pop(key, None)
        else:
            expiry = eager.seen.get(key)
            assert cache.seen(key, now) == (expiry is not None and expiry > now)
        assert len(cache) == len(eager.seen)
