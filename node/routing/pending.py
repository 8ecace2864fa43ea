"""Private messages awaiting a delivery ack, indexed for the three questions the mesh core asks often.

The core asks, on every send, "how many await this peer?" (the per-peer bound), on every timer computation "when
is the next retry due?", and on every announce or completed handshake "which messages await this peer?". A plain
dict answered each with a scan of everything pending; here each is O(1) or O(messages to that peer), plus a heap of
retry times with lazy invalidation (a heap entry is stale once its message left or was rescheduled).

Every change of a message's ``next_try`` goes through :meth:`PendingSet.reschedule`, so the heap always holds
the current time of every message (and possibly stale ones, skipped and dropped when they reach the top).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class PendingMessage:
    message_id: str
    peer_id: bytes
    text: str
    created: float
    attempts: int = 0
    next_try: float = 0.0
    free_send: bool = False  # the next send follows a fresh session: it does not count as an attempt
    sealed: bool = False  # courier copies were made
    probes: int = 0  # flooded handshakes tried while the peer was never heard of (see MeshCore._attempt_private)
    escalate: bool = False  # the next send floods at once (its routed copy's first hop gave up: hop ARQ)


class PendingSet:
    def __init__(self) -> None:
        self._by_id: OrderedDict[str, PendingMessage] = OrderedDict()
        self._by_peer: dict[bytes, dict[str, PendingMessage]] = {}
        self._heap: list[tuple[float, int, str]] = []  # (next_try, seq, message_id)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._by_id

    def __iter__(self) -> Iterator[PendingMessage]:
        return iter(list(self._by_id.values()))

    def get(self, message_id: str) -> PendingMessage | None:
        return self._by_id.get(message_id)

    def add(self, p: PendingMessage) -> None:
        if p.message_id in self._by_id:
            raise ValueError(f"message {p.message_id} is pending already")
        self._by_id[p.message_id] = p
        self._by_peer.setdefault(p.peer_id, {})[p.message_id] = p
        self._push(p)

    def remove(self, message_id: str) -> PendingMessage | None:
        p = self._by_id.pop(message_id, None)
        if p is None:
            return None
        mine = self._by_peer[p.peer_id]
        del mine[message_id]
        if not mine:
            del self._by_peer[p.peer_id]
        return p  # its heap entries go stale and are dropped when they reach the top

    def count_for(self, peer_id: bytes) -> int:
        return len(self._by_peer.get(peer_id, ()))

    def for_peer(self, peer_id: bytes) -> list[PendingMessage]:
        """The messages awaiting ``peer_id``, oldest first (a copy: callers may reschedule or remove)."""
        mine = self._by_peer.get(peer_id)
        return list(mine.values()) if mine else []

    def reschedule(self, p: PendingMessage, next_try: float) -> None:
        p.next_try = next_try
        if self._by_id.get(p.message_id) is p:
            self._push(p)

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[PendingMessage]:
        """The messages whose retry is due at ``now``, in due order. Their heap entries are consumed: the caller
        must :meth:`reschedule` (or :meth:`remove`) each one."""
        out: dict[str, PendingMessage] = {}  # a message rescheduled to the same time twice has two entries
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return list(out.values())
            _, _, message_id = heapq.heappop(self._heap)
            out[message_id] = self._by_id[message_id]

    def _push(self, p: PendingMessage) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (p.next_try, self._seq, p.message_id))
        if len(self._heap) > 4 * len(self._by_id) + 64:  # many stale entries: rebuild from the live ones
            self._heap = [(q.next_try, i, q.message_id) for i, q in enumerate(self._by_id.values())]
            heapq.heapify(self._heap)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            when, _, message_id = heap[0]
            p = self._by_id.get(message_id)
            if p is not None and p.next_try == when:
                return
            heapq.heappop(heap)
