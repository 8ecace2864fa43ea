"""A bounded, time-expiring set of seen packets, keyed as BitChat keys them.

BitChat (BLE/BLEReceivePipeline.swift, BITCHAT.md §5): key = ``senderHex-timestampDecimal-typeDecimal-
hex(SHA-256(payload)[0:4])``; entries live 300 s; at 1000 entries the cache is trimmed to 750 (the oldest go).
TTL is not part of the key, so the same packet relayed with a lower TTL is still a duplicate.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict


def dedupe_key(sender_id: bytes, timestamp_ms: int, msg_type: int, payload: bytes) -> str:
    return f"{sender_id.hex()}-{timestamp_ms}-{msg_type}-{hashlib.sha256(payload).digest()[:4].hex()}"


class DedupeCache:
    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.trim_to = max(1, max_entries * 3 // 4)  # BitChat trims 1000 → 750
        self._seen: OrderedDict[str, float] = OrderedDict()  # key → expiry, oldest first
        # The oldest entry expires no earlier than this (-inf: unknown, look): a packet that finds nothing to expire
        # pays one comparison instead of a look at the cache's head. Exactly as eager as :meth:`expire` each time.
        self._next_expiry = math.inf

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, key: str, now: float) -> bool:
        """True if ``key`` is new (and remember it); False if it was seen within the TTL."""
        if now >= self._next_expiry:
            self.expire(now)
        seen = self._seen
        if key in seen:
            return False
        seen[key] = expiry = now + self.ttl_s
        if expiry < self._next_expiry:  # (only when the cache was empty, or the clock went back)
            self._next_expiry = expiry
        if len(seen) > self.max_entries:
            while len(seen) > self.trim_to:
                seen.popitem(last=False)
            self._next_expiry = -math.inf  # a new oldest entry
        return True

    def seen(self, key: str, now: float) -> bool:
        """True if ``key`` was added and has not expired (a read-only check)."""
        expiry = self._seen.get(key)
        return expiry is not None and expiry > now

    def discard(self, key: str) -> None:
        if self._seen.pop(key, None) is not None:
            self._next_expiry = -math.inf  # (it may have been the oldest)

    def expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            key, expiry = next(iter(seen.items()))
            if expiry > now:
                self._next_expiry = expiry
                return
            del seen[key]
        self._next_expiry = math.inf
