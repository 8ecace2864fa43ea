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


class PeerTable:
    """Bounded: beyond ``max_peers`` the least recently heard peer is forgotten."""

    def __init__(self, max_peers: int) -> None:
        self.max_peers = max_peers
        self._peers: OrderedDict[bytes, PeerInfo] = OrderedDict()

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[PeerInfo]:
        return iter(list(self._peers.values()))

    def get(self, peer_id: bytes) -> PeerInfo | None:
        return self._peers.get(peer_id)

    def upsert(self, info: PeerInfo) -> None:
        self._peers[info.peer_id] = info
        self._peers.move_to_end(info.peer_id)
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)

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
