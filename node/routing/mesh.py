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

Announces are what a large mesh mostly carries, so their relaying is thinned where BitChat relays everything
(neighbours still hear every announce; only what travels further is cut):

* an unchanged announce from one origin is relayed once per *relay interval*, max(``announce_relay_min_interval_s``,
  min(peers heard of / ``announce_relay_per_s``, ``announce_relay_max_interval_s``)), a changed one after 30 s;
  paths learned from announces and far peers' reachability last 2.5 intervals
  (:meth:`MeshCore.announce_relay_interval_s`). In a lossy neighbourhood (under 65 % of our pings answered) an
  origin's first three relays come at the short interval, so nodes near the TTL horizon get several chances to
  learn it. Links to BitChat phones (neighbours without our capability bit 33) still get every announce we hear,
  as BitChat relays;
* an AIVillage neighbour's announces (bit 33) arriving on a link younger than 2 s (link-up announces and answers,
  sent before it had bound its other links) are not relayed; every node announces on all its links ~3-4 s after
  a link is bound (at most once per announce interval), and that one travels: one flood per node at start-up;
* an announce relay skips links to neighbours of the node it came from, and of every node a copy arrives from
  while it waits out its jitter (they have it already; a neighbourship counts only when both ends' announces name
  each other); see :meth:`MeshCore._not_covered`.

Between AIVillage nodes, a directed frame sent on one link is acknowledged by the next hop and resent until it is
(:mod:`node.routing.hoparq`, ``mesh.hop_retries``); with that, a private message's first two attempts (and
handshake attempts) follow the path table before resends flood.

The core is composed, not inherited (aioquic's ``QuicConnection`` holding ``QuicPacketRecovery``): components own
their state, bounds and timers, and :meth:`MeshCore.get_timer` is the earliest of their deadlines —

* :class:`~node.routing.output.LinkOutput`: links, the outgoing queue, fragmenting, directed sends, hop ARQ;
* :class:`~node.routing.delivery.PrivateDelivery`: Noise sessions, pending private messages, receipts;
* :class:`~node.routing.presence.Presence`: announces sent and checked, pings, identity pins, with
  :class:`~node.routing.announcing.AnnounceSchedule` (our announces' timers),
  :class:`~node.routing.announcing.AnnounceRelays` (which announces we pass on),
  :class:`~node.routing.pinging.PingTracker` (link probes) and :class:`~node.routing.pins.PinStore`;
* :class:`~node.routing.forwarding.Forwarder`: relaying; :class:`~node.routing.couriering.CourierDesk`: envelopes;
* :class:`~node.routing.containment.Containment`: a failure in one frame or timer task ends it only (counted);
* :class:`~node.routing.timers.TimerTasks`: what :meth:`MeshCore.handle_timer` runs (the relay queue's due jobs,
  hop-ARQ resends, announces, ping expiry, handshake and fragment expiry, private retries);
* the tables: peers, paths, dedupe, reassembly, relay queue, courier store, app channel, flood limiter.

Every structure remote input can grow is bounded; :meth:`MeshCore.bounded_sizes` reports each (current, bound).

:class:`MeshCore` itself parses what arrives, dispatches it, relays it, and is the one public object.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from node.errors import MeshError
from node.identity import Identity
from node.routing.announcing import AnnounceRelays, AnnounceSchedule
from node.routing.app import AppChannel
from node.routing.containment import Containment
from node.routing.courier import CourierStore
from node.routing.couriering import CourierDesk
from node.routing.dedupe import DedupeCache, dedupe_key
from node.routing.delivery import PrivateDelivery
from node.routing.events import (
    DeliveryAcked,
    EnvelopeSealed,
    MeshCounters,
    MeshEvent,
    MessageReceived,
    PeerAnnounced,
    PeerLeft,
    PrivateFailed,
)
from node.routing.forwarding import Forwarder
from node.routing.hoparq import ACK_DIGEST_BYTES, HopArqTable
from node.routing.meshbase import (
    MAX_TTL,
    SETTLED_ANNOUNCE_CAPABILITY,
    T_ANNOUNCE,
    T_COURIER_ENVELOPE,
    T_FRAGMENT,
    T_HOP_ACK,
    T_LEAVE,
    T_MESSAGE,
    T_NOISE_ENCRYPTED,
    T_NOISE_HANDSHAKE,
    T_PING,
    T_PONG,
    hops_travelled,
    public_message_id,
)
from node.routing.output import LinkOutput, LinkState
from node.routing.paths import PathTable, Route
from node.routing.peers import PeerInfo, PeerTable
from node.routing.pending import PendingMessage, PendingSet
from node.routing.pinging import PingTracker
from node.routing.pins import Pin, PinStore
from node.routing.presence import Presence
from node.routing.ratelimit import OriginLimiter
from node.routing.relay import TTL_OFFSET, RelayQueue
from node.routing.sessions import Msg1Tier, SessionManager
from node.routing.settings import MeshSection
from node.routing.timers import TimerTasks
from node.wire import (
    BROADCAST_ID,
    Announce,
    MalformedFrame,
    MessageType,
    Packet,
    Reassembler,
    WireLimits,
    decode_announce_untrusted,
    decode_fragment_untrusted,
    decode_packet_untrusted,
    sign_packet,
    verify_wire_signature,
)


@dataclass
class MeshCore:
    """The whole core (see the module docstring)."""

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
    # Builds the set of an announce's neighbour list (the path table keeps one per origin); likewise memoisable.
    neighbour_set: Callable[[tuple[bytes, ...]], frozenset[bytes]] = frozenset
    # Seal held messages after courier_after_s even with courier_copies = 0, for a mailbox (EnvelopeSealed events).
    seal_for_mailbox: bool = False
    # Identity pins the node persisted (node.routing.pins): bindings proven by handshakes in earlier runs.
    initial_pins: tuple[Pin, ...] = ()

    def __post_init__(self) -> None:
        s = self.settings
        self.peer_id = self.identity.peer_id
        self.counters = MeshCounters()
        self.peers = PeerTable(s.max_peers)
        self.pins = PinStore(s.max_pins, self.initial_pins)
        self.dedupe = DedupeCache(ttl_s=s.dedupe_ttl_s, max_entries=s.dedupe_max_entries)
        self.reassembler = Reassembler(
            self.limits,
            max_per_peer=s.fragment_max_assemblies_per_peer,
            max_bytes_per_peer=s.fragment_max_bytes_per_peer,
            max_bytes=s.fragment_max_bytes,
        )
        self.paths = PathTable(
            self.peer_id,
            path_ttl_s=s.path_ttl_s,
            max_hops=s.default_ttl,
            max_entries=s.max_peers,
            neighbour_set=self.neighbour_set,
        )
        self.relays = RelayQueue(s.relay_queue_max, s.relay_queue_max_bytes)
        self.couriers = CourierStore(
            s.courier_max_envelopes,
            max_lifetime_ms=int((s.courier_expiry_s + s.max_clock_skew_s) * 1000),
            max_copies=s.courier_copies,
        )
        self.app = AppChannel(self.rng)  # app request/response codec and matching (node.routing.app)
        self._flood = s.routing == "flood"
        self._events: deque[MeshEvent] = deque()
        self._max_skew_ms = s.max_clock_skew_s * 1000
        # A taken packet's frame without its TTL byte -> its dedupe key: copies are recognised without a parse.
        self._raw_seen: dict[bytes, str] = {}
        self._raw_seen_max = s.dedupe_max_entries  # (the dedupe cache's bound)
        # Components that own their state, bounds and timers.
        self.output = LinkOutput(
            peer_id=self.peer_id,
            settings=s,
            limits=self.limits,
            rng=self.rng,
            paths=self.paths,
            peers=self.peers,
            counters=self.counters,
            wall_offset_ms=self.wall_offset_ms,
        )
        # Floods that remote input makes us originate (handshakes, pongs, acks of couriers): per origin and in total.
        self.flood_limiter = OriginLimiter(
            per_origin_per_s=s.remote_floods_per_origin_per_s,
            burst=3.0,
            global_per_s=s.remote_floods_per_s,
            global_burst=20.0,
            max_origins=s.max_peers,
        )
        self.schedule = AnnounceSchedule(s, self.rng)
        self.announce_relays = AnnounceRelays(s.max_peers)
        self.pings = PingTracker()
        self.delivery = PrivateDelivery(
            host=self,
            noise_private=self.identity.noise_private,
            peer_id=self.peer_id,
            settings=s,
            peers=self.peers,
            counters=self.counters,
            events=self._events,
            app=self.app,
            hop_arq=self.output.hop_arq,
            seal_for_mailbox=self.seal_for_mailbox,
            flood_limiter=self.flood_limiter,
        )
        self.forwarder = Forwarder(
            output=self.output, paths=self.paths, relays=self.relays, counters=self.counters, rng=self.rng
        )
        self.containment = Containment(self.counters)
        self.courier_desk = desk = CourierDesk(
            identity=self.identity,
            settings=s,
            output=self.output,
            paths=self.paths,
            peers=self.peers,
            store=self.couriers,
            delivery=self.delivery,
            counters=self.counters,
            events=self._events,
            seal_for_mailbox=self.seal_for_mailbox,
        )
        self.presence = Presence(
            identity=self.identity,
            nickname=self.nickname,
            settings=s,
            limits=self.limits,
            rng=self.rng,
            output=self.output,
            peers=self.peers,
            paths=self.paths,
            pins=self.pins,
            pings=self.pings,
            schedule=self.schedule,
            announce_relays=self.announce_relays,
            couriers=self.couriers,
            courier_desk=desk,
            delivery=self.delivery,
            flood_limiter=self.flood_limiter,
            counters=self.counters,
            events=self._events,
            verify=self.verify,
            decode_announce=self.decode_announce,
        )
        self.timers = TimerTasks(
            settings=s,
            output=self.output,
            paths=self.paths,
            pings=self.pings,
            schedule=self.schedule,
            presence=self.presence,
            delivery=self.delivery,
            reassembler=self.reassembler,
            relays=self.relays,
            counters=self.counters,
            containment=self.containment,
        )

    # ---------------------------------------------------------------- component views (public API)
    @property
    def links(self) -> dict[str, LinkState]:
        return self.output.links

    @property
    def hoparq(self) -> HopArqTable:
        return self.output.hoparq

    @property
    def hop_arq(self) -> bool:
        return self.output.hop_arq

    @property
    def sessions(self) -> SessionManager:
        return self.delivery.sessions

    @property
    def pending(self) -> PendingSet:
        return self.delivery.pending

    def seal_held_for_mailbox(self) -> None:
        """From now on seal held messages for a mailbox anchor (EnvelopeSealed events) even with
        ``courier_copies = 0``; a mailbox client registers after the core is built."""
        self.seal_for_mailbox = self.delivery.seal_for_mailbox = self.courier_desk.seal_for_mailbox = True

    def forget_received(self, sender: bytes, message_id: str) -> None:
        """The node could not store a received private message: a resend of it is a new delivery (acked again once
        stored), not a duplicate."""
        self.delivery.seen_private.pop(f"{sender.hex()}:{message_id}", None)

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        """Every structure remote input can grow: name -> (current size, bound). Entries unless the name ends in
        ``_bytes``. For invariant checks (the adversarial tests) and diagnostics; each bound is a config key or a
        documented constant of the component that owns the structure."""
        s, lim = self.settings, self.limits
        r = self.reassembler
        sizes = {
            **self.peers.bounded_sizes(),
            "dedupe": (len(self.dedupe), s.dedupe_max_entries),
            "raw_seen": (len(self._raw_seen), s.dedupe_max_entries),
            "paths_origins": (self.paths.origins(), s.max_peers),
            "reassembly_sets": (len(r), lim.fragment_max_assemblies),
            "reassembly_bytes": (r.bytes, s.fragment_max_bytes),
            "relay_queue": (len(self.relays), s.relay_queue_max),
            "relay_queue_bytes": (self.relays.queued_bytes, s.relay_queue_max_bytes),
            "courier_envelopes": (len(self.couriers), s.courier_max_envelopes),
            "hop_arq": (len(self.hoparq), self.hoparq.max_entries),
            "hop_arq_bytes": (self.hoparq.queued_bytes, self.hoparq.max_bytes),
            **self.app.bounded_sizes(),
            **self.flood_limiter.bounded_sizes("flood_limit_origins"),
            **self.delivery.bounded_sizes(),
            **self.announce_relays.bounded_sizes(),
            **self.pings.bounded_sizes(),
            **self.pins.bounded_sizes(),
        }
        return sizes

    # ---------------------------------------------------------------- time
    def wall_ms(self, now: float) -> int:
        return self.output.wall_ms(now)

    def get_timer(self) -> float | None:
        # (Read after every input by the adapter: no tuple or generator, the components asked in turn.)
        best = self.schedule.next_deadline()
        t = self.pings.next_deadline()
        if t is not None and (best is None or t < best):
            best = t
        t = self.delivery.next_deadline()
        if t is not None and (best is None or t < best):
            best = t
        t = self.reassembler.next_expiry()
        if t is not None and (best is None or t < best):
            best = t
        t = self.relays.next_due()
        if t is not None and (best is None or t < best):
            best = t
        t = self.output.next_deadline()
        if t is not None and (best is None or t < best):
            best = t
        return best

    def handle_timer(self, now: float) -> bool:
        """Run what is due (:class:`~node.routing.timers.TimerTasks`). Never raises: each component's work is a task
        of its own, and a failure ends that task only (counted, logged once); what a failed task popped is not due
        again, so the timer advances. False if a task failed: what it left may still be due, so the caller pauses
        before it runs the timer again."""
        return self.timers.run(now)

    # ---------------------------------------------------------------- outputs
    def frames_to_send(self) -> list[tuple[str, bytes]]:
        return self.output.take()

    def next_event(self) -> MeshEvent | None:
        return self._events.popleft() if self._events else None

    # ---------------------------------------------------------------- the host of PrivateDelivery
    def send_directed(
        self, msg_type: int, payload: bytes, peer_id: bytes, now: float, *, flood: bool = False, tag: str | None = None
    ) -> list[str]:
        return self.output.send_directed(msg_type, payload, peer_id, now, flood=flood, tag=tag)

    def hop_route(self, peer_id: bytes, now: float) -> bool:
        return self.output.hop_route(peer_id, now)

    def routed(self, peer_id: bytes, now: float) -> bool:
        """A directed packet to ``peer_id`` would follow a path (not flood)."""
        return self.output.path_to(peer_id, now)[1] is not None

    def send_on_link(self, link_id: str, msg_type: int, payload: bytes, peer_id: bytes, now: float) -> None:
        """A directed packet to ``peer_id`` on one link only (the way its request came)."""
        if link_id in self.links:
            self.output.emit([link_id], self.output.packet(msg_type, payload, now, peer_id))

    def forget_pin(self, peer_id: bytes) -> bool:
        """The user resets a pin (``village peers forget``): the next proven binding is pinned anew."""
        self.peers.forget_binding(peer_id)
        return self.pins.forget(peer_id)

    def path_to(self, peer_id: bytes, now: float) -> tuple[list[str], Route | None]:
        return self.output.path_to(peer_id, now)

    # ---------------------------------------------------------------- presence (node.routing.presence)
    def session_established(self, peer_id: bytes, now: float) -> None:
        self.presence.session_established(peer_id, now)

    def peer_state(self, peer_id: bytes, signing_public_key: bytes, now: float, link_id: str = "") -> None:
        self.presence.peer_state(peer_id, signing_public_key, now, link_id)

    def announce_relay_interval_s(self) -> float:
        return self.presence.announce_relay_interval_s()

    def far_expiry_s(self) -> float:
        return self.presence.far_expiry_s()

    def peer_expiry_for(self, info: PeerInfo) -> float:
        return self.presence.peer_expiry_for(info)

    def is_reachable(self, info: PeerInfo, now: float) -> bool:
        return self.presence.is_reachable(info, now)

    def lossy_neighbourhood(self) -> bool:
        return self.pings.lossy()

    def announce_packet(self, now: float) -> Packet:
        return self.presence.announce_packet(now)

    def leave(self, now: float) -> None:
        """Queue a signed leave on every link (call before shutting down)."""
        self.presence.leave(now)

    # ---------------------------------------------------------------- links
    def link_up(
        self,
        link_id: str,
        mtu: int,
        now: float,
        authenticated_signing_key: bytes | None = None,
        *,
        cost_weight: float = 1.0,
        rate_key: str | None = None,
    ) -> None:
        """A link came up. ``cost_weight`` is the transport's preference in path costs (lower is preferred);
        ``rate_key`` what per-source budgets (new pins) count this link's input under: the remote's address or
        prefix, stable across reconnects (None: the link id)."""
        self.output.link_up(link_id, mtu, now, authenticated_signing_key, rate_key)
        self.paths.link_up(link_id, cost_weight)
        self.presence.send_announce([link_id], now)  # (a settled announce follows once its announce binds the link)
        if self.schedule.next_announce is None:
            self.schedule.schedule(now, len(self.links))

    def link_down(self, link_id: str, now: float) -> None:
        self.output.link_down(link_id)
        self.schedule.link_down(link_id)
        self.peers.unbind_link(link_id)
        self.paths.link_down(link_id)
        self.delivery.link_down(link_id, now)

    # ---------------------------------------------------------------- user actions
    def broadcast(self, text: str, now: float) -> str:
        data = text.encode()
        if not text or len(text) > self.settings.max_public_text_chars:
            raise MeshError(
                f"a public message must have 1 to {self.settings.max_public_text_chars} characters "
                f"(mesh.max_public_text_chars); this one has {len(text)}"
            )
        pkt = sign_packet(self.output.packet(MessageType.MESSAGE, data, now), self.identity.signing_key)
        self.output.emit(list(self.links), pkt)
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
        self.delivery.check_private(peer_id, text)

    def queue_private(
        self, message_id: str, peer_id: bytes, text: str, now: float, created: float | None = None
    ) -> None:
        """Queue a private message under a given ID — a new one, or one restored from the outbox after a
        restart (``created`` in this core's clock, possibly in the past; the peer may be unknown yet: the
        message waits for its announce)."""
        self.delivery.queue_private(message_id, peer_id, text, now, created)

    def send_app(self, peer_id: bytes, plaintext: bytes, now: float) -> None:
        """Send an app-channel plaintext (from :attr:`app`) in the peer's Noise session, starting one if needed."""
        if self.peers.get(peer_id) is None:
            raise MeshError(f"peer {peer_id.hex()} is unknown: no verified announce from it yet")
        self.delivery.send_encrypted(peer_id, plaintext, now, queue=True)

    # ---------------------------------------------------------------- courier envelopes
    # ---------------------------------------------------------------- courier envelopes (CourierDesk)
    def seal_for_couriers(self, p: PendingMessage, now: float) -> None:
        self.courier_desk.seal(p, now)

    def receive_mailbox_envelope(self, data: bytes, now: float) -> bool:
        """An envelope fetched from an anchor's mailbox (courier encoding): opened and delivered like a courier
        envelope (a MessageReceived event, unless this (sender, ID) was already received). False if it is not for
        us, expired, malformed or unopenable (it is counted; keeping it would not help)."""
        return self.courier_desk.receive_mailbox(data, now)

    # ---------------------------------------------------------------- receive
    def receive_frame(self, link_id: str, data: bytes, now: float) -> bool:
        """Take a frame from a link. False when it changed nothing — a duplicate of a packet already taken, or
        malformed: no output, no event and no earlier timer, so an adapter need not look for any. Never raises:
        a failure while handling the frame drops that frame only (:mod:`node.routing.containment`)."""
        self.counters.frames_in += 1
        try:
            # Fast path for the common case in a mesh, a copy of a packet we already took: relays forward the
            # received bytes with only the TTL byte rewritten, so the frame without its TTL (hashed) identifies it.
            digest = hashlib.blake2b(data[:TTL_OFFSET], digest_size=16)
            digest.update(data[TTL_OFFSET + 1 :])
            raw = digest.digest()
            key = self._raw_seen.get(raw)
            if key is not None and self.dedupe.seen(key, now):
                self.forwarder.on_duplicate(key, link_id)
                return False
            try:
                pkt = decode_packet_untrusted(data, self.limits)
            except MalformedFrame:
                self.counters.malformed += 1
                return False
            key = self._handle_packet(link_id, pkt, data, now)
            # (A copy of a directed packet still takes the full path when hop acks are on: it must be acked again.)
            if key is not None:
                recipient = pkt.recipient_id
                if recipient is None or recipient == BROADCAST_ID or not self.output.hop_arq:
                    raw_seen = self._raw_seen
                    raw_seen[raw] = key
                    if len(raw_seen) > self._raw_seen_max:
                        del raw_seen[next(iter(raw_seen))]
            return True
        except Exception as exc:  # noqa: BLE001 - broad: one frame's failure must end that frame only (counted, logged once)
            at = 14 if data[:1] == b"\x01" else 16  # the sender ID's offset in a v1 / v2 header
            self.containment.contain(exc, f"a frame on link {link_id}", bytes(data[at : at + 8]) or None)
            return True

    def _handle_packet(self, link_id: str, pkt: Packet, wire: bytes, now: float, *, relay: bool = True) -> str | None:
        """Process a decoded packet; its dedupe key if it was new and accepted (None otherwise)."""
        # (Every new packet comes through here: fields and components are read once, types compared as plain ints.)
        t, sender, timestamp_ms, recipient = pkt.type, pkt.sender_id, pkt.timestamp_ms, pkt.recipient_id
        peer_id = self.peer_id
        if sender == peer_id:
            self.counters.own_echo += 1
            return None
        output = self.output
        if not pkt.is_rsr and abs(timestamp_ms - int(output.wall_offset_ms + now * 1000.0)) > self._max_skew_ms:
            self.counters.stale += 1
            return None
        if t == T_HOP_ACK:
            self._on_hop_ack(link_id, pkt, now)  # never deduplicated, processed further or relayed
            return None
        key = dedupe_key(sender, timestamp_ms, t, pkt.payload)
        broadcast = recipient is None or recipient == BROADCAST_ID
        if relay and not broadcast and output.hop_arq:
            output.send_hop_ack(link_id, pkt, key, now)  # every copy: a resend means our last ack was lost
        if not self.dedupe.check_and_add(key, now):
            self.forwarder.on_duplicate(key, link_id)
            return None
        for_us = recipient == peer_id
        authentic = True  # False: failed authentication or parsing, never relayed
        phones_only, prune_by_sender = False, True  # (announces: see below)
        if t == T_FRAGMENT:
            if broadcast or for_us:
                authentic = self._on_fragment(link_id, pkt, now)
        elif t == T_ANNOUNCE:
            ann = self.presence.on_announce(link_id, pkt, wire, now)
            authentic = ann is not None
            if ann is not None and relay and not self._flood and pkt.ttl > 1:
                how = self.presence.announce_relay(link_id, pkt, ann, now)
                if how != "all":
                    self.counters.announce_relay_suppressed += 1
                if how == "fresh":
                    relay = False
                    # Not relayed, so not "seen" either: a copy arriving another way (or the genuine one, if this
                    # was a neighbour replaying it on a new link) is still taken and passed on.
                    self.dedupe.discard(key)
                    return key
                phones_only = how == "phones"
                # The origin's own copy of an announce it sent on one link only (a phone's link-up announce or
                # answer) covered none of its other neighbours: no pruning by its neighbour list.
                prune_by_sender = pkt.ttl < MAX_TTL or bool((ann.capabilities or 0) & SETTLED_ANNOUNCE_CAPABILITY)
        elif not broadcast and not for_us:
            self.counters.not_for_us += 1  # passed on below
        elif t == T_MESSAGE:
            authentic = self._on_public(pkt, wire, now)
        elif t == T_LEAVE:
            authentic = self._on_leave(pkt, wire)
        elif t == T_NOISE_HANDSHAKE and for_us:
            sender = pkt.sender_id
            tier = (
                Msg1Tier.PINNED
                if self.pins.get(sender) is not None
                else Msg1Tier.ANNOUNCED
                if self.peers.get(sender) is not None
                else Msg1Tier.UNKNOWN
            )
            self.delivery.on_handshake(pkt, now, link_id=link_id, tier=tier)
        elif t == T_NOISE_ENCRYPTED and for_us:
            self.delivery.on_encrypted(pkt, now, link_id)
        elif t == T_PING and for_us:
            self.presence.on_ping(link_id, pkt, now)
        elif t == T_PONG and for_us:
            self.presence.on_pong(pkt, now)
        elif t == T_COURIER_ENVELOPE and for_us:
            authentic = self.courier_desk.on_envelope(link_id, pkt, now)
        else:
            self.counters.unknown_type += 1  # still relayed, as BitChat relays types it does not know
        if relay and authentic and not for_us:
            self.forwarder.relay(link_id, pkt, wire, key, now, phones_only=phones_only, prune_by_sender=prune_by_sender)
        if not authentic:
            # The dedupe key does not cover the signature: a forged or broken copy must not make the genuine
            # packet, arriving later, look like a duplicate.
            self.dedupe.discard(key)
            return None
        return key

    def _on_hop_ack(self, link_id: str, pkt: Packet, now: float) -> None:
        """A HOP_ACK counts only from the peer bound to the link it came on, addressed to us, for a frame we keep
        for that link; anything else (late, forged, misdirected) is ignored and counted."""
        entry = None
        if (
            self.hop_arq
            and pkt.recipient_id == self.peer_id
            and pkt.sender_id == self.paths.peer_on_link(link_id)
            and len(pkt.payload) == ACK_DIGEST_BYTES
        ):
            entry = self.hoparq.ack(link_id, pkt.payload, now)
        if entry is None:
            self.counters.hop_acks_ignored += 1
        else:
            self.counters.hop_acks_received += 1

    # ---------------------------------------------------------------- relay
    def _on_public(self, pkt: Packet, wire: bytes, now: float) -> bool:
        """False when the message must not be relayed: a bad signature or bad text. One from a sender we have
        no announce from yet cannot be checked: it is not shown, but relayed (BitChat relays what it cannot
        judge)."""
        limit = self.settings.max_public_text_chars
        payload = pkt.payload
        if len(payload) > 4 * limit:  # (the decompressed size), from anyone: never relayed
            self.counters.oversize += 1
            return False
        info = self._verified(pkt, wire)
        if info is None:
            return self.peers.get(pkt.sender_id) is None
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self.counters.malformed += 1
            return False
        if not text or len(text) > limit:  # the send limit, applied on receipt: never stored, never relayed
            self.counters.oversize += 1
            return False
        peer_id = info.peer_id
        self.peers.touch(peer_id, now)
        # (fields in order: message_id, sender_id, sender_nickname, text, private, hops, timestamp_ms)
        self._events.append(
            MessageReceived(
                public_message_id(pkt), peer_id, info.nickname, text, False, hops_travelled(pkt), pkt.timestamp_ms
            )
        )
        return True

    def _on_leave(self, pkt: Packet, wire: bytes) -> bool:
        info = self._verified(pkt, wire)
        if info is None:
            return False  # unsigned or unverifiable leaves are neither believed nor relayed
        if pkt.timestamp_ms <= info.left_ms or pkt.timestamp_ms < info.announced_ms:
            # Not newer than its last leave, or older than its newest announce: a replay (the dedupe cache may have
            # been flooded since; the clock window alone admits it for 120 s).
            self.counters.leave_replayed += 1
            return False
        info.left, info.left_ms = True, pkt.timestamp_ms
        self.delivery.peer_left(info.peer_id)
        self.paths.forget_peer(info.peer_id)
        self._events.append(PeerLeft(info.peer_id, info.nickname))
        return True

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

    def _on_fragment(self, link_id: str, pkt: Packet, now: float) -> bool:
        try:
            frag = decode_fragment_untrusted(pkt.payload)
            if frag.original_type == MessageType.FRAGMENT:
                self.counters.nested_fragment += 1  # fragments never nest: BitChat fragments whole frames
                return False
            whole = self.reassembler.add_untrusted(pkt.sender_id, frag, now, link_id)
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
        if inner.type == MessageType.FRAGMENT:  # a reassembled frame is handled once, never reassembled again
            self.counters.nested_fragment += 1
            return False
        self.counters.fragments_reassembled += 1
        # The fragments were the relayed unit; the whole packet is processed but not relayed (BITCHAT.md §2.3).
        self._handle_packet(link_id, inner, whole, now, relay=False)
        return True


__all__ = [
    "DeliveryAcked",
    "EnvelopeSealed",
    "MeshCore",
    "MeshCounters",
    "MeshEvent",
    "MessageReceived",
    "PeerAnnounced",
    "PeerLeft",
    "PrivateFailed",
]
