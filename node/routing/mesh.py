"""The neighbour-messaging core (sans-IO): announces, signed public messages, Noise-protected private
messages with delivery acks, fragments, pings and leaves — BitChat's minimal interoperable node
(BITCHAT.md §2 "Minimal interoperable node").

Inputs are plain method calls carrying ``now`` (monotonic seconds); outputs are polled:

* :meth:`MeshCore.frames_to_send` → ``[(link_id, frame_bytes), ...]``
* :meth:`MeshCore.next_event` → :data:`MeshEvent` or None
* :meth:`MeshCore.get_timer` / :meth:`MeshCore.handle_timer` — the single timer the adapter re-arms.

Packet timestamps are wall-clock ms: ``wall_offset_ms + now * 1000`` (the adapter measures the offset once),
so a mesh runs entirely in simulated time under trio's MockClock.

Multi-hop: every packet not addressed to us alone is relayed by BitChat's rules (:mod:`node.routing.relay`:
TTL, jitter, fan-out limits, never back out of the arrival link). Directed packets we originate follow the path
table (:mod:`node.routing.paths`): the peer's cheapest direct link, else a v2 source route through the
topology learned from announces, else the link the peer's announces arrive on, else a flood. With
``mesh.routing = "flood"`` every packet is flooded instead (a benchmark baseline).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import struct
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from node.config import MeshSection
from node.crypto.errors import ReplayError
from node.errors import CryptoError, MeshError
from node.identity import Identity, peer_id_from_noise_key
from node.routing.app import AppChannel, AppEvent
from node.routing.courier import (
    CourierStore,
    Envelope,
    decode_envelope_untrusted,
    encode_envelope,
    open_untrusted,
    seal,
)
from node.routing.dedupe import DedupeCache, dedupe_key
from node.routing.paths import PathTable, Route
from node.routing.peers import PeerInfo, PeerTable
from node.routing.relay import RelayQueue, fanout_subset, relay_jitter_s, relayed_ttl, with_ttl
from node.routing.sessions import SessionManager
from node.wire import (
    Announce,
    MalformedFrame,
    MessageType,
    NoisePayloadType,
    Packet,
    Ping,
    Reassembler,
    WireLimits,
    decode_announce_untrusted,
    decode_fragment_untrusted,
    decode_noise_payload_untrusted,
    decode_packet_untrusted,
    decode_ping_untrusted,
    decode_private_message_untrusted,
    encode_announce,
    encode_noise_payload,
    encode_packet,
    encode_ping,
    encode_private_message,
    fragment_frame,
    is_broadcast,
    sign_packet,
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
ANNOUNCE_ANSWER_GAP_S = 0.15  # BitChat forces announces on a link at least this far apart
PADDED_TYPES = (MessageType.NOISE_HANDSHAKE, MessageType.NOISE_ENCRYPTED)  # only these are padded on air


@dataclass(frozen=True, slots=True)
class PeerAnnounced:
    peer_id: bytes
    nickname: str
    new: bool
    link_id: str | None


@dataclass(frozen=True, slots=True)
class PeerLeft:
    peer_id: bytes
    nickname: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message_id: str
    sender_id: bytes
    sender_nickname: str
    text: str
    private: bool
    hops: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class DeliveryAcked:
    message_id: str
    peer_id: bytes


@dataclass(frozen=True, slots=True)
class PrivateFailed:
    message_id: str
    peer_id: bytes
    reason: str


MeshEvent = PeerAnnounced | PeerLeft | MessageReceived | DeliveryAcked | PrivateFailed | AppEvent


@dataclass(slots=True)
class MeshCounters:
    frames_in: int = 0
    frames_out: int = 0
    malformed: int = 0
    duplicate: int = 0
    stale: int = 0
    own_echo: int = 0
    bad_signature: int = 0
    unverified_sender: int = 0
    key_mismatch: int = 0
    binding_mismatch: int = 0
    not_for_us: int = 0
    handshake_failed: int = 0
    decrypt_failed: int = 0
    replayed: int = 0
    fragments_reassembled: int = 0
    unknown_type: int = 0
    private_retries: int = 0
    pings_answered: int = 0
    relayed: int = 0  # relay jobs sent (one per packet, on one or more links)
    relay_cancelled: int = 0  # pending relays made unnecessary: every target link sent us a copy meanwhile
    relay_queue_full: int = 0
    sent_direct: int = 0  # directed packets we originated, by how they left
    sent_routed: int = 0
    sent_reverse: int = 0
    sent_flooded: int = 0
    courier_sealed: int = 0  # our own held messages turned into envelopes
    courier_carried: int = 0  # envelopes accepted to carry for others
    courier_handed: int = 0  # envelope copies handed to a neighbour (carrier or recipient)
    courier_opened: int = 0  # envelopes for us, opened
    courier_refused: int = 0  # envelopes refused: malformed, unopenable, expired or no room


@dataclass
class _Pending:
    message_id: str
    peer_id: bytes
    text: str
    created: float
    attempts: int = 0
    next_try: float = 0.0
    free_send: bool = False  # the next send follows a fresh session: it does not count as an attempt
    sealed: bool = False  # courier copies were made


@dataclass
class _LinkState:
    mtu: int
    up_since: float
    bound_key: bytes | None = None  # the peer's Ed25519 key as the transport authenticated it


@dataclass
class MeshCore:
    identity: Identity
    settings: MeshSection
    limits: WireLimits
    nickname: str
    wall_offset_ms: float
    rng: random.Random = field(default_factory=random.Random)
    # Checks a received frame's Ed25519 signature: (frame, signing key, limits) -> valid. The default is the
    # codec's; a simulator of many nodes in one process may pass a memoising wrapper of it.
    verify: Callable[[bytes, bytes, WireLimits], bool] = verify_wire_signature

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
        self.links: dict[str, _LinkState] = {}
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self._seen_private: OrderedDict[str, None] = OrderedDict()
        self._session_queue: dict[bytes, deque[bytes]] = {}
        self._out: list[tuple[str, bytes]] = []
        self._events: deque[MeshEvent] = deque()
        self._next_announce: float | None = None
        self._pings: OrderedDict[bytes, tuple[bytes, str, float]] = OrderedDict()  # nonce -> (peer, link, sent)
        s = self.settings
        self.paths = PathTable(self.peer_id, path_ttl_s=s.path_ttl_s, max_hops=s.default_ttl, max_entries=s.max_peers)
        self.relays = RelayQueue(s.relay_queue_max)
        self._flood = s.routing == "flood"
        self.couriers = CourierStore(s.courier_max_envelopes)
        self.app = AppChannel(self.rng)  # app request/response codec and matching (node.routing.app)
        self._announced_at: dict[str, float] = {}  # link -> when we last announced on it
        self._answers: dict[str, float] = {}
        # Links the last encrypted frame to each peer left on (bounded by the peer table's size).
        self.last_links: OrderedDict[bytes, list[str]] = (
            OrderedDict()
        )  # link -> when a deferred answer to a new neighbour is due

    # ---------------------------------------------------------------- time
    def wall_ms(self, now: float) -> int:
        return int(self.wall_offset_ms + now * 1000.0)

    def get_timer(self) -> float | None:
        candidates = [
            t
            for t in (
                self._next_announce,
                self.sessions.next_deadline(),
                min((p.next_try for p in self.pending.values()), default=None),
                self.reassembler.next_expiry(),
                self.relays.next_due(),
                min(self._answers.values(), default=None),
            )
            if t is not None
        ]
        return min(candidates, default=None)

    def handle_timer(self, now: float) -> None:
        if self._next_announce is not None and now >= self._next_announce:
            self._announce_all(now)
        for link_id, due in list(self._answers.items()):
            if due <= now:
                del self._answers[link_id]
                self._send_announce([link_id], now)
        for peer in self.sessions.expire(now):
            # A handshake message was lost. If we still have something to say, try again straight away (one
            # handshake per handshake_timeout_s keeps within BitChat's 10 per minute per peer).
            waiting = self._session_queue.get(peer) or any(p.peer_id == peer for p in self.pending.values())
            if waiting and self._reachable(peer, now):
                self._start_handshake(peer, now, flood=True)  # the routed attempt was lost: every path now
            else:
                self._session_queue.pop(peer, None)
        self.reassembler.expire(now)
        for job in self.relays.pop_due(now):
            self.counters.relayed += 1
            for link_id in job.link_ids:
                self._emit_frame(link_id, job.frame)
        for p in list(self.pending.values()):
            if p.next_try <= now:
                self._attempt_private(p, now)

    def _schedule_announce(self, now: float) -> None:
        # BitChat (BLEMaintenancePolicy): 15 ± 4 s, doubled to 30 ± 8 s with >= 6 links, where announces are
        # the bulk of the traffic.
        s = self.settings
        factor = 2.0 if len(self.links) >= BUSY_LINKS else 1.0
        jitter = self.rng.uniform(-s.announce_jitter_s, s.announce_jitter_s)
        self._next_announce = now + max(0.5, factor * (s.announce_interval_s + jitter))

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
        state = self.links.get(link_id)
        if state is None:
            return
        if len(frame) <= state.mtu:
            self._out.append((link_id, frame))
            return
        if packet is None:
            try:
                packet = decode_packet_untrusted(frame, self.limits)
            except MalformedFrame:  # cannot happen for a frame we accepted; never relay what we cannot parse
                self.counters.malformed += 1
                return
        fid = self.rng.getrandbits(64).to_bytes(8, "big")
        for piece in fragment_frame(packet, frame, state.mtu, fid, self.limits):
            self._out.append((link_id, piece))

    def path_to(self, peer_id: bytes, now: float) -> tuple[list[str], Route | None]:
        """Links for a directed packet we originate, and the route used (None: flooded)."""
        if not self._flood:
            route = self.paths.route(peer_id, now)
            if route is not None and route.link_id in self.links and route.hops <= self.settings.default_ttl:
                return [route.link_id], route
        return list(self.links), None

    def _send_directed(
        self, msg_type: int, payload: bytes, peer_id: bytes, now: float, *, flood: bool = False
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
        self._emit(links, self._packet(msg_type, payload, now, peer_id, route.via if route else ()))
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

    # ---------------------------------------------------------------- links
    def link_up(
        self,
        link_id: str,
        mtu: int,
        now: float,
        authenticated_signing_key: bytes | None = None,
        *,
        cost_weight: float = 1.0,
    ) -> None:
        """A link came up. ``cost_weight`` is the transport's preference in path costs (lower is preferred)."""
        self.links[link_id] = _LinkState(mtu=mtu, up_since=now, bound_key=authenticated_signing_key)
        self.paths.link_up(link_id, cost_weight)
        self._send_announce([link_id], now)
        if self._next_announce is None:
            self._schedule_announce(now)

    def link_down(self, link_id: str, now: float) -> None:
        self.links.pop(link_id, None)
        self._announced_at.pop(link_id, None)
        self._answers.pop(link_id, None)
        self.peers.unbind_link(link_id)
        self.paths.link_down(link_id)
        # Fail over: whatever awaits an ack and last left on this link is resent at once along the next best path.
        for p in self.pending.values():
            if p.attempts and p.next_try > now and link_id in self.last_links.get(p.peer_id, ()):
                p.next_try = now
                p.free_send = True

    # ---------------------------------------------------------------- announces and leave
    def announce_packet(self, now: float) -> Packet:
        ann = Announce(
            nickname=self.nickname,
            noise_public_key=self.identity.noise_public,
            signing_public_key=self.identity.signing_public,
            neighbours=self._direct_neighbours(),
            capabilities=None,
            geohash=None,
        )
        return sign_packet(self._packet(MessageType.ANNOUNCE, encode_announce(ann), now), self.identity.signing_key)

    def _direct_neighbours(self) -> tuple[bytes, ...]:
        direct = [p for p in (self.paths.peer_on_link(lid) for lid in self.links) if p is not None]
        return tuple(dict.fromkeys(direct))[-10:]  # BitChat carries at most 10 neighbour IDs

    def _send_announce(self, link_ids: list[str], now: float) -> None:
        self._emit(link_ids, self.announce_packet(now))
        for link_id in link_ids:
            self._announced_at[link_id] = now

    def _answer_announce(self, link_id: str, now: float) -> None:
        last = self._announced_at.get(link_id)
        if last is not None and now - last < ANNOUNCE_ANSWER_GAP_S:
            self._answers[link_id] = last + ANNOUNCE_ANSWER_GAP_S  # one just went out: answer a little later
            return
        self._send_announce([link_id], now)

    def _announce_all(self, now: float) -> None:
        if self.links:
            self._send_announce(list(self.links), now)
        self._expire_pings(now)
        for link_id in list(self.links):
            peer = self.paths.peer_on_link(link_id)
            if peer is not None:
                self._ping(peer, link_id, now)
        self._schedule_announce(now)

    def _ping(self, peer_id: bytes, link_id: str, now: float) -> None:
        """A directed BitChat ping (BF/MeshPingPayload.swift) on one link; the pong gives the link's round-trip
        time, a missing pong counts towards its loss estimate."""
        nonce = self.rng.getrandbits(64).to_bytes(8, "big")
        self._pings[nonce] = (peer_id, link_id, now)
        while len(self._pings) > MAX_OUTSTANDING_PINGS:
            self._pings.popitem(last=False)
        payload = encode_ping(Ping(nonce, self.settings.default_ttl))
        self._emit([link_id], self._packet(MessageType.PING, payload, now, peer_id))

    def _expire_pings(self, now: float) -> None:
        while self._pings:
            nonce, (_, link_id, sent) = next(iter(self._pings.items()))
            if now - sent <= PING_EXPIRY_S:
                break
            del self._pings[nonce]
            stats = self.paths.links.get(link_id)
            if stats is not None:
                stats.loss = (1 - RTT_SMOOTHING) * stats.loss + RTT_SMOOTHING

    def _on_pong(self, pkt: Packet, now: float) -> None:
        try:
            pong = decode_ping_untrusted(pkt.payload)
        except MalformedFrame:
            self.counters.malformed += 1
            return
        sent = self._pings.pop(pong.nonce, None)
        if sent is None or sent[0] != pkt.sender_id or now - sent[2] > PING_EXPIRY_S:
            return
        sample = now - sent[2]
        info = self.peers.get(pkt.sender_id)
        if info is not None:
            info.rtt_s = _smooth(info.rtt_s, sample)
        stats = self.paths.links.get(sent[1])
        if stats is not None:
            stats.rtt_s = _smooth(stats.rtt_s, sample)
            stats.loss *= 1 - RTT_SMOOTHING

    def leave(self, now: float) -> None:
        """Queue a signed leave on every link (call before shutting down)."""
        pkt = sign_packet(self._packet(MessageType.LEAVE, b"", now), self.identity.signing_key)
        self._emit(list(self.links), pkt)

    # ---------------------------------------------------------------- user actions
    def broadcast(self, text: str, now: float) -> str:
        data = text.encode()
        if not text or len(text) > self.settings.max_public_text_chars:
            raise MeshError(
                f"a public message must have 1 to {self.settings.max_public_text_chars} characters "
                f"(mesh.max_public_text_chars); this one has {len(text)}"
            )
        pkt = sign_packet(self._packet(MessageType.MESSAGE, data, now), self.identity.signing_key)
        self._emit(list(self.links), pkt)
        self.dedupe.check_and_add(dedupe_key(pkt.sender_id, pkt.timestamp_ms, pkt.type, pkt.payload), now)
        return public_message_id(pkt)

    def send_private(self, peer_id: bytes, text: str, now: float) -> str:
        """Queue a private message to a peer we have an announce from; returns its ID."""
        if self.peers.get(peer_id) is None:
            raise MeshError(f"peer {peer_id.hex()} is unknown: no verified announce from it yet")
        self.check_private(peer_id, text)
        message_id = self.new_message_id()
        self.queue_private(message_id, peer_id, text, now)
        return message_id

    def new_message_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).upper()

    def check_private(self, peer_id: bytes, text: str) -> None:
        """Raise :class:`MeshError` unless :meth:`queue_private` would accept this message now."""
        size = len(text.encode())
        if not text or size > PRIVATE_TEXT_MAX_BYTES:
            raise MeshError(
                f"a private message must have 1 to {PRIVATE_TEXT_MAX_BYTES} bytes of UTF-8 text "
                f"(BitChat's private-message field is one length byte); this one has {size}"
            )
        if peer_id == self.peer_id:
            raise MeshError("that is this node's own peer ID")
        if len(self.pending) >= self.settings.max_pending_private:
            raise MeshError(
                f"{len(self.pending)} private messages already await delivery "
                "(mesh.max_pending_private); try again later"
            )
        for_peer = sum(1 for q in self.pending.values() if q.peer_id == peer_id)
        if for_peer >= self.settings.max_pending_per_peer:
            raise MeshError(
                f"{for_peer} private messages to {peer_id.hex()} already await delivery "
                "(mesh.max_pending_per_peer); try again later"
            )

    def queue_private(
        self, message_id: str, peer_id: bytes, text: str, now: float, created: float | None = None
    ) -> None:
        """Queue a private message under a given ID — a new one, or one restored from the outbox after a
        restart (``created`` in this core's clock, possibly in the past; the peer may be unknown yet: the
        message waits for its announce)."""
        if message_id in self.pending:
            return
        self.check_private(peer_id, text)
        p = _Pending(message_id, peer_id, text, created=now if created is None else created, next_try=now)
        self.pending[message_id] = p
        self._attempt_private(p, now)

    def _attempt_private(self, p: _Pending, now: float) -> None:
        s = self.settings
        reason = None
        if p.attempts >= s.private_max_attempts:
            reason = f"no delivery ack after {p.attempts} attempts"
        elif now - p.created >= s.private_expiry_s:
            reason = f"not delivered within {s.private_expiry_s:g} s (mesh.private_expiry_s)"
        if reason is not None:
            del self.pending[p.message_id]
            self._events.append(PrivateFailed(p.message_id, p.peer_id, reason))
            return
        if not self._reachable(p.peer_id, now):
            # Store and forward: the peer is unknown (restored from the outbox before it announced itself) or has
            # not been heard from lately (a partition, or it is offline). Sending would only flood the mesh and
            # burn attempts; its next announce wakes the message up. Meanwhile, carriers may take it there.
            if s.courier_copies and not p.sealed and now - p.created >= s.courier_after_s:
                self._seal_for_couriers(p, now)
            wake = min(now + s.private_retry_max_interval_s, p.created + s.private_expiry_s)
            if s.courier_copies and not p.sealed:
                wake = min(wake, max(now, p.created + s.courier_after_s))
            p.next_try = wake
            return
        if self.sessions.session(p.peer_id) is None:
            # Nothing can be sent yet: (re)start the handshake and look again when it could have finished.
            # This is not an attempt; completing the handshake reschedules the send at once.
            # The first try follows the path table; later ones (a handshake message was lost) flood.
            self._start_handshake(p.peer_id, now, flood=now - p.created >= s.handshake_timeout_s)
            p.next_try = min(now + s.handshake_timeout_s, p.created + s.private_expiry_s)
            return
        counted = not p.free_send  # a send right after a fresh handshake is on the house
        p.free_send = False
        if counted:
            if p.attempts:
                self.counters.private_retries += 1
            p.attempts += 1
        backoff = s.private_retry_interval_s * (2 ** min(30, max(0, p.attempts - 1)))
        p.next_try = now + min(backoff, s.private_retry_max_interval_s)
        plaintext = encode_noise_payload(NoisePayloadType.PRIVATE_MESSAGE, encode_private_message(p.message_id, p.text))
        # The first send follows the path table; a resend (no ack came back) floods.
        self._send_encrypted(p.peer_id, plaintext, now, queue=False, flood=p.attempts > 1)
        if counted and p.attempts % REHANDSHAKE_AFTER_ATTEMPTS == 0 and self.sessions.session(p.peer_id) is not None:
            # Still no ack: our session may be one the peer no longer holds (it restarted, or lost the last
            # handshake message). Start a fresh handshake on every path; the old session serves until it completes.
            self._start_handshake(p.peer_id, now, flood=True)

    # ---------------------------------------------------------------- courier copies
    def _seal_for_couriers(self, p: _Pending, now: float) -> None:
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
        self.couriers.add(Envelope(p.peer_id, expires, self.settings.courier_copies, sealed), self.wall_ms(now))
        self.counters.courier_sealed += 1
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

    def _on_envelope(self, link_id: str, pkt: Packet, now: float) -> bool:
        try:
            env = decode_envelope_untrusted(pkt.payload)
        except MalformedFrame:
            self.counters.courier_refused += 1
            return False
        if env.recipient_id != self.peer_id:
            if not self.couriers.add(env, self.wall_ms(now)):
                self.counters.courier_refused += 1
                return False
            self.counters.courier_carried += 1
            for lid in self.paths.direct_links(env.recipient_id, now)[:1]:  # the recipient is right here
                self._meet(env.recipient_id, lid, now)
            return True
        if env.expires_at_ms <= self.wall_ms(now):
            self.counters.courier_refused += 1
            return False
        try:
            sender, plaintext = open_untrusted(env, self.identity.noise_private)
            ptype, body = decode_noise_payload_untrusted(plaintext)
        except (CryptoError, MalformedFrame):
            self.counters.courier_refused += 1
            return False
        self.counters.courier_opened += 1
        if ptype == NoisePayloadType.PRIVATE_MESSAGE:
            try:
                self._on_noise_payload(sender, ptype, body, pkt, now)
            except MalformedFrame:
                self.counters.courier_refused += 1
                return False
        return True

    def _reachable(self, peer_id: bytes, now: float) -> bool:
        """Worth sending to: heard from within two peer expiries. (A peer 6-7 hops away loses whole announces
        on a lossy path, and busy nodes announce only every 30 s: one expiry is too quick to give up.)"""
        info = self.peers.get(peer_id)
        return info is not None and info.reachable(now, HOLD_AFTER_EXPIRIES * self.settings.peer_expiry_s)

    def _send_encrypted(
        self, peer_id: bytes, plaintext: bytes, now: float, *, queue: bool, flood: bool = False
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
        links = self._send_directed(MessageType.NOISE_ENCRYPTED, ciphertext, peer_id, now, flood=flood)
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

    # ---------------------------------------------------------------- receive
    def receive_frame(self, link_id: str, data: bytes, now: float) -> None:
        self.counters.frames_in += 1
        try:
            pkt = decode_packet_untrusted(data, self.limits)
        except MalformedFrame:
            self.counters.malformed += 1
            return
        self._handle_packet(link_id, pkt, data, now)

    def _handle_packet(self, link_id: str, pkt: Packet, wire: bytes, now: float, *, relay: bool = True) -> None:
        if pkt.sender_id == self.peer_id:
            self.counters.own_echo += 1
            return
        if not pkt.is_rsr and abs(pkt.timestamp_ms - self.wall_ms(now)) > self.settings.max_clock_skew_s * 1000:
            self.counters.stale += 1
            return
        key = dedupe_key(pkt.sender_id, pkt.timestamp_ms, pkt.type, pkt.payload)
        if not self.dedupe.check_and_add(key, now):
            self.counters.duplicate += 1
            if self.relays.heard_from(key, link_id):
                self.counters.relay_cancelled += 1  # every neighbour we would pass it to has it already
            return
        broadcast = is_broadcast(pkt)
        for_us = pkt.recipient_id == self.peer_id
        t = pkt.type
        authentic = True  # False: failed authentication or parsing, never relayed
        if t == MessageType.FRAGMENT:
            if broadcast or for_us:
                authentic = self._on_fragment(link_id, pkt, now)
        elif t == MessageType.ANNOUNCE:
            authentic = self._on_announce(link_id, pkt, wire, now)
        elif not broadcast and not for_us:
            self.counters.not_for_us += 1  # passed on below
        elif t == MessageType.MESSAGE:
            authentic = self._on_public(pkt, wire, now)
        elif t == MessageType.LEAVE:
            authentic = self._on_leave(pkt, wire)
        elif t == MessageType.NOISE_HANDSHAKE and for_us:
            self._on_handshake(pkt, now)
        elif t == MessageType.NOISE_ENCRYPTED and for_us:
            self._on_encrypted(pkt, now)
        elif t == MessageType.PING and for_us:
            self._on_ping(link_id, pkt, now)
        elif t == MessageType.PONG and for_us:
            self._on_pong(pkt, now)
        elif t == MessageType.COURIER_ENVELOPE and for_us:
            authentic = self._on_envelope(link_id, pkt, now)
        else:
            self.counters.unknown_type += 1  # still relayed, as BitChat relays types it does not know
        if relay and authentic and not for_us:
            self._relay(link_id, pkt, wire, key, now)
        if not authentic:
            # The dedupe key does not cover the signature: a forged or broken copy must not make the genuine
            # packet, arriving later, look like a duplicate.
            self.dedupe.discard(key)

    # ---------------------------------------------------------------- relay
    def _relay(self, in_link: str, pkt: Packet, wire: bytes, key: str, now: float) -> None:
        if pkt.ttl <= 1 or pkt.is_rsr or pkt.type == MessageType.REQUEST_SYNC:
            return
        broadcast = is_broadcast(pkt)
        degree = len(self.links)
        others = [lid for lid in self.links if lid != in_link]
        if self._flood:
            ttl, targets, delay = min(pkt.ttl, MAX_TTL) - 1, others, 0.0
        else:
            ttl = relayed_ttl(pkt.type, pkt.ttl, broadcast=broadcast, degree=degree)
            if broadcast:
                targets = others
                if pkt.type not in (MessageType.ANNOUNCE, MessageType.FRAGMENT):
                    targets = fanout_subset(key, others)
            else:
                targets = self._directed_relay_links(pkt, in_link, now)
            delay = relay_jitter_s(self.rng, pkt.type, broadcast=broadcast, degree=degree)
        if ttl < 1 or not targets:
            return
        frame = with_ttl(wire, ttl)
        if not self.relays.push(now + delay, key, frame, targets):
            self.counters.relay_queue_full += 1

    def _directed_relay_links(self, pkt: Packet, in_link: str, now: float) -> list[str]:
        """BitChat's forwarding of a directed packet (BLE/BLERouteForwardingPolicy.swift): along its source
        route if it has one (to hop 0 when we are not on it), straight to the recipient when it is our
        neighbour, else a flood. Never back out of the arrival link."""
        target = pkt.recipient_id
        assert target is not None
        if pkt.route:
            if self.peer_id in pkt.route:
                i = pkt.route.index(self.peer_id)
                target = pkt.route[i + 1] if i + 1 < len(pkt.route) else target
            else:
                target = pkt.route[0]
        direct = [lid for lid in self.paths.direct_links(target, now) if lid != in_link]
        if direct:
            return direct[:1]
        # No route in the packet and the target is not ours: flood, as BitChat does. (Forwarding it by our own
        # table instead turned a sender's deliberate flood — its resend after a lost routed copy — back into a
        # single path at the first relay.)
        return [lid for lid in self.links if lid != in_link]

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

    def _on_announce(self, link_id: str, pkt: Packet, wire: bytes, now: float) -> bool:
        try:
            ann = decode_announce_untrusted(pkt.payload)
        except MalformedFrame:
            self.counters.malformed += 1
            return False
        if peer_id_from_noise_key(ann.noise_public_key) != pkt.sender_id:
            self.counters.key_mismatch += 1
            return False
        if self.wall_ms(now) - pkt.timestamp_ms > self.settings.announce_max_age_s * 1000:
            self.counters.stale += 1
            return False
        if not self.verify(wire, ann.signing_public_key, self.limits):
            self.counters.bad_signature += 1
            return False
        direct = pkt.ttl >= MAX_TTL and link_id in self.links
        bound = self.links[link_id].bound_key if link_id in self.links else None
        if direct and bound is not None and bound != ann.signing_public_key:
            self.counters.binding_mismatch += 1  # the link's authenticated identity is someone else
            return False
        known = self.peers.get(pkt.sender_id)
        if known is not None and (
            known.noise_public_key != ann.noise_public_key or known.signing_public_key != ann.signing_public_key
        ):
            self.counters.key_mismatch += 1  # keys are pinned at first sight
            return False
        hops = max(1, MAX_TTL - min(pkt.ttl, MAX_TTL) + 1)
        if direct and not self.paths.bind(pkt.sender_id, link_id, now):
            self.counters.binding_mismatch += 1  # another peer holds this link: take the announce as relayed
            direct = False
        if direct and len(self.couriers):
            self._meet(pkt.sender_id, link_id, now)
        self.paths.on_announce(pkt.sender_id, ann.neighbours, link_id, hops, pkt.timestamp_ms, now)
        if known is None:
            info = PeerInfo(
                peer_id=pkt.sender_id,
                noise_public_key=ann.noise_public_key,
                signing_public_key=ann.signing_public_key,
                nickname=ann.nickname,
                first_seen=now,
                last_seen=now,
                link_id=link_id if direct else None,
                hops=hops,
                capabilities=ann.capabilities,
            )
            self.peers.upsert(info)
            # Answer a new neighbour's announce once, so it learns us even if our link-up announce was lost.
            # (Only a neighbour's: answering every far peer heard through relays floods the mesh n² times.)
            if direct:
                self._answer_announce(link_id, now)
            if direct:
                self._ping(info.peer_id, link_id, now)
        else:
            info = known
            was_gone = info.left or not info.reachable(now, self.settings.peer_expiry_s)
            info.nickname, info.last_seen, info.hops, info.left = ann.nickname, now, hops, False
            info.capabilities = ann.capabilities
            if direct:
                info.link_id = link_id
            self.peers.touch(info.peer_id, now)
            if not was_gone:
                return True
        self._events.append(PeerAnnounced(info.peer_id, info.nickname, known is None, info.link_id))
        for p in self.pending.values():  # messages waiting for this peer go now
            if p.peer_id == info.peer_id and p.next_try > now:
                p.next_try = now
        return True

    def _on_public(self, pkt: Packet, wire: bytes, now: float) -> bool:
        """False when the message must not be relayed: a bad signature or bad text. One from a sender we have
        no announce from yet cannot be checked: it is not shown, but relayed (BitChat relays what it cannot
        judge)."""
        info = self._verified(pkt, wire)
        if info is None:
            return self.peers.get(pkt.sender_id) is None
        try:
            text = pkt.payload.decode("utf-8")
        except UnicodeDecodeError:
            self.counters.malformed += 1
            return False
        self.peers.touch(info.peer_id, now)
        self._events.append(
            MessageReceived(
                public_message_id(pkt),
                info.peer_id,
                info.nickname,
                text,
                private=False,
                hops=_hops(pkt),
                timestamp_ms=pkt.timestamp_ms,
            )
        )
        return True

    def _on_leave(self, pkt: Packet, wire: bytes) -> bool:
        info = self._verified(pkt, wire)
        if info is None:
            return False  # unsigned or unverifiable leaves are neither believed nor relayed
        info.left = True
        self.sessions.drop(info.peer_id)
        self.paths.forget_peer(info.peer_id)
        self._events.append(PeerLeft(info.peer_id, info.nickname))
        return True

    def _on_handshake(self, pkt: Packet, now: float) -> None:
        peer = pkt.sender_id
        info = self.peers.get(peer)
        try:
            step = self.sessions.on_message_untrusted(peer, pkt.payload, now, info.noise_public_key if info else None)
        except CryptoError:
            self.counters.handshake_failed += 1
            return
        if step.reply is not None:
            self._send_directed(MessageType.NOISE_HANDSHAKE, step.reply, peer, now, flood=_flooded(pkt))
        if step.established:
            for plaintext in self._session_queue.pop(peer, deque()):
                self._send_encrypted(peer, plaintext, now, queue=True)
            for p in self.pending.values():  # don't wait for the retry timer; this send is on the house
                if p.peer_id == peer:
                    p.next_try = now
                    p.free_send = True

    def _on_encrypted(self, pkt: Packet, now: float) -> None:
        peer = pkt.sender_id
        if self.sessions.session(peer) is None:
            self.counters.decrypt_failed += 1
            # As BitChat: ciphertext without a session starts one. If we were the responder of a handshake,
            # the peer has finished it and our message 3 never arrived: start over as initiator now.
            self.sessions.abandon_responder(peer)
            self._start_handshake(peer, now, flood=True)  # recovery: the last attempt's path lost something
            return
        try:
            plaintext = self.sessions.decrypt_untrusted(peer, pkt.payload)
        except ReplayError:
            self.counters.replayed += 1  # a duplicate from the medium or a relay: harmless
            return
        except CryptoError:
            # The peer encrypts under keys we do not hold (it restarted, or finished a handshake whose last
            # message we lost). Start over; one handshake per peer at a time bounds what a forger can cause.
            self.counters.decrypt_failed += 1
            self.sessions.abandon_responder(peer)
            self._start_handshake(peer, now, flood=True)  # recovery: the last attempt's path lost something
            return
        try:
            ptype, body = decode_noise_payload_untrusted(plaintext)
            self._on_noise_payload(peer, ptype, body, pkt, now)
        except MalformedFrame:
            self.counters.malformed += 1

    def _on_noise_payload(self, peer: bytes, ptype: int, body: bytes, pkt: Packet, now: float) -> None:
        self.peers.touch(peer, now)
        if ptype == NoisePayloadType.PRIVATE_MESSAGE:
            message_id, text = decode_private_message_untrusted(body)
            ack = encode_noise_payload(NoisePayloadType.DELIVERED, message_id.encode())
            key = f"{peer.hex()}:{message_id}"
            # Ack every copy. A resend means our ack was lost, and a flooded copy means the sender's route failed:
            # either way the ack goes on every path.
            self._send_encrypted(peer, ack, now, queue=True, flood=key in self._seen_private or _flooded(pkt))
            if key in self._seen_private:
                return
            self._seen_private[key] = None
            while len(self._seen_private) > SEEN_PRIVATE_IDS:
                self._seen_private.popitem(last=False)
            info = self.peers.get(peer)
            self._events.append(
                MessageReceived(
                    message_id,
                    peer,
                    info.nickname if info else peer.hex(),
                    text,
                    private=True,
                    hops=_hops(pkt),
                    timestamp_ms=pkt.timestamp_ms,
                )
            )
        elif ptype == NoisePayloadType.DELIVERED:
            message_id = body.decode("utf-8", errors="replace")
            p = self.pending.get(message_id)
            if p is not None and p.peer_id == peer:
                del self.pending[message_id]
                self._events.append(DeliveryAcked(message_id, peer))
        elif ptype == NoisePayloadType.APP_CHANNEL:
            app_event = self.app.receive_untrusted(peer, body)
            if isinstance(app_event, bytes):  # a resent request we answered already: answer it again
                self._send_encrypted(peer, app_event, now, queue=True)
            elif app_event is not None:
                self._events.append(app_event)
        # read receipts, authenticated peer state and optional types are accepted and ignored

    def _on_ping(self, link_id: str, pkt: Packet, now: float) -> None:
        self.counters.pings_answered += 1
        if self.paths.peer_on_link(link_id) == pkt.sender_id:  # a neighbour's link probe: answer on that link
            self._emit([link_id], self._packet(MessageType.PONG, pkt.payload, now, pkt.sender_id))
        else:
            self._send_directed(MessageType.PONG, pkt.payload, pkt.sender_id, now)

    def _on_fragment(self, link_id: str, pkt: Packet, now: float) -> bool:
        try:
            frag = decode_fragment_untrusted(pkt.payload)
            whole = self.reassembler.add_untrusted(pkt.sender_id, frag, now)
        except MalformedFrame:
            self.counters.malformed += 1
            return False
        if whole is None:
            return True
        try:
            inner = decode_packet_untrusted(whole, self.limits)
        except MalformedFrame:
            self.counters.malformed += 1
            return True  # the fragments themselves were fine; others may be able to use them
        self.counters.fragments_reassembled += 1
        # The fragments were the relayed unit; the whole packet is processed but not relayed (BITCHAT.md §2.3).
        self._handle_packet(link_id, inner, whole, now, relay=False)
        return True


def _flooded(pkt: Packet) -> bool:
    """A directed packet from beyond our neighbours that came without a source route: its sender escalated to a
    flood (or had only a reverse path), so the answer should not trust a single path either."""
    return not pkt.route and _hops(pkt) > 1


def _smooth(old: float | None, sample: float) -> float:
    return sample if old is None else (1 - RTT_SMOOTHING) * old + RTT_SMOOTHING * sample


def _hops(pkt: Packet) -> int:
    return max(1, MAX_TTL - min(pkt.ttl, MAX_TTL) + 1)


def public_message_id(pkt: Packet) -> str:
    """BitChat's packet ID (bitchat/Sync/PacketIdUtil.swift): SHA-256(type ‖ sender ‖ ts u64 ‖ payload)[0:16]."""
    digest = hashlib.sha256(
        bytes([pkt.type]) + pkt.sender_id + struct.pack(">Q", pkt.timestamp_ms) + pkt.payload
    ).digest()
    return digest[:16].hex()


__all__ = [
    "DeliveryAcked",
    "MeshCore",
    "MeshCounters",
    "MeshEvent",
    "MessageReceived",
    "PeerAnnounced",
    "PeerLeft",
    "PrivateFailed",
]
