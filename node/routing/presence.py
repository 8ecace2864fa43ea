"""Presence, a component of the mesh core: how this node makes itself known and learns who is around.

:class:`Presence` sends our announces (link-up, periodic, answers to new neighbours, the settled one; timers in
:class:`~node.routing.announcing.AnnounceSchedule`), pings neighbours and takes their pongs
(:class:`~node.routing.pinging.PingTracker`), answers pings (bounded: the flood limiter), checks received announces
(sender = SHA-256(Noise key)[0:8], age, signature, link binding, first-sight keys, durable pins), feeds the peer and
path tables, decides how far an announce is relayed (:class:`~node.routing.announcing.AnnounceRelays`), and takes a
peer's signing key proven inside a Noise session (:mod:`node.routing.pins`). Sans-IO.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from node.identity import Identity, peer_id_from_noise_key
from node.routing.announcing import AnnounceRelays, AnnounceSchedule
from node.routing.courier import CourierStore
from node.routing.couriering import CourierDesk
from node.routing.delivery import PrivateDelivery
from node.routing.events import MeshCounters, MeshEvent, PeerAnnounced
from node.routing.hoparq import HOP_ACK_CAPABILITY
from node.routing.meshbase import (
    FAR_EXPIRY_PER_RELAY_INTERVAL,
    FRESH_LINK_S,
    MAX_TTL,
    PING_MAX_PAYLOAD_BYTES,
    RTT_SMOOTHING,
    SETTLED_ANNOUNCE_CAPABILITY,
    smoothed,
)
from node.routing.output import LinkOutput, LinkState
from node.routing.paths import PathTable
from node.routing.peers import PeerInfo, PeerTable
from node.routing.pinging import PingTracker
from node.routing.pins import Pin, PinStore, encode_peer_state
from node.routing.ratelimit import OriginLimiter
from node.routing.sessions import SessionManager
from node.routing.settings import MeshSection
from node.wire import (
    Announce,
    MalformedFrame,
    MessageType,
    NoisePayloadType,
    Packet,
    Ping,
    WireLimits,
    decode_ping_untrusted,
    encode_announce,
    encode_noise_payload,
    encode_ping,
    sign_packet,
)


class Presence:
    def __init__(
        self,
        *,
        identity: Identity,
        nickname: str,
        settings: MeshSection,
        limits: WireLimits,
        rng: random.Random,
        output: LinkOutput,
        peers: PeerTable,
        paths: PathTable,
        pins: PinStore,
        pings: PingTracker,
        schedule: AnnounceSchedule,
        announce_relays: AnnounceRelays,
        couriers: CourierStore,
        courier_desk: CourierDesk,
        delivery: PrivateDelivery,
        flood_limiter: OriginLimiter,
        counters: MeshCounters,
        events: deque[MeshEvent],
        verify: Callable[[bytes, bytes, WireLimits], bool],
        decode_announce: Callable[[bytes], Announce],
    ) -> None:
        self.identity = identity
        self.nickname = nickname
        self.settings = settings
        self.limits = limits
        self.rng = rng
        self.output = output
        self.peers = peers
        self.paths = paths
        self.pins = pins
        self.pings = pings
        self.schedule = schedule
        self.announce_relays = announce_relays
        self.couriers = couriers
        self.courier_desk = courier_desk
        self.delivery = delivery
        self.flood_limiter = flood_limiter
        self.counters = counters
        self.events = events
        self.verify = verify
        self.decode_announce = decode_announce

    @property
    def links(self) -> dict[str, LinkState]:
        return self.output.links

    @property
    def hop_arq(self) -> bool:
        return self.output.hop_arq

    @property
    def sessions(self) -> SessionManager:
        return self.delivery.sessions

    def wall_ms(self, now: float) -> int:
        return self.output.wall_ms(now)

    def lossy_neighbourhood(self) -> bool:
        return self.pings.lossy()

    def session_established(self, peer_id: bytes, now: float) -> None:
        """Tell an AIVillage peer our signing key inside the new session (authenticatedPeerState), so it can pin
        us (node.routing.pins). Phones get none from us (they send theirs, which we take)."""
        if self.settings.send_peer_state and self.output.neighbour_with_info(peer_id, SETTLED_ANNOUNCE_CAPABILITY):
            caps = (HOP_ACK_CAPABILITY if self.hop_arq else 0) | SETTLED_ANNOUNCE_CAPABILITY
            body = encode_peer_state(self.identity.signing_public, caps)
            plaintext = encode_noise_payload(NoisePayloadType.AUTHENTICATED_PEER_STATE, body)
            self.delivery.send_encrypted(peer_id, plaintext, now, queue=False)

    def peer_state(self, peer_id: bytes, signing_public_key: bytes, now: float, link_id: str = "") -> None:
        """``peer_id`` told us its signing key inside a Noise session (the frame came on ``link_id``): its Noise key
        is proven, so the binding is pinned durably; an unproven binding in the peer table is replaced by it."""
        session = self.sessions.session(peer_id)
        if session is None:
            return
        pin = Pin(peer_id, session.remote_static, signing_public_key)
        outcome = self.pins.confirm(pin, now, self.output.rate_key(link_id) if link_id else "")
        if outcome == "conflict":
            self.counters.pin_conflict += 1  # pinned to other keys: kept until the user forgets the pin
            return
        if outcome in ("full", "later"):
            self.counters.pins_refused += 1  # no room, or over the rate of new pins: the peer stays unpinned
        self.counters.pins_added += outcome == "new"
        info = self.peers.get(peer_id)
        if info is not None and (info.noise_public_key, info.signing_public_key) != (
            pin.noise_public_key,
            pin.signing_public_key,
        ):
            # Someone announced this peer ID with other keys before the proof: the proven binding wins, and the paths
            # learned from the liar's announces go (the peer's next announce, accepted now, brings its own).
            self.counters.pin_replaced_unproven += 1
            info.noise_public_key, info.signing_public_key = pin.noise_public_key, pin.signing_public_key
            self.paths.forget_peer(peer_id)

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

    def announce_relay(self, link_id: str, pkt: Packet, ann: Announce, now: float) -> str:
        """How far to pass on an accepted announce: ``"all"`` links, ``"phones"`` only (links to neighbours
        without SETTLED_ANNOUNCE_CAPABILITY: BitChat phones, which expect every announce, as BitChat relays
        everything; see :meth:`AnnounceRelays.decide`), or ``"fresh"`` (nowhere): an AIVillage neighbour's
        announce on a link younger than FRESH_LINK_S is its link-up announce or its answer to ours, sent before
        it had heard its other neighbours (a phone's is passed on: phones send no settled announce). The neighbour
        announces again on every link SETTLE_ANNOUNCE_S after a link comes up, naming its neighbours; that one goes
        out (one flood per node at start-up, not one per neighbour list it went through)."""
        link = self.links.get(link_id)
        if (
            pkt.ttl >= MAX_TTL
            and link is not None
            and now - link.up_since < FRESH_LINK_S
            and (ann.capabilities or 0) & SETTLED_ANNOUNCE_CAPABILITY
        ):
            return "fresh"
        interval = self.announce_relay_interval_s()
        early = self.settings.announce_relay_min_interval_s if self.lossy_neighbourhood() else interval
        return self.announce_relays.decide(
            pkt.sender_id, pkt.payload, now, interval_s=interval, early_interval_s=early, link_id=link_id
        )

    # ---------------------------------------------------------------- our announces, pings and leave
    def announce_packet(self, now: float) -> Packet:
        ann = Announce(
            nickname=self.nickname,
            noise_public_key=self.identity.noise_public,
            signing_public_key=self.identity.signing_public,
            neighbours=self.direct_neighbours(),
            # BitChat ignores bits it does not know
            capabilities=(HOP_ACK_CAPABILITY if self.hop_arq else 0) | SETTLED_ANNOUNCE_CAPABILITY,
            geohash=None,
        )
        packet = self.output.packet(MessageType.ANNOUNCE, encode_announce(ann), now)
        return sign_packet(packet, self.identity.signing_key)

    def direct_neighbours(self) -> tuple[bytes, ...]:
        direct = [p for p in (self.paths.peer_on_link(lid) for lid in self.links) if p is not None]
        return tuple(dict.fromkeys(direct))[-10:]  # BitChat carries at most 10 neighbour IDs

    def send_announce(self, link_ids: list[str], now: float) -> None:
        self.output.emit(link_ids, self.announce_packet(now))
        self.schedule.announced(link_ids, now)

    def announce_all(self, now: float) -> None:
        if self.links:
            self.send_announce(list(self.links), now)
        for link_id in list(self.links):
            peer = self.paths.peer_on_link(link_id)
            if peer is not None:
                self.ping(peer, link_id, now)
        self.schedule.schedule(now, len(self.links))

    def ping(self, peer_id: bytes, link_id: str, now: float) -> None:
        """A directed BitChat ping (BF/MeshPingPayload.swift) on one link; the pong gives the link's round-trip
        time, a missing pong counts towards its loss estimate."""
        nonce = self.rng.getrandbits(64).to_bytes(8, "big")
        self.pings.sent_ping(nonce, peer_id, link_id, now)
        payload = encode_ping(Ping(nonce, self.settings.default_ttl))
        self.output.emit([link_id], self.output.packet(MessageType.PING, payload, now, peer_id))

    def on_pong(self, pkt: Packet, now: float) -> None:
        try:
            pong = decode_ping_untrusted(pkt.payload)
        except MalformedFrame:
            self.counters.malformed += 1
            return
        answered = self.pings.on_pong(pong.nonce, pkt.sender_id, now)
        if answered is None:
            return
        link_id, sample = answered
        info = self.peers.get(pkt.sender_id)
        if info is not None:
            info.rtt_s = smoothed(info.rtt_s, sample)
        stats = self.paths.links.get(link_id)
        if stats is not None:
            stats.rtt_s = smoothed(stats.rtt_s, sample)
            stats.loss *= 1 - RTT_SMOOTHING

    def on_ping(self, link_id: str, pkt: Packet, now: float) -> None:
        if len(pkt.payload) > PING_MAX_PAYLOAD_BYTES:
            self.counters.ping_refused += 1  # a pong echoes the payload: never amplify (or fail to encode) a blob
            return
        if pkt.ttl >= MAX_TTL or self.paths.peer_on_link(link_id) == pkt.sender_id:
            # A neighbour's link probe (it came straight from its sender): answer on that link, even before the
            # neighbour's announce has bound the link (else the pong would flood the mesh).
            self.counters.pings_answered += 1
            self.output.emit([link_id], self.output.packet(MessageType.PONG, pkt.payload, now, pkt.sender_id))
        elif self.flood_limiter.allow(pkt.sender_id, now):  # the pong may flood: bounded per origin and in total
            self.counters.pings_answered += 1
            self.output.send_directed(MessageType.PONG, pkt.payload, pkt.sender_id, now)
        else:
            self.counters.ping_refused += 1
            self.counters.rate_limited += 1

    def leave(self, now: float) -> None:
        """Queue a signed leave on every link (call before shutting down)."""
        pkt = sign_packet(self.output.packet(MessageType.LEAVE, b"", now), self.identity.signing_key)
        self.output.emit(list(self.links), pkt)

    def on_announce(self, link_id: str, pkt: Packet, wire: bytes, now: float) -> Announce | None:
        """The announce if it is authentic and accepted (None: dropped and counted; never relayed)."""
        try:
            ann = self.decode_announce(pkt.payload)
        except MalformedFrame:
            self.counters.malformed += 1
            return None
        if peer_id_from_noise_key(ann.noise_public_key) != pkt.sender_id:
            self.counters.key_mismatch += 1
            return None
        if self.wall_ms(now) - pkt.timestamp_ms > self.settings.announce_max_age_s * 1000:
            self.counters.stale += 1
            return None
        if not self.verify(wire, ann.signing_public_key, self.limits):
            self.counters.bad_signature += 1
            return None
        direct = pkt.ttl >= MAX_TTL and link_id in self.links
        bound = self.links[link_id].bound_key if link_id in self.links else None
        if direct and bound is not None and bound != ann.signing_public_key:
            self.counters.binding_mismatch += 1  # the link's authenticated identity is someone else
            return None
        if self.pins.conflicts(pkt.sender_id, ann.noise_public_key, ann.signing_public_key):
            self.counters.pin_conflict += 1  # a handshake proved other keys for this peer ID (node.routing.pins)
            return None
        known = self.peers.get(pkt.sender_id)
        if known is None and self.pins.get(pkt.sender_id) is None:
            gone = self.peers.binding(pkt.sender_id, now)  # a peer the table forgot (flooded out, perhaps)
            if gone is not None and gone.signing_public_key != ann.signing_public_key:
                self.counters.key_mismatch += 1  # its first-sight binding still holds until it expires
                self.delivery.challenge(pkt.sender_id, link_id, now)
                return None
            if gone is not None and pkt.timestamp_ms < gone.left_ms:
                self.counters.leave_replayed += 1
                return None
        if known is not None and (
            known.noise_public_key != ann.noise_public_key or known.signing_public_key != ann.signing_public_key
        ):
            if self.pins.get(pkt.sender_id) is None:
                self.counters.key_mismatch += 1  # unproven keys are pinned at first sight, as BitChat does
                self.delivery.challenge(pkt.sender_id, link_id, now)
                return None
            # The table held an unproven binding and this announce carries the proven (pinned) keys: they win.
            known.noise_public_key, known.signing_public_key = ann.noise_public_key, ann.signing_public_key
        if known is not None and pkt.timestamp_ms < known.left_ms:
            self.counters.leave_replayed += 1  # an announce older than the peer's leave: a replay, not a return
            return None
        hops = max(1, MAX_TTL - min(pkt.ttl, MAX_TTL) + 1)
        newly_bound = direct and self.paths.peer_on_link(link_id) != pkt.sender_id
        if direct and not self.paths.bind(pkt.sender_id, link_id, now):
            self.counters.binding_mismatch += 1  # another peer holds this link: take the announce as relayed
            direct = False
        if direct and len(self.couriers):
            self.courier_desk.meet(pkt.sender_id, link_id, now)
        self.paths.path_ttl_s = self.far_expiry_s()  # stretches with the announce relay interval
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
                announced_ms=pkt.timestamp_ms,
            )
            self.peers.upsert(info)
        if direct and newly_bound:
            # Answer a neighbour's first announce on a link once, so it learns us even if our link-up announce was
            # lost, and so that far nodes hear of us with this neighbour listed (link-up announces, sent before
            # anyone was bound, are not relayed). Only a neighbour's: answering every far peer heard through
            # relays floods the mesh n² times.
            if self.schedule.answer_now(link_id, now):
                self.send_announce([link_id], now)
            self.ping(pkt.sender_id, link_id, now)
            self.schedule.settle_soon(now)
        if known is not None:
            info = known
            info.announced_ms = max(info.announced_ms, pkt.timestamp_ms)
            was_gone = info.left or not self.is_reachable(info, now)
            info.nickname, info.last_seen, info.hops, info.left = ann.nickname, now, hops, False
            info.capabilities = ann.capabilities
            if direct:
                info.link_id = link_id
            self.peers.touch(info.peer_id, now)
            if not was_gone:
                return ann
        self.events.append(PeerAnnounced(info.peer_id, info.nickname, known is None, info.link_id))
        self.delivery.wake(info.peer_id, now)  # messages waiting for this peer go now
        return ann
