"""Hop-by-hop acknowledgement and retransmission (link-layer ARQ) for directed frames, between AIVillage nodes.

A directed frame that leaves on exactly one link, to a neighbour that announced :data:`HOP_ACK_CAPABILITY`, is
kept in a :class:`HopArqTable` until that neighbour answers with a HOP_ACK on the same link; until then it is
resent on that link after a retransmission timeout (RTO) derived from the link's round-trip time, up to
``mesh.hop_retries`` times. The neighbour acknowledges every copy (a resend means its last ack was lost) but
relays and processes the frame once (the dedupe cache stops the copies after the ack).

Who acknowledges what (:func:`acks_expected`, the one rule both ends apply): the frame is directed, and the
receiving neighbour is on its source route, or is its recipient and the frame carries a route, or the frame came
straight from its originator (a direct send, a send along a reverse path, or the originator's flood — every
neighbour acknowledges that one, but the originator keeps only what it sent on a single link). A directed frame
that a relay forwards without a route is never acknowledged: the relay may have flooded it, and its neighbours
cannot tell.

HOP_ACK (:data:`~node.wire.MessageType.HOP_ACK`) is an AIVillage packet: TTL 1 (never relayed, by any relay),
unsigned, addressed to the neighbour, sent only on the link the frame arrived on and only to a neighbour that
announced the capability, so a BitChat phone never receives one. Its payload is :func:`ack_digest` of the acked
frame's dedupe key (:func:`node.routing.dedupe.dedupe_key`: sender, timestamp, type, payload; the TTL a relay
rewrites is not part of it).

Fragmented frames are acknowledged per fragment: each fragment is a directed frame of its own (BitChat fragments
copy the recipient and route), relayed hop by hop, so the same rule and table cover them.

The table is sans-IO: ``now`` is passed in; the mesh core re-emits what :meth:`HopArqTable.pop_due` returns.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from dataclasses import dataclass

from node.wire import MessageType, Packet, is_broadcast

HOP_ACK_CAPABILITY = 1 << 32  # announce TLV 05 bit: "I send and understand hop acks" (BitChat uses bits 0-10)
ACK_DIGEST_BYTES = 16  # SHA-256 of the dedupe key, truncated: a HOP_ACK's whole payload
RTO_MIN_S = 0.15  # floor of the retransmission timeout (BLE: ~50 ms round trip with an idle queue)
RTO_MAX_S = 3.0  # ceiling of one retransmission timeout, backoff included
RTO_UNKNOWN_S = 0.5  # a link without an RTT sample yet (no pong, no ack so far)
RTO_RTT_FACTOR = 3.0  # RTO = factor x smoothed RTT (the queueing delay on a busy link varies a lot)
RTT_SMOOTHING = 0.25  # weight of a new RTT sample, as the core's pings
MAX_ENTRIES = 1024  # frames awaiting a hop ack at once; beyond this a frame is sent unprotected (counted)
MAX_BYTES = 1 << 20  # bytes of those frames (1 MiB)
# Never acknowledged: acks themselves; pings and pongs (they measure a link's loss, and go out on one link without
# tracking); courier envelopes (handed to a neighbour with TTL 1, and handed again at the next meeting).
NOT_ACKED_TYPES = frozenset({MessageType.HOP_ACK, MessageType.PING, MessageType.PONG, MessageType.COURIER_ENVELOPE})


def ack_digest(key: str) -> bytes:
    """What a HOP_ACK carries for the frame whose dedupe key is ``key``."""
    return hashlib.sha256(key.encode()).digest()[:ACK_DIGEST_BYTES]


def acks_expected(pkt: Packet, neighbour: bytes, *, from_originator: bool) -> bool:
    """Whether ``neighbour`` acknowledges ``pkt`` when it receives it from us (sender side) — or, on the receiving
    side with ``neighbour`` = ourselves, whether we acknowledge it. ``from_originator``: the frame leaves (or
    arrived) straight from its sender, not through a relay."""
    if is_broadcast(pkt) or pkt.type in NOT_ACKED_TYPES:
        return False
    if neighbour in pkt.route or (pkt.recipient_id == neighbour and pkt.route):
        return True
    return from_originator


@dataclass(slots=True)
class HopEntry:
    link_id: str
    digest: bytes
    frame: bytes
    sent_at: float  # the first transmission (an RTT sample is taken only if there was no other: Karn)
    due: float
    tries: int  # transmissions so far
    tag: str | None = None  # the private message the frame carries, when we originated it (for failover)


class HopArqTable:
    """Frames awaiting their hop ack, keyed by (link, digest), with one deadline each (a heap with lazy
    invalidation). Bounded by entries and bytes; a frame that does not fit is sent without protection and
    :attr:`overflows` counts it."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.overflows = 0
        self._entries: OrderedDict[tuple[str, bytes], HopEntry] = OrderedDict()
        self._heap: list[tuple[float, int, str, bytes]] = []  # (due, seq, link, digest)
        self._seq = 0
        self._bytes = 0
        self._srtt: dict[str, float] = {}  # link -> RTT smoothed over hop acks

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def rto(self, link_id: str, ping_rtt_s: float | None, tries: int) -> float:
        """Seconds to wait for the ack of transmission number ``tries`` (1 = the first): RTO_RTT_FACTOR x the
        link's RTT (from hop acks, else from pings), doubled per retransmission, within [RTO_MIN_S, RTO_MAX_S]."""
        rtt = self._srtt.get(link_id, ping_rtt_s)
        base = RTO_UNKNOWN_S if rtt is None else max(RTO_MIN_S, RTO_RTT_FACTOR * rtt)
        return min(RTO_MAX_S, base * 2.0 ** min(8, tries - 1))

    def track(self, entry: HopEntry) -> bool:
        """Keep ``entry`` until its ack. False (counted) when the table is full; a frame already awaiting its
        ack on that link keeps its entry (the same frame sent again, e.g. a relay of a retransmitted copy)."""
        k = (entry.link_id, entry.digest)
        if k in self._entries:
            return True
        if len(self._entries) >= self.max_entries or self._bytes + len(entry.frame) > self.max_bytes:
            self.overflows += 1
            return False
        self._entries[k] = entry
        self._bytes += len(entry.frame)
        self._push(entry)
        return True

    def ack(self, link_id: str, digest: bytes, now: float) -> HopEntry | None:
        """A HOP_ACK for ``digest`` arrived on ``link_id``: the entry it settles, or None (unknown or forged)."""
        entry = self._entries.pop((link_id, digest), None)
        if entry is None:
            return None
        self._bytes -= len(entry.frame)
        if entry.tries == 1:
            sample = now - entry.sent_at
            old = self._srtt.get(link_id)
            self._srtt[link_id] = sample if old is None else (1 - RTT_SMOOTHING) * old + RTT_SMOOTHING * sample
        return entry

    def next_deadline(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[HopEntry]:
        """Entries whose ack is overdue, in deadline order. The caller must :meth:`retry` or :meth:`give_up`
        each one."""
        out: list[HopEntry] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return out
            _, _, link_id, digest = heapq.heappop(self._heap)
            out.append(self._entries[(link_id, digest)])

    def retry(self, entry: HopEntry, due: float) -> None:
        entry.tries += 1
        entry.due = due
        self._push(entry)

    def give_up(self, entry: HopEntry) -> None:
        if self._entries.pop((entry.link_id, entry.digest), None) is not None:
            self._bytes -= len(entry.frame)

    def forget_frames(self, frames: list[tuple[str, bytes]]) -> int:
        """Never resend these (link, frame) pairs: the adapter withheld them (a delivery ack whose message could not
        be stored must not leave by a retransmission either). Returns how many were tracked."""
        withheld = set(frames)
        gone = [e for e in self._entries.values() if (e.link_id, e.frame) in withheld]
        for e in gone:
            self.give_up(e)
        return len(gone)

    def drop_link(self, link_id: str) -> list[HopEntry]:
        """The link went down: forget (and return) its entries and its RTT."""
        gone = [e for (lid, _), e in self._entries.items() if lid == link_id]
        for e in gone:
            self.give_up(e)
        self._srtt.pop(link_id, None)
        return gone

    def _push(self, entry: HopEntry) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (entry.due, self._seq, entry.link_id, entry.digest))
        if len(self._heap) > 4 * len(self._entries) + 64:  # many stale entries: rebuild from the live ones
            self._heap = [(e.due, i, e.link_id, e.digest) for i, e in enumerate(self._entries.values())]
            heapq.heapify(self._heap)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            due, _, link_id, digest = heap[0]
            e = self._entries.get((link_id, digest))
            if e is not None and e.due == due:
                return
            heapq.heappop(heap)
