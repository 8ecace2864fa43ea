"""Announces, pings and leaves: how a node makes itself known and measures its links.

Announces go out on every link at link-up and periodically (BitChat's interval, longer on a busy node), and a new
direct neighbour's announce is answered once (deferred when one just went out). A verified announce pins the
sender's keys, binds a direct link to it, feeds the path table and wakes messages held for it. Pings probe each
direct link; pongs give round-trip time and missing ones raise the link's loss estimate.
"""

from __future__ import annotations

from node.identity import peer_id_from_noise_key
from node.routing.events import PeerAnnounced
from node.routing.hoparq import HOP_ACK_CAPABILITY
from node.routing.meshbase import (
    ANNOUNCE_ANSWER_GAP_S,
    BUSY_LINKS,
    MAX_OUTSTANDING_PINGS,
    MAX_TTL,
    PING_EXPIRY_S,
    RTT_SMOOTHING,
    SETTLE_ANNOUNCE_S,
    SETTLED_ANNOUNCE_CAPABILITY,
    MeshBase,
    smoothed,
)
from node.routing.peers import PeerInfo
from node.wire import (
    Announce,
    MalformedFrame,
    MessageType,
    Packet,
    Ping,
    decode_ping_untrusted,
    encode_announce,
    encode_ping,
    sign_packet,
)


class AnnouncingCore(MeshBase):
    """The announce, ping and leave layer of the mesh core (see the module docstring)."""

    def _schedule_announce(self, now: float) -> None:
        # BitChat (BLEMaintenancePolicy): 15 ± 4 s, doubled to 30 ± 8 s with >= 6 links, where announces are
        # the bulk of the traffic.
        s = self.settings
        factor = 2.0 if len(self.links) >= BUSY_LINKS else 1.0
        jitter = self.rng.uniform(-s.announce_jitter_s, s.announce_jitter_s)
        self._next_announce = now + max(0.5, factor * (s.announce_interval_s + jitter))

    # ---------------------------------------------------------------- announces and leave
    def announce_packet(self, now: float) -> Packet:
        ann = Announce(
            nickname=self.nickname,
            noise_public_key=self.identity.noise_public,
            signing_public_key=self.identity.signing_public,
            neighbours=self._direct_neighbours(),
            # BitChat ignores bits it does not know
            capabilities=(HOP_ACK_CAPABILITY if self.hop_arq else 0) | SETTLED_ANNOUNCE_CAPABILITY,
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

    def _settle_soon(self, now: float) -> None:
        """A link was just bound to a neighbour: announce on every link SETTLE_ANNOUNCE_S from now, naming it —
        the announce relays pass on (link-up announces and answers are not relayed). At most once per announce
        interval: a neighbour reconnecting every few seconds cannot make us announce more often than BitChat."""
        last = self._settled_at
        if last is not None and 0 <= now - last < self.settings.announce_interval_s:
            return
        self._settled_at = now
        settle = now + self.rng.uniform(*SETTLE_ANNOUNCE_S)
        if self._next_announce is None or self._next_announce > settle:
            self._next_announce = settle

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
        self.pings_sent += 1
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
        self.pongs_received += 1
        info = self.peers.get(pkt.sender_id)
        if info is not None:
            info.rtt_s = smoothed(info.rtt_s, sample)
        stats = self.paths.links.get(sent[1])
        if stats is not None:
            stats.rtt_s = smoothed(stats.rtt_s, sample)
            stats.loss *= 1 - RTT_SMOOTHING

    def leave(self, now: float) -> None:
        """Queue a signed leave on every link (call before shutting down)."""
        pkt = sign_packet(self._packet(MessageType.LEAVE, b"", now), self.identity.signing_key)
        self._emit(list(self.links), pkt)

    def _on_announce(self, link_id: str, pkt: Packet, wire: bytes, now: float) -> Announce | None:
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
        known = self.peers.get(pkt.sender_id)
        if known is not None and (
            known.noise_public_key != ann.noise_public_key or known.signing_public_key != ann.signing_public_key
        ):
            self.counters.key_mismatch += 1  # keys are pinned at first sight
            return None
        hops = max(1, MAX_TTL - min(pkt.ttl, MAX_TTL) + 1)
        newly_bound = direct and self.paths.peer_on_link(link_id) != pkt.sender_id
        if direct and not self.paths.bind(pkt.sender_id, link_id, now):
            self.counters.binding_mismatch += 1  # another peer holds this link: take the announce as relayed
            direct = False
        if direct and len(self.couriers):
            self._meet(pkt.sender_id, link_id, now)
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
            )
            self.peers.upsert(info)
        if direct and newly_bound:
            # Answer a neighbour's first announce on a link once, so it learns us even if our link-up announce was
            # lost, and so that far nodes hear of us with this neighbour listed (link-up announces, sent before
            # anyone was bound, are not relayed). Only a neighbour's: answering every far peer heard through
            # relays floods the mesh n² times.
            self._answer_announce(link_id, now)
            self._ping(pkt.sender_id, link_id, now)
            self._settle_soon(now)
        if known is not None:
            info = known
            was_gone = info.left or not self.is_reachable(info, now)
            info.nickname, info.last_seen, info.hops, info.left = ann.nickname, now, hops, False
            info.capabilities = ann.capabilities
            if direct:
                info.link_id = link_id
            self.peers.touch(info.peer_id, now)
            if not was_gone:
                return ann
        self._events.append(PeerAnnounced(info.peer_id, info.nickname, known is None, info.link_id))
        for p in self.pending.for_peer(info.peer_id):  # messages waiting for this peer go now
            if p.next_try > now:
                self.pending.reschedule(p, now)
        return ann

    def _on_ping(self, link_id: str, pkt: Packet, now: float) -> None:
        self.counters.pings_answered += 1
        if pkt.ttl >= MAX_TTL or self.paths.peer_on_link(link_id) == pkt.sender_id:
            # A neighbour's link probe (it came straight from its sender): answer on that link, even before the
            # neighbour's announce has bound the link (else the pong would flood the mesh).
            self._emit([link_id], self._packet(MessageType.PONG, pkt.payload, now, pkt.sender_id))
        else:
            self._send_directed(MessageType.PONG, pkt.payload, pkt.sender_id, now)
