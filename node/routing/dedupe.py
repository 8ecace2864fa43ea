"""A bounded, time-expiring set of seen packets, keyed as BitChat keys them.

BitChat (BLE/BLEReceivePipeline.swift, BITCHAT.md §5): key = ``senderHex-timestampDecimal-typeDecimal-
hex(SHA-256(payload)[0:4])``; entries live 300 s; at 1000 entries the cache is trimmed to 750 (the oldest go).
TTL is not part of the key, so the same packet relayed with a lower TTL is still a duplicate.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict


def dedupe_key(sender_id: bytes, timestamp_ms: int, msg_type: int, payload: bytes) -> str:
    return f"{sender_id.hex()}-{timestamp_ms}-{msg_type}-{hashlib.sha256(payload).digest()[:4].hex()}"


class DedupeCache:
    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.trim_to = max(1, max_entries * 3 // 4)  # BitChat trims 1000 → 750
        self._seen: OrderedDict[str, float] = OrderedDict()  # key → expiry, oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, key: str, now: float) -> bool:
        """True if ``key`` is new (and remember it); False if it was seen within the TTL."""
        self.expire(now)
        if key in self._seen:
            return False
        self._seen[key] = now + self.ttl_s
        if len(self._seen) > self.max_entries:
            while len(self._seen) > self.trim_to:
                self._seen.popitem(last=False)
        return True

    def seen(self, key: str, now: float) -> bool:
        """True if ``key`` was added and has not expired (a read-only check)."""
        expiry = self._seen.get(key)
        return expiry is not None and expiry > now

    def discard(self, key: str) -> None:
        self._seen.pop(key, None)

    def expire(self, now: float) -> None:
        while self._seen:
            key, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[key]
