"""Governance gossip between nodes (sans-IO: bytes and ``now_ms`` in, results out; no trio, no clock reads).

The village's nodes exchange proposals, votes, equivocation evidence and certificates over the mesh's encrypted
app channel (service :data:`SERVICE`). Two requests::

    push    [0x50 'P'][namespace len u8][namespace][count u16] item*       -> answer: [0x4B 'K'][accepted u16]
    pull    [0x51 'Q'][namespace len u8][namespace][epoch u64][skip u32]   -> answer: batch
    batch   [0x42 'B'][more u8][count u16] item*
    item    [kind u8][length u16][bytes]     kind: 1 proposal, 2 vote, 3 evidence, 4 certificate

Item bytes are the governance core's own wire formats; :class:`Gossip` feeds them through the core, which checks
namespace, epoch, membership and signatures and drops (and counts) what fails. Only what was *new* to this node is
returned for forwarding, so a replayed item costs its sender one duplicate check here and is never relayed
(replays of votes are recognised before any signature check, see :mod:`node.agents.governance.core`).

Bounds: a push carries at most :data:`MAX_ITEMS` items; each peer has a token bucket of items
(``items_per_s``/``burst_items``) and of pulls, so a peer sending faster than that has its surplus dropped and
counted. A pull answer holds the items of the asker's epoch onwards (proposals and certificates first, so the
asker can follow membership changes to the current epoch, then evidence and current-epoch votes), paged by
``skip`` and capped at ``max_answer_bytes``.
"""

from __future__ import annotations

import enum
import struct
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from node.agents.governance.core import ACCEPTED, EQUIVOCATION, Governance
from node.agents.governance.formats import (
    MAX_NAMESPACE_BYTES,
    Certificate,
    Evidence,
    Proposal,
    Vote,
    vote_from_bytes_untrusted,
)
from node.wire.errors import MalformedFrame

SERVICE = "gov.gossip"  # app-channel service name
PUSH_TAG = 0x50
PULL_TAG = 0x51
BATCH_TAG = 0x42
ACK_TAG = 0x4B
MAX_ITEMS = 512  # items in one push or batch
MAX_ITEM_BYTES = 0xFFFF  # one length field (a 100-voter certificate is ~4.4 kB; 1024 voters ~66 kB do not fit)
GLOBAL_PEERS = 8  # the all-peers buckets allow this many peers' worth of items and pulls at once
MAX_PEERS_TRACKED = 1024  # token buckets kept (least recently used dropped: a fresh bucket starts full)


class ItemKind(enum.IntEnum):
    PROPOSAL = 1
    VOTE = 2
    EVIDENCE = 3
    CERTIFICATE = 4


@dataclass(frozen=True, slots=True)
class Item:
    kind: ItemKind
    data: bytes


def proposal_item(p: Proposal) -> Item:
    return Item(ItemKind.PROPOSAL, p.encode())


def vote_item(v: Vote) -> Item:
    return Item(ItemKind.VOTE, v.encode())


def evidence_item(e: Evidence) -> Item:
    return Item(ItemKind.EVIDENCE, e.encode())


def certificate_item(c: Certificate) -> Item:
    return Item(ItemKind.CERTIFICATE, c.encode())


# ------------------------------------------------------------------------------------------------ codec


def _ns_bytes(namespace: str) -> bytes:
    ns = namespace.encode()
    if not 1 <= len(ns) <= MAX_NAMESPACE_BYTES:
        raise ValueError("bad namespace")
    return bytes((len(ns),)) + ns


def _items_bytes(items: Sequence[Item]) -> bytes:
    if len(items) > MAX_ITEMS:
        raise ValueError(f"at most {MAX_ITEMS} items per message")
    parts = [struct.pack(">H", len(items))]
    for it in items:
        parts.append(struct.pack(">BH", it.kind, len(it.data)) + it.data)
    return b"".join(parts)


def encode_push(namespace: str, items: Sequence[Item]) -> bytes:
    return bytes((PUSH_TAG,)) + _ns_bytes(namespace) + _items_bytes(items)


def encode_pull(namespace: str, epoch: int, skip: int) -> bytes:
    return bytes((PULL_TAG,)) + _ns_bytes(namespace) + struct.pack(">QI", epoch, skip)


def encode_batch(items: Sequence[Item], more: bool) -> bytes:
    return bytes((BATCH_TAG, int(more))) + _items_bytes(items)


def encode_ack(accepted: int) -> bytes:
    return bytes((ACK_TAG,)) + struct.pack(">H", min(accepted, 0xFFFF))


def _ns_untrusted(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise MalformedFrame("truncated")
    n = data[pos]
    if not 1 <= n <= MAX_NAMESPACE_BYTES or pos + 1 + n > len(data):
        raise MalformedFrame("bad namespace")
    try:
        return data[pos + 1 : pos + 1 + n].decode(), pos + 1 + n
    except UnicodeDecodeError as exc:
        raise MalformedFrame("namespace is not UTF-8") from exc


def _items_untrusted(data: bytes, pos: int) -> list[Item]:
    if pos + 2 > len(data):
        raise MalformedFrame("truncated item count")
    (count,) = struct.unpack_from(">H", data, pos)
    pos += 2
    if count > MAX_ITEMS:
        raise MalformedFrame(f"more than {MAX_ITEMS} items")
    items = []
    for _ in range(count):
        if pos + 3 > len(data):
            raise MalformedFrame("truncated item header")
        kind, n = struct.unpack_from(">BH", data, pos)
        pos += 3
        if kind not in ItemKind.__members__.values() or pos + n > len(data):
            raise MalformedFrame("bad item kind or length")
        items.append(Item(ItemKind(kind), data[pos : pos + n]))
        pos += n
    if pos != len(data):
        raise MalformedFrame("trailing bytes")
    return items


@dataclass(frozen=True, slots=True)
class Push:
    namespace: str
    items: list[Item]


@dataclass(frozen=True, slots=True)
class Pull:
    namespace: str
    epoch: int
    skip: int


def request_from_bytes_untrusted(data: bytes) -> Push | Pull:
    if not data:
        raise MalformedFrame("empty request")
    ns, pos = _ns_untrusted(data, 1)
    if data[0] == PUSH_TAG:
        return Push(ns, _items_untrusted(data, pos))
    if data[0] == PULL_TAG:
        if len(data) != pos + 12:
            raise MalformedFrame("bad pull length")
        epoch, skip = struct.unpack_from(">QI", data, pos)
        return Pull(ns, epoch, skip)
    raise MalformedFrame("unknown request tag")


def batch_from_bytes_untrusted(data: bytes) -> tuple[list[Item], bool]:
    if len(data) < 2 or data[0] != BATCH_TAG or data[1] not in (0, 1):
        raise MalformedFrame("not a batch")
    return _items_untrusted(data, 2), bool(data[1])


# ------------------------------------------------------------------------------------------ rate limits


@dataclass
class _Bucket:
    tokens: float
    at_ms: int


@dataclass
class TokenBuckets:
    """Per-peer token buckets (``rate_per_s`` refill, ``burst`` capacity), LRU-bounded in peers."""

    rate_per_s: float
    burst: float
    max_peers: int = MAX_PEERS_TRACKED
    _buckets: OrderedDict[bytes, _Bucket] = field(default_factory=OrderedDict)

    def take(self, peer: bytes, n: int, now_ms: int) -> int:
        """Take up to ``n`` tokens; return how many were granted."""
        b = self._buckets.pop(peer, None)
        if b is None:
            b = _Bucket(self.burst, now_ms)
        b.tokens = min(self.burst, b.tokens + max(0, now_ms - b.at_ms) * self.rate_per_s / 1000.0)
        b.at_ms = now_ms
        granted = min(n, int(b.tokens))
        b.tokens -= granted
        self._buckets[peer] = b
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return granted

    def give_back(self, peer: bytes, n: int) -> None:
        """Return ``n`` tokens taken but not used (capped at the burst)."""
        b = self._buckets.get(peer)
        if b is not None and n > 0:
            b.tokens = min(self.burst, b.tokens + n)


# ------------------------------------------------------------------------------------------------ gossip


@dataclass(frozen=True, slots=True)
class Received:
    """What one push (or pull answer) changed: items to forward, certificates that formed or arrived."""

    forward: list[Item]
    new_votes: list[Vote]
    new_proposals: list[Proposal]
    certificates: list[Certificate]


class Gossip:
    """Feeds peers' items into one :class:`Governance` and builds catch-up answers. One owner, not thread-safe."""

    def __init__(
        self,
        gov: Governance,
        *,
        items_per_s: float,
        burst_items: int,
        pulls_per_s: float,
        burst_pulls: int,
        max_answer_bytes: int,
    ) -> None:
        self.gov = gov
        self.items = TokenBuckets(items_per_s, burst_items)
        self.pulls = TokenBuckets(pulls_per_s, burst_pulls)
        self.answers = TokenBuckets(items_per_s, burst_items)  # items in answers to our pulls, per answering peer
        # one shared bucket each over all peers: free identities cannot multiply the per-peer allowance
        self.all_items = TokenBuckets(items_per_s * GLOBAL_PEERS, burst_items * GLOBAL_PEERS)
        self.all_pulls = TokenBuckets(pulls_per_s * GLOBAL_PEERS, burst_pulls * GLOBAL_PEERS)
        self._cache: dict[int, list[Item]] = {}  # epoch asked -> sorted items (catch-up answers)
        self._cache_version = -1
        self.max_answer_bytes = max_answer_bytes
        self.counters: Counter[str] = Counter()

    def is_member(self, peer: bytes) -> bool:
        """Whether ``peer`` is in the current or a kept electorate (at most KEEP_EPOCHS * MAX_MEMBERS keys)."""
        return any(e.index(peer) is not None for e in self.gov.electorates.values())

    def _take(self, per_peer: TokenBuckets, shared: TokenBuckets, peer: bytes, n: int, now_ms: int) -> int:
        """Tokens for ``n`` units from ``peer``: its own bucket, and for non-members also the shared one (only
        what the own bucket granted is asked of it; what the shared bucket refuses goes back to the peer's)."""
        granted = per_peer.take(peer, n, now_ms)
        if granted == 0 or self.is_member(peer):
            return granted  # members are bounded by their own buckets and the electorate size
        shared_granted = shared.take(b"", granted, now_ms)
        per_peer.give_back(peer, granted - shared_granted)
        return shared_granted

    def receive_items(
        self, peer: bytes | None, items: Sequence[Item], now_ms: int, *, pull_answer: bool = False
    ) -> Received:
        """Apply items from ``peer`` (None: our own items). Answers to our own pulls (``pull_answer``) are charged
        to a per-peer budget of their own, so pushes from free identities cannot starve our catch-up."""
        if peer is not None:
            if pull_answer:
                granted = self.answers.take(peer, len(items), now_ms)
            else:
                granted = self._take(self.items, self.all_items, peer, len(items), now_ms)
            if granted < len(items):
                self.counters["items_rate_limited"] += len(items) - granted
                items = items[:granted]
        out = Received([], [], [], [])
        g = self.gov
        for it in items:
            self.counters["items_received"] += 1
            if it.kind is ItemKind.PROPOSAL:
                p = g.receive_proposal_untrusted(it.data, now_ms)
                if p is not None:
                    out.forward.append(it)
                    out.new_proposals.append(p)
            elif it.kind is ItemKind.VOTE:
                try:
                    vote = vote_from_bytes_untrusted(it.data)
                except MalformedFrame:
                    g.counters["vote_malformed"] += 1
                    continue
                r = g.receive_vote(vote, now_ms)
                if r.status == ACCEPTED:
                    out.forward.append(it)
                    out.new_votes.append(vote)
                    if r.certificate is not None:
                        out.certificates.append(r.certificate)
                        out.forward.append(certificate_item(r.certificate))
                elif r.status == EQUIVOCATION and r.evidence is not None:
                    self.counters["equivocations_seen"] += 1
                    out.forward.append(evidence_item(r.evidence))
            elif it.kind is ItemKind.EVIDENCE:
                ev = g.receive_evidence_untrusted(it.data)
                if ev is not None:
                    out.forward.append(it)
            else:
                c = g.receive_certificate_untrusted(it.data)
                if c is not None:
                    out.forward.append(it)
                    out.certificates.append(c)
        self.counters["items_new"] += len(out.forward)
        return out

    def catch_up(self, peer: bytes, epoch: int, skip: int, now_ms: int) -> bytes:
        """A pull answer: items of ``epoch`` onwards from the cursor ``skip``, at most ``max_answer_bytes``.

        The sorted, encoded item list is built once per (epoch asked, state version) and cached; a page is a
        slice of it, so a pull costs O(page) until the state changes."""
        if self._take(self.pulls, self.all_pulls, peer, 1, now_ms) < 1:
            self.counters["pulls_rate_limited"] += 1
            return encode_batch([], True)  # "ask again later": the asker stops at its page bound
        self.counters["pulls_served"] += 1
        items = self._answer_items(epoch)
        page: list[Item] = []
        size = 4
        i = max(0, skip)
        while i < len(items) and len(page) < MAX_ITEMS:
            n = 3 + len(items[i].data)
            if size + n > self.max_answer_bytes and page:
                break
            page.append(items[i])
            size += n
            i += 1
        return encode_batch(page, i < len(items))

    def _answer_items(self, epoch: int) -> list[Item]:
        g = self.gov
        # asking for an epoch before the oldest we keep is asking for everything; after the current: nothing
        epoch = min(max(epoch, min(g.electorates)), g.epoch + 1)
        if self._cache_version != g.changes:
            self._cache.clear()
            self._cache_version = g.changes
        cached = self._cache.get(epoch)
        if cached is not None:
            return cached
        items: list[Item] = []
        proposals = [p for p in g.all_proposals() if p.epoch >= epoch]
        items += [proposal_item(p) for p in sorted(proposals, key=lambda p: (p.epoch, p.round, p.hash))]
        items += [certificate_item(c) for slot, c in sorted(g.certificates.items()) if slot[0] >= epoch]
        items += [evidence_item(e) for _, e in sorted(g.evidence.items()) if e.first.epoch >= epoch]
        votes = [v for v in g.all_votes() if v.epoch >= epoch]
        items += [vote_item(v) for v in sorted(votes, key=lambda v: (v.epoch, v.round, v.vote_type, v.voter))]
        self._cache[epoch] = items  # at most KEEP_EPOCHS + 1 lists, dropped on change
        self.counters["answer_rebuilds"] += 1
        return items
