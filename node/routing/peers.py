"""What we know about other nodes: keys pinned from verified announces, nickname, last contact, link.

BitChat rules (BLE/BLEAnnounceHandlingPolicy.swift): an announce counts only if its sender ID is the first 8
bytes of SHA-256 of its Noise key and its signature verifies with its signing key; a peer's keys are pinned
at first sight, so a later announce with other keys under the same ID is refused. An announce with TTL 7
came straight from the neighbour and binds the link it arrived on to that peer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from node.routing.names import resolve_peer_ref


@dataclass
class PeerInfo:
    peer_id: bytes
    noise_public_key: bytes
    signing_public_key: bytes
    nickname: str
    first_seen: float
    last_seen: float
    link_id: str | None = None  # the link a direct (TTL 7) announce arrived on
    hops: int = 1
    capabilities: int | None = None
    left: bool = False  # a verified leave was received
    rtt_s: float | None = None  # smoothed round-trip time of ping/pong over the peer's link
    announced_ms: int = 0  # timestamp of its newest accepted announce (a leave older than this is a replay)
    left_ms: int = -1  # timestamp of its last accepted leave (a leave not newer than this is a replay)

    def reachable(self, now: float, expiry_s: float) -> bool:
        return not self.left and now - self.last_seen <= expiry_s


RECENT_BINDINGS_PER_PEER = 10  # forgotten peers' bindings remembered: this many times the table's size
RECENT_BINDING_S = 86_400.0  # ... for this long after the peer was last heard


@dataclass(frozen=True, slots=True)
class Binding:
    """What outlives a peer's eviction from the table (~100 bytes): the signing key its announces carried and its
    replay guards. A flood of fresh identities evicts peers from the table, and an unpinned peer's ID is then free
    for anyone to claim with their own signing key, and its old leave free to replay; this record refuses both."""

    signing_public_key: bytes
    announced_ms: int
    left_ms: int
    last_seen: float


class PeerTable:
    """Bounded: beyond ``max_peers`` the least recently heard peer is forgotten — but its :class:`Binding` is kept
    (at most ``RECENT_BINDINGS_PER_PEER * max_peers``, for ``RECENT_BINDING_S`` after it was last heard)."""

    def __init__(self, max_peers: int) -> None:
        self.max_peers = max_peers
        self._peers: OrderedDict[bytes, PeerInfo] = OrderedDict()
        self.max_bindings = RECENT_BINDINGS_PER_PEER * max_peers
        self._bindings: OrderedDict[bytes, Binding] = OrderedDict()  # evicted peers, least recently heard first

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[PeerInfo]:
        return iter(list(self._peers.values()))

    def get(self, peer_id: bytes) -> PeerInfo | None:
        return self._peers.get(peer_id)

    def upsert(self, info: PeerInfo) -> None:
        old = self._bindings.pop(info.peer_id, None)
        if old is not None:  # back in the table: its replay guards come back with it
            info.announced_ms = max(info.announced_ms, old.announced_ms)
            info.left_ms = max(info.left_ms, old.left_ms)
        self._peers[info.peer_id] = info
        self._peers.move_to_end(info.peer_id)
        while len(self._peers) > self.max_peers:
            _, gone = self._peers.popitem(last=False)
            self._bindings[gone.peer_id] = Binding(
                gone.signing_public_key, gone.announced_ms, gone.left_ms, gone.last_seen
            )
            while len(self._bindings) > self.max_bindings:
                self._bindings.popitem(last=False)

    def binding(self, peer_id: bytes, now: float) -> Binding | None:
        """The remembered binding of a peer evicted from the table (None if there is none, or it expired)."""
        b = self._bindings.get(peer_id)
        if b is not None and now - b.last_seen > RECENT_BINDING_S:
            del self._bindings[peer_id]
            return None
        return b

    def forget_binding(self, peer_id: bytes) -> None:
        self._bindings.pop(peer_id, None)

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        return {
            "peers": (len(self._peers), self.max_peers),
            "recent_bindings": (len(self._bindings), self.max_bindings),
        }

    def touch(self, peer_id: bytes, now: float) -> None:
        info = self._peers.get(peer_id)
        if info is not None:
            info.last_seen = now
            self._peers.move_to_end(peer_id)

    def unbind_link(self, link_id: str) -> None:
        for info in self._peers.values():
            if info.link_id == link_id:
                info.link_id = None

    def resolve(self, ref: str) -> list[PeerInfo]:
        """Peers matching a user's reference, in an order nobody can shadow (:mod:`node.routing.names`)."""
        return resolve_peer_ref(ref, self._peers.values())
