"""The ways out of the mesh core: its links, the frames queued on them, and hop-by-hop ARQ (a component).

:class:`LinkOutput` owns the links (MTU, when each came up, the key its transport authenticated), the queue of
``(link_id, frame)`` the adapter polls, and the :class:`~node.routing.hoparq.HopArqTable` of frames awaiting a hop
ack. It encodes packets we originate, fragments frames to a link's MTU, picks the links for a directed packet
(path table, else a flood) and keeps single-link directed frames until the neighbour acknowledges them. Its timer
is the hop ARQ's (:meth:`next_deadline`); what is due is returned by :meth:`on_timer` for the core to resend or
give up (a give-up may fail a private message over, which only the core can do). Sans-IO: ``now`` is passed in.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from node.routing.dedupe import dedupe_key
from node.routing.events import MeshCounters
from node.routing.hoparq import HOP_ACK_CAPABILITY, HopArqTable, HopEntry, ack_digest, acks_expected
from node.routing.meshbase import PADDED_TYPES
from node.routing.paths import PathTable, Route
from node.routing.peers import PeerTable
from node.routing.settings import MeshSection
from node.wire import (
    EncodeError,
    MalformedFrame,
    MessageType,
    Packet,
    WireLimits,
    decode_packet_untrusted,
    encode_packet,
    fragment_frame,
)


@dataclass
class LinkState:
    mtu: int
    up_since: float
    bound_key: bytes | None = None  # the peer's Ed25519 key as the transport authenticated it
    # What per-source budgets (new pins) are keyed by: the remote's address or prefix, which outlives the link
    # (link ids are per connection); None: the link id (a medium without a stable address).
    rate_key: str | None = None


class LinkOutput:
    """Links, the outgoing frame queue and the hop ARQ table (see the module docstring)."""

    def __init__(
        self,
        *,
        peer_id: bytes,
        settings: MeshSection,
        limits: WireLimits,
        rng: random.Random,
        paths: PathTable,
        peers: PeerTable,
        counters: MeshCounters,
        wall_offset_ms: float,
    ) -> None:
        self.peer_id = peer_id
        self.settings = settings
        self.limits = limits
        self.rng = rng
        self.paths = paths
        self.peers = peers
        self.counters = counters
        self.wall_offset_ms = wall_offset_ms
        self.links: dict[str, LinkState] = {}
        self.out: list[tuple[str, bytes]] = []
        self.flood = settings.routing == "flood"
        # Hop-by-hop ARQ (node.routing.hoparq): never in the flooding baseline, off with hop_retries = 0.
        self.hop_arq = settings.routing == "path" and settings.hop_retries > 0
        self.hoparq = HopArqTable()

    # ---------------------------------------------------------------- time
    def wall_ms(self, now: float) -> int:
        return int(self.wall_offset_ms + now * 1000.0)

    def next_deadline(self) -> float | None:
        return self.hoparq.next_deadline()

    def on_timer(self, now: float) -> list[HopEntry]:
        """Hop ARQ entries whose ack is overdue (the core resends or gives up each one)."""
        return self.hoparq.pop_due(now)

    # ---------------------------------------------------------------- links
    def link_up(self, link_id: str, mtu: int, now: float, bound_key: bytes | None, rate_key: str | None = None) -> None:
        self.links[link_id] = LinkState(mtu=mtu, up_since=now, bound_key=bound_key, rate_key=rate_key)

    def rate_key(self, link_id: str) -> str:
        """The key of ``link_id``'s per-source budgets (its remote's address or prefix; else the link id)."""
        state = self.links.get(link_id)
        return state.rate_key if state is not None and state.rate_key is not None else link_id

    def link_down(self, link_id: str) -> None:
        self.links.pop(link_id, None)
        self.hoparq.drop_link(link_id)

    # ---------------------------------------------------------------- outputs
    def take(self) -> list[tuple[str, bytes]]:
        out, self.out = self.out, []
        self.counters.frames_out += len(out)
        return out

    def packet(
        self, msg_type: int, payload: bytes, now: float, recipient: bytes | None = None, route: tuple[bytes, ...] = ()
    ) -> Packet:
        return Packet(
            version=2 if route else 1,  # as iOS: v2 only when a source route is carried
            type=int(msg_type),
            ttl=self.settings.default_ttl,
            timestamp_ms=self.wall_ms(now),
            sender_id=self.peer_id,
            recipient_id=recipient,
            route=route,
            payload=payload,
            signature=None,
            is_rsr=False,
        )

    def encode(self, packet: Packet) -> bytes | None:
        """``packet`` on the wire, or None (counted) when it cannot be encoded (e.g. too large for v1)."""
        try:
            return encode_packet(packet, pad=packet.type in PADDED_TYPES, limits=self.limits)
        except EncodeError:
            self.counters.unencodable += 1
            return None

    def emit(self, link_ids: list[str], packet: Packet) -> None:
        frame = self.encode(packet)
        if frame is None:
            return
        for link_id in link_ids:
            self.emit_frame(link_id, frame, packet)

    def emit_frame(self, link_id: str, frame: bytes, packet: Packet | None = None) -> None:
        """Queue ``frame`` on a link, in fragments when it exceeds the link's MTU (``packet`` is the frame
        decoded, when the caller has it)."""
        for piece in self.pieces(link_id, frame, packet):
            self.out.append((link_id, piece))

    def emit_copies(self, link_ids: list[str], frame: bytes) -> None:
        """:meth:`emit_frame` of ``frame`` on each of ``link_ids`` (a relay's copies: most fit their links whole)."""
        links, out, size = self.links, self.out, len(frame)
        for link_id in link_ids:
            state = links.get(link_id)
            if state is not None and size <= state.mtu:
                out.append((link_id, frame))
            else:
                self.emit_frame(link_id, frame)

    def pieces(self, link_id: str, frame: bytes, packet: Packet | None) -> list[bytes]:
        """``frame`` as it goes on the link: whole, or fragments of the link's MTU; nothing if the link is gone or
        the frame needs more fragments than we send (counted)."""
        state = self.links.get(link_id)
        if state is None:
            return []
        if len(frame) <= state.mtu:
            return [frame]
        if packet is None:
            try:
                packet = decode_packet_untrusted(frame, self.limits)
            except MalformedFrame:  # cannot happen for a frame we accepted; never relay what we cannot parse
                self.counters.malformed += 1
                return []
        fid = self.rng.getrandbits(64).to_bytes(8, "big")
        try:
            return fragment_frame(packet, frame, state.mtu, fid, self.limits)
        except EncodeError:  # too many fragments for this link's MTU (BitChat sends at most 256)
            self.counters.unencodable += 1
            return []

    # ---------------------------------------------------------------- hop-by-hop ARQ (node.routing.hoparq)
    def neighbour_with(self, link_id: str, capability: int) -> bytes | None:
        """The peer bound to ``link_id`` if its announce carries the ``capability`` bit (TLV 05)."""
        peer = self.paths.link_peers.get(link_id)
        info = self.peers.get(peer) if peer is not None else None
        if info is None or not (info.capabilities or 0) & capability:
            return None
        return peer

    def neighbour_with_info(self, peer_id: bytes, capability: int) -> bool:
        """Whether ``peer_id``'s announce (any, not only a neighbour's) carries the ``capability`` bit."""
        info = self.peers.get(peer_id)
        return info is not None and bool((info.capabilities or 0) & capability)

    def ack_neighbour(self, link_id: str) -> bytes | None:
        """The peer bound to ``link_id`` if it announced the hop-ack capability (and we use hop acks)."""
        return self.neighbour_with(link_id, HOP_ACK_CAPABILITY) if self.hop_arq else None

    def tracks(self, link_id: str, pkt: Packet) -> bool:
        """Whether ``pkt`` sent on ``link_id`` alone is kept until the neighbour there acknowledges it."""
        peer = self.ack_neighbour(link_id)
        return peer is not None and acks_expected(pkt, peer, from_originator=pkt.sender_id == self.peer_id)

    def emit_tracked(
        self, link_id: str, frame: bytes, pkt: Packet | None, key: str | None, now: float, tag: str | None = None
    ) -> None:
        """Queue ``frame`` on ``link_id`` and keep each piece of it until its hop ack (the caller checked
        :meth:`tracks`). ``key``: the frame's dedupe key, if the caller has it; ``tag``: the private message it
        carries, for failover."""
        pieces = self.pieces(link_id, frame, pkt)
        stats = self.paths.links.get(link_id)
        rto = self.hoparq.rto(link_id, stats.rtt_s if stats is not None else None, 1)
        for piece in pieces:
            self.out.append((link_id, piece))
            if len(pieces) == 1 and key is not None:
                k = key
            else:
                try:
                    p = pkt if len(pieces) == 1 and pkt is not None else decode_packet_untrusted(piece, self.limits)
                except MalformedFrame:
                    continue
                k = dedupe_key(p.sender_id, p.timestamp_ms, p.type, p.payload)
            entry = HopEntry(link_id, ack_digest(k), piece, sent_at=now, due=now + rto, tries=1, tag=tag)
            if self.hoparq.track(entry):
                self.counters.hop_tracked += 1
            else:
                self.counters.hop_table_full += 1

    def hop_route(self, peer_id: bytes, now: float) -> bool:
        """We have a source route (or a direct link) to ``peer_id`` whose first hop acknowledges hop by hop: an
        answer to a request that arrived flooded may take it instead of flooding too (the path table knows a way
        the requester's did not, and hop acks make it reliable)."""
        if not self.hop_arq:
            return False
        links, route = self.path_to(peer_id, now)
        return route is not None and route.source != "reverse" and self.ack_neighbour(links[0]) is not None

    def send_hop_ack(self, link_id: str, pkt: Packet, key: str, now: float) -> None:
        """Acknowledge a copy of ``pkt`` (dedupe key ``key``) that arrived on ``link_id``, if its sender there
        keeps it for retransmission (the same rule it applied: :func:`~node.routing.hoparq.acks_expected`)."""
        peer = self.ack_neighbour(link_id)
        if peer is None or not acks_expected(pkt, self.peer_id, from_originator=pkt.sender_id == peer):
            return
        ack = dataclasses.replace(self.packet(MessageType.HOP_ACK, ack_digest(key), now, peer), ttl=1)
        self.out.append((link_id, encode_packet(ack, limits=self.limits)))
        self.counters.hop_acks_sent += 1

    # ---------------------------------------------------------------- directed sends
    def path_to(self, peer_id: bytes, now: float) -> tuple[list[str], Route | None]:
        """Links for a directed packet we originate, and the route used (None: flooded)."""
        if not self.flood:
            route = self.paths.route(peer_id, now)
            if route is not None and route.link_id in self.links and route.hops <= self.settings.default_ttl:
                return [route.link_id], route
        return list(self.links), None

    def send_directed(
        self, msg_type: int, payload: bytes, peer_id: bytes, now: float, *, flood: bool = False, tag: str | None = None
    ) -> list[str]:
        """``flood``: every link, no source route — for a resend after the routed copy got no answer (the route
        may be lossy or stale; a flood tries every path at once)."""
        links, route = (list(self.links), None) if flood else self.path_to(peer_id, now)
        if route is None:
            self.counters.sent_flooded += 1
        elif route.source == "direct":
            self.counters.sent_direct += 1
        elif route.via:
            self.counters.sent_routed += 1
        else:
            self.counters.sent_reverse += 1
        pkt = self.packet(msg_type, payload, now, peer_id, route.via if route else ())
        if len(links) == 1 and self.tracks(links[0], pkt):
            frame = self.encode(pkt)
            if frame is not None:
                self.emit_tracked(links[0], frame, pkt, None, now, tag)
        else:
            self.emit(links, pkt)
        return links
