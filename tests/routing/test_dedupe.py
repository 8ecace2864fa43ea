"""The dedupe cache: BitChat's key, expiry and 1000 → 750 trimming."""

from __future__ import annotations

import hashlib

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
