"""Relay policy (sans-IO): which received packets a node passes on, with what TTL, after what jitter, on which
links. The rules are BitChat's (BITCHAT.md §5, bitchat/Services/RelayController.swift and
BLE/BLEFanoutSelector.swift) so that our relays behave like a phone's:

* never relay when TTL ≤ 1, when we are the sender or the recipient, a REQUEST_SYNC, or a packet that failed
  authentication;
* directed packets: TTL − 1, jitter 10–35 ms for handshakes, 20–60 ms otherwise;
* broadcast fragments: TTL min(TTL, 7; 5 with ≥ 6 links) − 1, jitter 8–25 ms (directed ones as directed);
* broadcasts: TTL − 1 with ≤ 2 links; max(2, min(TTL, 5)) − 1 with ≥ 6 links; otherwise
  max(2, min(TTL, 6)) − 1; announces always TTL − 1 (BitChat cuts them at ≥ 6 links too: see
  :func:`relayed_ttl`); jitter 10–40 / 60–150 / 80–180 / 100–220 ms for
  degree ≤ 2 / 3–5 / 6–9 / ≥ 10;
* fan-out: never back out of the arrival link; a broadcast other than an announce or a fragment goes to a subset
  of ``k = min(n, bitlen(n − 1) + 1)`` links (n > 2): those with the lowest SHA-256(message ID ‖ "::" ‖ link ID).

The relay forwards the **received bytes** with only the TTL byte rewritten (re-encoding could change the deflate
bytes and so break the signature). :class:`RelayQueue` holds relays waiting out their jitter. A copy heard
meanwhile from a link we meant to relay on shows that neighbour has the packet: that link is struck off, and
a relay with no link left is cancelled. (BitChat cancels a pending relay on any duplicate once it has > 2
peers; that loses broadcasts whenever the duplicate's sender did not cover our other neighbours, so we
suppress only what is known to be redundant.)
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass

from node.routing.meshbase import T_ANNOUNCE, T_FRAGMENT, T_NOISE_HANDSHAKE

TTL_OFFSET = 2  # byte index of the TTL in every BitChat header (version, type, TTL, ...)
MAX_TTL = 7


def relayed_ttl(msg_type: int, ttl: int, *, broadcast: bool, degree: int) -> int:
    """The TTL a relay puts on the packet (0 or 1 after this means the next node will not relay it)."""
    if ttl > MAX_TTL:
        ttl = MAX_TTL
    if msg_type == T_FRAGMENT and broadcast:
        return min(ttl, 5 if degree >= 6 else MAX_TTL) - 1
    if not broadcast:
        return ttl - 1
    if degree <= 2:
        return ttl - 1
    if msg_type == T_ANNOUNCE:
        # Deviation from BitChat (which cuts announces to TTL 5 at >= 6 links): announces feed the path table,
        # and cutting them hid peers 6-7 hops away that messages (TTL 7) can still reach.
        return max(2, ttl) - 1
    if degree >= 6:
        return max(2, min(ttl, 5)) - 1
    return max(2, min(ttl, 6)) - 1


def relay_jitter_s(rng: random.Random, msg_type: int, *, broadcast: bool, degree: int) -> float:
    """Seconds to wait before relaying, so that neighbours who heard the same packet do not collide."""
    if msg_type == T_FRAGMENT and broadcast:
        lo, hi = 8, 25
    elif not broadcast:
        lo, hi = (10, 35) if msg_type == T_NOISE_HANDSHAKE else (20, 60)
    elif degree <= 2:
        lo, hi = 10, 40
    elif degree <= 5:
        lo, hi = 60, 150
    elif degree <= 9:
        lo, hi = 80, 180
    else:
        lo, hi = 100, 220
    return (lo + (hi - lo) * rng.random()) / 1000.0  # rng.uniform(lo, hi), without its Python-level call


def fanout_subset(message_key: str, link_ids: list[str]) -> list[str]:
    """BitChat's deterministic broadcast subset: k = min(n, bitlen(n − 1) + 1) links of n (all when n ≤ 2)."""
    n = len(link_ids)
    if n <= 2:
        return list(link_ids)
    k = min(n, (n - 1).bit_length() + 1)
    return sorted(link_ids, key=lambda lid: hashlib.sha256(f"{message_key}::{lid}".encode()).digest())[:k]


def with_ttl(frame: bytes, ttl: int) -> bytes:
    """The received frame with its TTL byte rewritten (the only byte a relay changes)."""
    out = bytearray(frame)
    out[TTL_OFFSET] = ttl
    return bytes(out)


@dataclass(slots=True)
class PendingRelay:
    due: float
    seq: int
    key: str
    frame: bytes
    link_ids: list[str]
    cancelled: bool = False
    prunable: bool = False  # an announce: copies heard strike their senders' neighbours
    track: bool = False  # kept until the next hop acknowledges it (hop ARQ)


class RelayQueue:
    """Relays waiting out their jitter, bounded twice: beyond ``max_entries`` relays or ``max_bytes`` of queued
    frames the new relay is refused (counted by the caller), so a flood of large frames cannot grow memory
    either."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # (due, sequence, relay): tuples compare in C, a heap of dataclasses through a generated __lt__
        self._heap: list[tuple[float, int, PendingRelay]] = []
        self._by_key: dict[str, PendingRelay] = {}
        self._seq = 0
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def queued_bytes(self) -> int:
        """Bytes of the frames still waiting (cancelled relays no longer count)."""
        return self._bytes

    def push(
        self, due: float, key: str, frame: bytes, link_ids: list[str], *, prunable: bool = False, track: bool = False
    ) -> bool:
        if len(self._by_key) >= self.max_entries or self._bytes + len(frame) > self.max_bytes:
            return False
        self._seq += 1
        item = PendingRelay(due, self._seq, key, frame, list(link_ids), False, prunable, track)
        heapq.heappush(self._heap, (due, self._seq, item))
        self._by_key[key] = item
        self._bytes += len(frame)
        return True

    def pending(self, key: str) -> PendingRelay | None:
        return self._by_key.get(key)

    def heard_from(self, key: str, link_id: str) -> bool:
        """A copy of ``key`` arrived on ``link_id``: do not relay it back there. True if that cancelled the
        whole relay (no link left)."""
        return self.strike(key, [link_id])

    def strike(self, key: str, link_ids: list[str]) -> bool:
        """Do not relay ``key`` on ``link_ids`` (their neighbours have it). True if that cancelled the whole
        relay (no link left)."""
        item = self._by_key.get(key)
        if item is None:
            return False
        before = len(item.link_ids)
        item.link_ids = [lid for lid in item.link_ids if lid not in link_ids]
        if len(item.link_ids) == before or item.link_ids:
            return False
        item.cancelled = True
        del self._by_key[key]
        self._bytes -= len(item.frame)
        return True

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[PendingRelay]:
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            item = heapq.heappop(heap)[2]
            if item.cancelled:
                continue
            if self._by_key.get(item.key) is item:
                del self._by_key[item.key]
            self._bytes -= len(item.frame)
            out.append(item)
        return out
