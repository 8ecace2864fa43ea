"""The mesh core's state and plumbing, shared by its layers (:mod:`node.routing.announcing`, :mod:`node.routing.mesh`).

:class:`MeshBase` holds every table the core keeps and the ways out: encoding and emitting packets (fragmented to
a link's MTU), choosing links for a directed packet, Noise-encrypted sends that start a handshake when there is no
session yet, and courier envelopes handed to neighbours. It reads no clock (``now`` is passed in) and does no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import struct
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from node.errors import CryptoError, MeshError
from node.identity import Identity
from node.routing.app import AppChannel
from node.routing.courier import (
    CourierStore,
    Envelope,
    encode_envelope,
    seal,
)
from node.routing.dedupe import DedupeCache, dedupe_key
from node.routing.events import EnvelopeSealed, MeshCounters, MeshEvent
from node.routing.hoparq import HOP_ACK_CAPABILITY, HopArqTable, HopEntry, ack_digest, acks_expected
from node.routing.paths import PathTable, Route
from node.routing.peers import PeerInfo, PeerTable
from node.routing.pending import PendingMessage, PendingSet
from node.routing.relay import RelayQueue
from node.routing.sessions import SessionManager
from node.routing.settings import MeshSection
from node.wire import (
    Announce,
    MalformedFrame,
    MessageType,
    NoisePayloadType,
    Packet,
    Reassembler,
    WireLimits,
    decode_announce_untrusted,
    decode_packet_untrusted,
    encode_noise_payload,
    encode_packet,
    encode_private_message,
    fragment_frame,
    verify_wire_signature,
)

MAX_TTL = 7  # BitChat clamps and originates with TTL 7
PRIVATE_TEXT_MAX_BYTES = 255  # BitChat's private-message TLV length is one byte
SEEN_PRIVATE_IDS = 4096  # private message IDs remembered to suppress re-delivered retransmits
PENDING_SESSION_FRAMES = 64  # payloads queued per peer while its handshake runs
REHANDSHAKE_AFTER_ATTEMPTS = 3  # every 3rd unacknowledged send of a private message also renews the session
MAX_OUTSTANDING_PINGS = 256  # pings awaiting a pong; the oldest are forgotten beyond this
PING_EXPIRY_S = 30.0  # a pong later than this is ignored
RTT_SMOOTHING = 0.25  # weight of a new RTT or loss sample (exponentially weighted moving average)
BUSY_LINKS = 6  # BitChat's threshold for a busy node: longer announce interval, shorter broadcast TTL
HOLD_AFTER_EXPIRIES = 2  # a private message is held (not sent) for a peer silent this many peer expiries
UNKNOWN_PEER_PROBES = 6  # probe handshakes (10-35 s apart) for a held message to a peer never heard of
ANNOUNCE_ANSWER_GAP_S = 0.15  # BitChat forces announces on a link at least this far apart
ANNOUNCE_CHANGE_GAP_S = 30.0  # a changed announce from one peer is relayed at most this often
LOSSY_PONG_RATIO = 0.65  # fewer pings answered than this: a lossy neighbourhood (10 % loss per frame: 0.81)
LOSSY_EARLY_RELAYS = 3  # ... where an origin's first relays come at the short interval
FRESH_LINK_S = 2.0  # direct announces on a link this young are not relayed (sent before the peer bound anyone)
# Announce TLV 05 bit (BitChat uses bits 0-10): "my link-up announces are followed by a settled one on every link
# SETTLE_ANNOUNCE_S later" — only such a neighbour's link-up announce may be left unrelayed (a phone's is relayed).
SETTLED_ANNOUNCE_CAPABILITY = 1 << 33
SETTLE_ANNOUNCE_S = (3.0, 4.0)  # after a link comes up, announce on every link within this (neighbours bound)
FAR_EXPIRY_PER_RELAY_INTERVAL = 2.5  # far peers' paths and reachability last this many relay intervals
PADDED_TYPES = (MessageType.NOISE_HANDSHAKE, MessageType.NOISE_ENCRYPTED)  # only these are padded on air
# Sends (private message attempts, handshake attempts) that follow the path table before resends flood: with hop
# acks a routed attempt is reliable hop by hop, so one more routed try is cheaper than a flood.
ROUTED_TRIES_WITH_HOP_ARQ = 2
EARLY_PEERS = 64  # peers whose early ciphertexts are held at once (the least recent is dropped beyond)
EARLY_CIPHERTEXT_MAX_BYTES = 4096  # larger ciphertexts are never held early (a private message is < 1 KiB)
EARLY_CIPHERTEXTS = 8  # ciphertexts per peer held while its handshake message 3 may still be on its way (hop ARQ)


@dataclass
class LinkState:
    mtu: int
    up_since: float
    bound_key: bytes | None = None  # the peer's Ed25519 key as the transport authenticated it


@dataclass
class MeshBase:
    identity: Identity
    settings: MeshSection
    limits: WireLimits
    nickname: str
    wall_offset_ms: float
    rng: random.Random = field(default_factory=random.Random)
    # Checks a received frame's Ed25519 signature: (frame, signing key, limits) -> valid. The default is the
    # codec's; a simulator of many nodes in one process may pass a memoising wrapper of it.
    verify: Callable[[bytes, bytes, WireLimits], bool] = verify_wire_signature
    # Parses an announce payload (raises MalformedFrame); likewise a simulator may pass a memoising wrapper.
    decode_announce: Callable[[bytes], Announce] = decode_announce_untrusted
    # Seal held messages after courier_after_s even with courier_copies = 0, for a mailbox (EnvelopeSealed events).
    seal_for_mailbox: bool = False

    def __post_init__(self) -> None:
        self.peer_id = self.identity.peer_id
        self.counters = MeshCounters()
        self.peers = PeerTable(self.settings.max_peers)
        self.sessions = SessionManager(
            static_private=self.identity.noise_private,
            local_peer_id=self.peer_id,
            timeout_s=self.settings.handshake_timeout_s,
        )
        self.dedupe = DedupeCache(ttl_s=self.settings.dedupe_ttl_s, max_entries=self.settings.dedupe_max_entries)
        self.reassembler = Reassembler(self.limits)
        self.links: dict[str, LinkState] = {}
        self.pending = PendingSet()
        self._seen_private: OrderedDict[str, None] = OrderedDict()
        self._session_queue: dict[bytes, deque[bytes]] = {}
        self._out: list[tuple[str, bytes]] = []
        self._events: deque[MeshEvent] = deque()
        self._next_announce: float | None = None
        self._pings: OrderedDict[bytes, tuple[bytes, str, float]] = OrderedDict()  # nonce -> (peer, link, sent)
        s = self.settings
        self.paths = PathTable(self.peer_id, path_ttl_s=s.path_ttl_s, max_hops=s.default_ttl, max_entries=s.max_peers)
        self.relays = RelayQueue(s.relay_queue_max, s.relay_queue_max_bytes)
        self._flood = s.routing == "flood"
        self.couriers = CourierStore(s.courier_max_envelopes)
        self.app = AppChannel(self.rng)  # app request/response codec and matching (node.routing.app)
        self._announced_at: dict[str, float] = {}  # link -> when we last announced on it
        self._answers: dict[str, float] = {}
        # A taken packet's frame without its TTL byte -> its dedupe key: copies are recognised without a parse.
        self._raw_seen: dict[bytes, str] = {}
        self._settled_at: float | None = None  # when a settled announce was last brought forward
        # origin -> (when we last relayed its announce, that announce's payload): announce relay suppression
        self._announce_relays: OrderedDict[bytes, tuple[float, bytes, int]] = OrderedDict()  # (+ relays so far)
        self.pings_sent = 0  # link probes sent, and answered: how lossy our links are (lossy_neighbourhood)
        self.pongs_received = 0
        # Links the last encrypted frame to each peer left on (bounded by the peer table's size).
        self.last_links: OrderedDict[bytes, list[str]] = (
            OrderedDict()
        )  # link -> when a deferred answer to a new neighbour is due
        # Hop-by-hop ARQ (node.routing.hoparq): never in the flooding baseline, off with hop_retries = 0.
        self.hop_arq = s.routing == "path" and s.hop_retries > 0
        self.hoparq = HopArqTable()
        self.routed_tries = ROUTED_TRIES_WITH_HOP_ARQ if self.hop_arq else 1
        self._handshake_expiries: OrderedDict[bytes, int] = OrderedDict()  # peer -> handshakes that timed out
        # Ciphertexts that overtook the message 3 of their handshake (resent on some hop): opened once it completes.
        self._early: OrderedDict[bytes, deque[Packet]] = OrderedDict()

    # ---------------------------------------------------------------- time
    def wall_ms(self, now: float) -> int:
        return int(self.wall_offset_ms + now * 1000.0)

    # ---------------------------------------------------------------- outputs
    def frames_to_send(self) -> list[tuple[str, bytes]]:
        out, self._out = self._out, []
        self.counters.frames_out += len(out)
        return out

    def next_event(self) -> MeshEvent | None:
        return self._events.popleft() if self._events else None

    def _emit(self, link_ids: list[str], packet: Packet) -> None:
        frame = encode_packet(packet, pad=packet.type in PADDED_TYPES, limits=self.limits)
        for link_id in link_ids:
            self._emit_frame(link_id, frame, packet)

    def _emit_frame(self, link_id: str, frame: bytes, packet: Packet | None = None) -> None:
        """Queue ``frame`` on a link, in fragments when it exceeds the link's MTU (``packet`` is the frame
        decoded, when the caller has it)."""
        for piece in self._pieces(link_id, frame, packet):
            self._out.append((link_id, piece))

    def _pieces(self, link_id: str, frame: bytes, packet: Packet | None) -> list[bytes]:
        """``frame`` as it goes on the link: whole, or fragments of the link's MTU; nothing if the link is gone."""
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
        return fragment_frame(packet, frame, state.mtu, fid, self.limits)

    # ---------------------------------------------------------------- hop-by-hop ARQ (node.routing.hoparq)
    def _neighbour_with(self, link_id: str, capability: int) -> bytes | None:
        """The peer bound to ``link_id`` if its announce carries the ``capability`` bit (TLV 05)."""
        peer = self.paths.link_peers.get(link_id)
        info = self.peers.get(peer) if peer is not None else None
        if info is None or not (info.capabilities or 0) & capability:
            return None
        return peer

    def _ack_neighbour(self, link_id: str) -> bytes | None:
        """The peer bound to ``link_id`` if it announced the hop-ack capability (and we use hop acks)."""
        return self._neighbour_with(link_id, HOP_ACK_CAPABILITY) if self.hop_arq else None

    def _tracks(self, link_id: str, pkt: Packet) -> bool:
        """Whether ``pkt`` sent on ``link_id`` alone is kept until the neighbour there acknowledges it."""
        peer = self._ack_neighbour(link_id)
        return peer is not None and acks_expected(pkt, peer, from_originator=pkt.sender_id == self.peer_id)

    def _emit_tracked(
        self, link_id: str, frame: bytes, pkt: Packet | None, key: str | None, now: float, tag: str | None = None
    ) -> None:
        """Queue ``frame`` on ``link_id`` and keep each piece of it until its hop ack (the caller checked
        :meth:`_tracks`). ``key``: the frame's dedupe key, if the caller has it; ``tag``: the private message it
        carries, for failover."""
        pieces = self._pieces(link_id, frame, pkt)
        stats = self.paths.links.get(link_id)
        rto = self.hoparq.rto(link_id, stats.rtt_s if stats is not None else None, 1)
        for piece in pieces:
            self._out.append((link_id, piece))
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

    def _hop_route(self, peer_id: bytes, now: float) -> bool:
        """We have a source route (or a direct link) to ``peer_id`` whose first hop acknowledges hop by hop: an
        answer to a request that arrived flooded may take it instead of flooding too (the path table knows a way
        the requester's did not, and hop acks make it reliable)."""
        if not self.hop_arq:
            return False
        links, route = self.path_to(peer_id, now)
        return route is not None and route.source != "reverse" and self._ack_neighbour(links[0]) is not None

    def _send_hop_ack(self, link_id: str, pkt: Packet, key: str, now: float) -> None:
        """Acknowledge a copy of ``pkt`` (dedupe key ``key``) that arrived on ``link_id``, if its sender there
        keeps it for retransmission (the same rule it applied: :func:`~node.routing.hoparq.acks_expected`)."""
        peer = self._ack_neighbour(link_id)
        if peer is None or not acks_expected(pkt, self.peer_id, from_originator=pkt.sender_id == peer):
            return
        ack = dataclasses.replace(self._packet(MessageType.HOP_ACK, ack_digest(key), now, peer), ttl=1)
        self._out.append((link_id, encode_packet(ack, limits=self.limits)))
        self.counters.hop_acks_sent += 1

    def path_to(self, peer_id: bytes, now: float) -> tuple[list[str], Route | None]:
        """Links for a directed packet we originate, and the route used (None: flooded)."""
        if not self._flood:
            route = self.paths.route(peer_id, now)
            if route is not None and route.link_id in self.links and route.hops <= self.settings.default_ttl:
                return [route.link_id], route
        return list(self.links), None

    def _send_directed(
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
        pkt = self._packet(msg_type, payload, now, peer_id, route.via if route else ())
        if len(links) == 1 and self._tracks(links[0], pkt):
            frame = encode_packet(pkt, pad=pkt.type in PADDED_TYPES, limits=self.limits)
            self._emit_tracked(links[0], frame, pkt, None, now, tag)
        else:
            self._emit(links, pkt)
        return links

    def _packet(
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

    # ---------------------------------------------------------------- announce relaying and peer expiry
    def announce_relay_interval_s(self) -> float:
        """How long we wait before relaying another unchanged announce from the same peer: BitChat-like
        (``announce_relay_min_interval_s``) in a small mesh, stretching with the number of peers heard of so
        that this node relays about ``announce_relay_per_s`` announces a second however large the mesh is."""
        s = self.settings
        stretched = min(len(self.peers) / s.announce_relay_per_s, s.announce_relay_max_interval_s)
        return max(s.announce_relay_min_interval_s, stretched)

    def far_expiry_s(self) -> float:
        """Lifetime of what a relayed announce taught us (paths, a far peer's reachability): several relay
        intervals, so one lost refresh does not make a far peer vanish."""
        return max(self.settings.path_ttl_s, FAR_EXPIRY_PER_RELAY_INTERVAL * self.announce_relay_interval_s())

    def peer_expiry_for(self, info: PeerInfo) -> float:
        """Seconds of silence after which ``info`` is shown as gone: ``peer_expiry_s`` for a neighbour, longer
        for a far peer whose announces reach us only every relay interval."""
        if info.link_id is not None or info.hops <= 1:
            return self.settings.peer_expiry_s
        return max(self.settings.peer_expiry_s, self.far_expiry_s())

    def is_reachable(self, info: PeerInfo, now: float) -> bool:
        return info.reachable(now, self.peer_expiry_for(info))

    def _announce_relay(self, link_id: str, pkt: Packet, ann: Announce, now: float) -> str:
        """How far to pass on an accepted announce: ``"all"`` links, ``"phones"`` only (links to neighbours
        without SETTLED_ANNOUNCE_CAPABILITY: BitChat phones, which expect every announce, as BitChat relays
        everything), or ``"fresh"`` (a link-up announce: nowhere, see below).

        Announce relay suppression: pass on an origin's announce if it is the first we see, if it changed
        (at most every ANNOUNCE_CHANGE_GAP_S) or if the relay interval has passed since we last passed one on.
        Every node still hears its neighbours' every announce; far nodes hear each peer once per interval.

        An AIVillage neighbour's announce (SETTLED_ANNOUNCE_CAPABILITY) on a link younger than FRESH_LINK_S is its
        link-up announce or its answer to ours, sent before it had heard its other neighbours: it is not passed on
        (a phone's is: phones send no settled announce). The neighbour announces again on
        every link SETTLE_ANNOUNCE_S after a link comes up, naming its neighbours; that one goes out (one flood per
        node at start-up, not one per neighbour list it went through)."""
        origin, payload = pkt.sender_id, pkt.payload
        link = self.links.get(link_id)
        if (
            pkt.ttl >= MAX_TTL
            and link is not None
            and now - link.up_since < FRESH_LINK_S
            and (ann.capabilities or 0) & SETTLED_ANNOUNCE_CAPABILITY
        ):
            return "fresh"
        last = self._announce_relays.get(origin)
        relays = 1
        if last is not None:
            age = now - last[0]
            relays = last[2] + 1
            if age < 0:
                pass  # the clock went back: relay, and start over
            elif last[1] == payload:
                # In a lossy neighbourhood a thinned flood misses nodes near the TTL horizon: the first few
                # relays of an origin come at the short interval, so they get several chances to learn it.
                early = last[2] < LOSSY_EARLY_RELAYS and self.lossy_neighbourhood()
                interval = self.settings.announce_relay_min_interval_s if early else self.announce_relay_interval_s()
                if age < interval:
                    return "phones"
            elif age < ANNOUNCE_CHANGE_GAP_S:
                return "phones"
        self._announce_relays[origin] = (now, payload, relays)
        self._announce_relays.move_to_end(origin)
        while len(self._announce_relays) > self.settings.max_peers:
            self._announce_relays.popitem(last=False)
        return "all"

    def lossy_neighbourhood(self) -> bool:
        """Our links lose many frames: under LOSSY_PONG_RATIO of our pings were answered (at least 8 sent)."""
        return self.pings_sent >= 8 and self.pongs_received < LOSSY_PONG_RATIO * self.pings_sent

    def _settles(self, link_id: str) -> bool:
        """The neighbour on ``link_id`` announced SETTLED_ANNOUNCE_CAPABILITY (an AIVillage node)."""
        return self._neighbour_with(link_id, SETTLED_ANNOUNCE_CAPABILITY) is not None

    # ---------------------------------------------------------------- sessions
    def _reachable(self, peer_id: bytes, now: float) -> bool:
        """Worth sending to: heard from within two peer expiries. (A peer 6-7 hops away loses whole announces
        on a lossy path, and busy nodes announce only every 30 s: one expiry is too quick to give up.)"""
        info = self.peers.get(peer_id)
        if info is None:
            return self.sessions.session(peer_id) is not None  # unheard of, but it finished a handshake with us
        return info.reachable(now, HOLD_AFTER_EXPIRIES * self.peer_expiry_for(info))

    def _send_encrypted(
        self, peer_id: bytes, plaintext: bytes, now: float, *, queue: bool, flood: bool = False, tag: str | None = None
    ) -> None:
        """Encrypt to ``peer_id`` if a session exists; otherwise start a handshake (and, with ``queue``,
        hold the plaintext until it completes — acks are queued, private messages rely on retries)."""
        session = self.sessions.session(peer_id)
        if session is None:
            if queue:
                q = self._session_queue.setdefault(peer_id, deque(maxlen=PENDING_SESSION_FRAMES))
                q.append(plaintext)
            self._start_handshake(peer_id, now)
            return
        try:
            ciphertext = session.encrypt(plaintext)
        except CryptoError:  # nonce space exhausted: start over with a fresh handshake
            self.sessions.drop(peer_id)
            self._start_handshake(peer_id, now)
            return
        links = self._send_directed(MessageType.NOISE_ENCRYPTED, ciphertext, peer_id, now, flood=flood, tag=tag)
        self.last_links[peer_id] = links
        self.last_links.move_to_end(peer_id)
        while len(self.last_links) > self.settings.max_peers:
            self.last_links.popitem(last=False)

    def send_app(self, peer_id: bytes, plaintext: bytes, now: float) -> None:
        """Send an app-channel plaintext (from :attr:`app`) in the peer's Noise session, starting one if needed."""
        if self.peers.get(peer_id) is None:
            raise MeshError(f"peer {peer_id.hex()} is unknown: no verified announce from it yet")
        self._send_encrypted(peer_id, plaintext, now, queue=True)

    def _start_handshake(self, peer_id: bytes, now: float, *, flood: bool = False) -> None:
        msg1 = self.sessions.initiate(peer_id, now)
        if msg1 is not None:
            self._send_directed(MessageType.NOISE_HANDSHAKE, msg1, peer_id, now, flood=flood)

    def _verified(self, pkt: Packet, wire: bytes) -> PeerInfo | None:
        """The sender's PeerInfo if the packet's signature verifies with its pinned signing key."""
        info = self.peers.get(pkt.sender_id)
        if info is None:
            self.counters.unverified_sender += 1
            return None
        if not self.verify(wire, info.signing_public_key, self.limits):
            self.counters.bad_signature += 1
            return None
        return info

    # ---------------------------------------------------------------- courier copies
    def _seal_for_couriers(self, p: PendingMessage, now: float) -> None:
        info = self.peers.get(p.peer_id)
        if info is None:
            return  # no Noise key to seal to: only the peer's own announce can help
        p.sealed = True
        expires = self.wall_ms(now) + int(self.settings.courier_expiry_s * 1000)
        plaintext = encode_noise_payload(NoisePayloadType.PRIVATE_MESSAGE, encode_private_message(p.message_id, p.text))
        sealed = seal(
            plaintext,
            sender_static=self.identity.noise_private,
            recipient_id=p.peer_id,
            recipient_static=info.noise_public_key,
            expires_at_ms=expires,
        )
        self.counters.courier_sealed += 1
        if self.seal_for_mailbox:
            self._events.append(
                EnvelopeSealed(p.message_id, p.peer_id, encode_envelope(Envelope(p.peer_id, expires, 1, sealed)))
            )
        if not self.settings.courier_copies:
            return
        self.couriers.add(Envelope(p.peer_id, expires, self.settings.courier_copies, sealed), self.wall_ms(now))
        for link_id in list(self.links):  # spray to whoever is around now
            peer = self.paths.peer_on_link(link_id)
            if peer is not None:
                self._meet(peer, link_id, now)

    def _meet(self, peer: bytes, link_id: str, now: float) -> None:
        """A direct neighbour is here: hand it the envelopes (or copies) it should carry or receive."""
        for env in self.couriers.meet(peer, self.wall_ms(now)):
            pkt = dataclasses.replace(
                self._packet(MessageType.COURIER_ENVELOPE, encode_envelope(env), now, peer), ttl=1
            )  # TTL 1: straight to the neighbour, never relayed
            self._emit([link_id], pkt)
            self.counters.courier_handed += 1


def arrived_flooded(pkt: Packet) -> bool:
    """A directed packet from beyond our neighbours that came without a source route: its sender escalated to a
    flood (or had only a reverse path), so the answer should not trust a single path either."""
    return not pkt.route and hops_travelled(pkt) > 1


def smoothed(old: float | None, sample: float) -> float:
    return sample if old is None else (1 - RTT_SMOOTHING) * old + RTT_SMOOTHING * sample


def hops_travelled(pkt: Packet) -> int:
    return max(1, MAX_TTL - min(pkt.ttl, MAX_TTL) + 1)


def public_message_id(pkt: Packet) -> str:
    """BitChat's packet ID (bitchat/Sync/PacketIdUtil.swift): SHA-256(type ‖ sender ‖ ts u64 ‖ payload)[0:16]."""
    digest = hashlib.sha256(
        bytes([pkt.type]) + pkt.sender_id + struct.pack(">Q", pkt.timestamp_ms) + pkt.payload
    ).digest()
    return digest[:16].hex()
