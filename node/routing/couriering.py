"""Courier envelopes, a component of the mesh core: sealing our held messages, carrying others', handing copies
to neighbours we meet, and opening those addressed to us (:mod:`node.routing.courier` has the format and the
bounded :class:`~node.routing.courier.CourierStore`). Sans-IO.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from node.errors import CryptoError
from node.identity import Identity
from node.routing.courier import CourierStore, Envelope, decode_envelope_untrusted, encode_envelope, open_untrusted
from node.routing.courier import seal as seal_envelope
from node.routing.delivery import PrivateDelivery
from node.routing.events import EnvelopeSealed, MeshCounters, MeshEvent
from node.routing.output import LinkOutput
from node.routing.paths import PathTable
from node.routing.peers import PeerTable
from node.routing.pending import PendingMessage
from node.routing.settings import MeshSection
from node.wire import (
    MalformedFrame,
    MessageType,
    NoisePayloadType,
    Packet,
    decode_noise_payload_untrusted,
    encode_noise_payload,
    encode_private_message,
)


class CourierDesk:
    def __init__(
        self,
        *,
        identity: Identity,
        settings: MeshSection,
        output: LinkOutput,
        paths: PathTable,
        peers: PeerTable,
        store: CourierStore,
        delivery: PrivateDelivery,
        counters: MeshCounters,
        events: deque[MeshEvent],
        seal_for_mailbox: bool,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.output = output
        self.paths = paths
        self.peers = peers
        self.couriers = store
        self.delivery = delivery
        self.counters = counters
        self.events = events
        self.seal_for_mailbox = seal_for_mailbox

    def seal(self, p: PendingMessage, now: float) -> None:
        info = self.peers.get(p.peer_id)
        if info is None:
            return  # no Noise key to seal to: only the peer's own announce can help
        p.sealed = True
        expires = self.output.wall_ms(now) + int(self.settings.courier_expiry_s * 1000)
        plaintext = encode_noise_payload(NoisePayloadType.PRIVATE_MESSAGE, encode_private_message(p.message_id, p.text))
        sealed = seal_envelope(
            plaintext,
            sender_static=self.identity.noise_private,
            recipient_id=p.peer_id,
            recipient_static=info.noise_public_key,
            expires_at_ms=expires,
        )
        self.counters.courier_sealed += 1
        if self.seal_for_mailbox:
            self.events.append(
                EnvelopeSealed(p.message_id, p.peer_id, encode_envelope(Envelope(p.peer_id, expires, 1, sealed)))
            )
        if not self.settings.courier_copies:
            return
        self.couriers.add(Envelope(p.peer_id, expires, self.settings.courier_copies, sealed), self.output.wall_ms(now))
        for link_id in list(self.output.links):  # spray to whoever is around now
            peer = self.paths.peer_on_link(link_id)
            if peer is not None:
                self.meet(peer, link_id, now)

    def meet(self, peer: bytes, link_id: str, now: float) -> None:
        """A direct neighbour is here: hand it the envelopes (or copies) it should carry or receive."""
        for env in self.couriers.meet(peer, self.output.wall_ms(now)):
            pkt = dataclasses.replace(
                self.output.packet(MessageType.COURIER_ENVELOPE, encode_envelope(env), now, peer), ttl=1
            )  # TTL 1: straight to the neighbour, never relayed
            self.output.emit([link_id], pkt)
            self.counters.courier_handed += 1

    def on_envelope(self, link_id: str, pkt: Packet, now: float) -> bool:
        try:
            env = decode_envelope_untrusted(pkt.payload)
        except MalformedFrame:
            self.counters.courier_refused += 1
            return False
        if env.recipient_id != self.output.peer_id:
            if not self.couriers.add(env, self.output.wall_ms(now), source=link_id):
                self.counters.courier_refused += 1
                return False
            self.counters.courier_carried += 1
            for lid in self.paths.direct_links(env.recipient_id, now)[:1]:  # the recipient is right here
                self.meet(env.recipient_id, lid, now)
            return True
        return self.open_own(env, pkt, now)

    def receive_mailbox(self, data: bytes, now: float) -> bool:
        """An envelope fetched from an anchor's mailbox (courier encoding): opened and delivered like a courier
        envelope (a MessageReceived event, unless this (sender, ID) was already received). False if it is not for
        us, expired, malformed or unopenable (it is counted; keeping it would not help)."""
        try:
            env = decode_envelope_untrusted(data)
        except MalformedFrame:
            self.counters.courier_refused += 1
            return False
        if env.recipient_id != self.output.peer_id:
            self.counters.courier_refused += 1
            return False
        pkt = self.output.packet(MessageType.COURIER_ENVELOPE, b"", now, self.output.peer_id)
        return self.open_own(env, pkt, now)

    def open_own(self, env: Envelope, pkt: Packet, now: float) -> bool:
        if env.expires_at_ms <= self.output.wall_ms(now):
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
                self.delivery.on_noise_payload(sender, ptype, body, pkt, now)
            except MalformedFrame:
                self.counters.courier_refused += 1
                return False
        return True
