"""Relaying, a component of the mesh core: which links a packet we pass on goes to, with what TTL and jitter.

:class:`Forwarder` applies BitChat's relay rules (:mod:`node.routing.relay`: TTL, jitter, fan-out limits, never
back out of the arrival link), source routes and announce pruning, and queues the relay in the bounded
:class:`~node.routing.relay.RelayQueue` (whose timer the core drains). A duplicate arriving while a relay waits out
its jitter strikes the links it came from (:meth:`Forwarder.on_duplicate`). Sans-IO.
"""

from __future__ import annotations

import random

from node.routing.events import MeshCounters
from node.routing.meshbase import (
    MAX_TTL,
    SETTLED_ANNOUNCE_CAPABILITY,
    T_ANNOUNCE,
    T_FRAGMENT,
    T_HOP_ACK,
    T_REQUEST_SYNC,
)
from node.routing.output import LinkOutput
from node.routing.paths import PathTable
from node.routing.relay import RelayQueue, fanout_subset, relay_jitter_s, relayed_ttl, with_ttl
from node.wire import BROADCAST_ID, Packet

_NEVER_RELAYED = frozenset({T_REQUEST_SYNC, T_HOP_ACK})


class Forwarder:
    def __init__(
        self, *, output: LinkOutput, paths: PathTable, relays: RelayQueue, counters: MeshCounters, rng: random.Random
    ) -> None:
        self.output = output
        self.paths = paths
        self.relays = relays
        self.counters = counters
        self.rng = rng
        self.flood = output.flood

    def settles(self, link_id: str) -> bool:
        """The neighbour on ``link_id`` announced SETTLED_ANNOUNCE_CAPABILITY (an AIVillage node)."""
        return self.output.neighbour_with(link_id, SETTLED_ANNOUNCE_CAPABILITY) is not None

    def relay(
        self,
        in_link: str,
        pkt: Packet,
        wire: bytes,
        key: str,
        now: float,
        *,
        phones_only: bool = False,
        prune_by_sender: bool = True,
    ) -> None:
        # (Every relayed packet comes through here: fields read once, types compared as plain ints.)
        t, ttl_in = pkt.type, pkt.ttl
        if ttl_in <= 1 or pkt.is_rsr or t in _NEVER_RELAYED:
            return
        recipient = pkt.recipient_id
        broadcast = recipient is None or recipient == BROADCAST_ID
        links = self.output.links
        degree = len(links)
        others = [lid for lid in links if lid != in_link]
        if self.flood:
            ttl, targets, delay = min(ttl_in, MAX_TTL) - 1, others, 0.0
        else:
            ttl = relayed_ttl(t, ttl_in, broadcast=broadcast, degree=degree)
            if broadcast:
                targets = others
                if t == T_ANNOUNCE:
                    if phones_only:
                        targets = self.phone_links(targets)
                    if prune_by_sender:
                        targets = self.not_covered(targets, in_link)
                elif t != T_FRAGMENT and len(others) > 2:  # (of two links or fewer, the subset is all of them)
                    targets = fanout_subset(key, others)
            else:
                targets = self.directed_relay_links(pkt, in_link, now)
            delay = relay_jitter_s(self.rng, t, broadcast=broadcast, degree=degree)
        if ttl < 1 or not targets:
            return
        frame = with_ttl(wire, ttl)
        prune = t == T_ANNOUNCE and not self.flood
        track = not broadcast and len(targets) == 1 and self.output.tracks(targets[0], pkt)
        if not self.relays.push(now + delay, key, frame, targets, prunable=prune, track=track):
            self.counters.relay_queue_full += 1

    def phone_links(self, link_ids: list[str]) -> list[str]:
        """Of ``link_ids``, those whose neighbour did not announce SETTLED_ANNOUNCE_CAPABILITY (BitChat phones, or
        not yet bound): :meth:`settles` for a list, in one pass (most announces in a settled mesh come here)."""
        peer_on, peers = self.paths.link_peers, self.output.peers
        out = []
        for lid in link_ids:
            peer = peer_on.get(lid)
            info = peers.get(peer) if peer is not None else None
            if info is None or not (info.capabilities or 0) & SETTLED_ANNOUNCE_CAPABILITY:
                out.append(lid)
        return out

    def not_covered(self, link_ids: list[str], from_link: str) -> list[str]:
        """Announce relay pruning: of ``link_ids``, those whose neighbour is not also a neighbour of the peer on
        ``from_link``. That peer sent the packet to all of its neighbours or pruned them for a node that sent
        earlier still, so by induction the earliest sender next to any node sends to it: no node is left out for
        want of a sender, only for loss. Saves most duplicate frames of announce floods in a dense mesh; announces
        repeat, so a loss is made good by the next one. A neighbourship counts only when both ends' announces
        name each other, so a neighbour lying about its neighbours cannot make us starve a node."""
        covered = self.covered_by(from_link)
        if not covered:
            return link_ids
        peer_on = self.paths.link_peers
        return [lid for lid in link_ids if peer_on.get(lid) not in covered]

    def covered_by(self, link_id: str) -> frozenset[bytes]:
        """The neighbours of the peer on ``link_id`` that both it and they name in their announces."""
        sender = self.paths.link_peers.get(link_id)
        return self.paths.mutual_neighbours(sender) if sender is not None else frozenset()

    def directed_relay_links(self, pkt: Packet, in_link: str, now: float) -> list[str]:
        """BitChat's forwarding of a directed packet (BLE/BLERouteForwardingPolicy.swift): along its source
        route if it has one (to hop 0 when we are not on it), straight to the recipient when it is our
        neighbour, else a flood. Never back out of the arrival link."""
        target = pkt.recipient_id
        assert target is not None
        if pkt.route:
            if self.output.peer_id in pkt.route:
                i = pkt.route.index(self.output.peer_id)
                target = pkt.route[i + 1] if i + 1 < len(pkt.route) else target
            else:
                target = pkt.route[0]
        direct = [lid for lid in self.paths.direct_links(target, now) if lid != in_link]
        if direct:
            return direct[:1]
        # No route in the packet and the target is not ours: flood, as BitChat does. (Forwarding it by our own
        # table instead turned a sender's deliberate flood — its resend after a lost routed copy — back into a
        # single path at the first relay.)
        return [lid for lid in self.output.links if lid != in_link]

    def on_duplicate(self, key: str, link_id: str) -> None:
        self.counters.duplicate += 1
        relay = self.relays.pending(key)
        if relay is None:
            return
        strike = [link_id]
        if relay.prunable:  # an announce: the copy's sender also covered its own neighbours (see _not_covered)
            covered = self.covered_by(link_id)
            if covered:
                peer_on = self.paths.link_peers
                strike += [lid for lid in relay.link_ids if peer_on.get(lid) in covered]
        if self.relays.strike(key, strike):
            self.counters.relay_cancelled += 1  # every neighbour we would pass it to has it already
