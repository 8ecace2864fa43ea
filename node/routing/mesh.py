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
  (:meth:`MeshBase.announce_relay_interval_s`). In a lossy neighbourhood (under 65 % of our pings answered) an
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
"""

from __future__ import annotations

import hashlib
import uuid
from collections import deque

from node.crypto.errors import ReplayError
from node.errors import CryptoError, MeshError
from node.routing.announcing import AnnouncingCore
from node.routing.courier import (
    Envelope,
    decode_envelope_untrusted,
    open_untrusted,
)
from node.routing.dedupe import dedupe_key
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
from node.routing.hoparq import ACK_DIGEST_BYTES, HopEntry
from node.routing.meshbase import (
    EARLY_CIPHERTEXT_MAX_BYTES,
    EARLY_CIPHERTEXTS,
    EARLY_PEERS,
    MAX_TTL,
    PRIVATE_TEXT_MAX_BYTES,
    REHANDSHAKE_AFTER_ATTEMPTS,
    RTT_SMOOTHING,
    SEEN_PRIVATE_IDS,
    SETTLED_ANNOUNCE_CAPABILITY,
    UNKNOWN_PEER_PROBES,
    LinkState,
    arrived_flooded,
    hops_travelled,
    public_message_id,
)
from node.routing.pending import PendingMessage
from node.routing.relay import TTL_OFFSET, fanout_subset, relay_jitter_s, relayed_ttl, with_ttl
from node.wire import (
    MalformedFrame,
    MessageType,
    NoisePayloadType,
    Packet,
    decode_fragment_untrusted,
    decode_noise_payload_untrusted,
    decode_packet_untrusted,
    decode_private_message_untrusted,
    encode_noise_payload,
    encode_private_message,
    is_broadcast,
    sign_packet,
)


class MeshCore(AnnouncingCore):
    """The whole core: :class:`~node.routing.meshbase.MeshBase` (state, emitting, sessions, couriers) +
    :class:`~node.routing.announcing.AnnouncingCore` (announces, pings, leave) + what is here: the timer,
    links, user actions (broadcast, private messages with retries and store-and-forward), receiving, relaying."""

    def get_timer(self) -> float | None:
        best = self._next_announce
        for t in (
            self.sessions.next_deadline(),
            self.pending.next_due(),
            self.reassembler.next_expiry(),
            self.relays.next_due(),
            self.hoparq.next_deadline(),
            min(self._answers.values()) if self._answers else None,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

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
            early = self._early.pop(peer, None)  # the peer encrypts already: our handshake with it must complete
            waiting = self._session_queue.get(peer) or self.pending.count_for(peer) > 0 or early
            if waiting and self._reachable(peer, now):
                # The routed attempt was lost: every path now (with hop acks, one more routed attempt first).
                expired = self._handshake_expiries.pop(peer, 0) + 1
                self._handshake_expiries[peer] = expired
                while len(self._handshake_expiries) > self.settings.max_peers:
                    self._handshake_expiries.popitem(last=False)
                self._start_handshake(peer, now, flood=expired >= self.routed_tries)
            else:
                self._session_queue.pop(peer, None)
        self.reassembler.expire(now)
        for job in self.relays.pop_due(now):
            self.counters.relayed += 1
            if job.track and len(job.link_ids) == 1:
                self._emit_tracked(job.link_ids[0], job.frame, None, job.key, now)
                continue
            for link_id in job.link_ids:
                self._emit_frame(link_id, job.frame)
        for entry in self.hoparq.pop_due(now):
            self._hop_timeout(entry, now)
        for p in self.pending.pop_due(now):
            self._attempt_private(p, now)

    def _hop_timeout(self, entry: HopEntry, now: float) -> None:
        """No hop ack for ``entry`` in time: resend it on its link, or give it up after mesh.hop_retries resends."""
        if entry.link_id not in self.links:
            self.hoparq.give_up(entry)
            return
        stats = self.paths.links.get(entry.link_id)
        if entry.tries <= self.settings.hop_retries:
            self._out.append((entry.link_id, entry.frame))
            self.counters.hop_retransmits += 1
            rto = self.hoparq.rto(entry.link_id, stats.rtt_s if stats is not None else None, entry.tries + 1)
            self.hoparq.retry(entry, now + rto)
            return
        self.hoparq.give_up(entry)
        self.counters.hop_give_ups += 1
        if stats is not None:  # as a lost pong: the link's cost rises, the next path computation may avoid it
            stats.loss = (1 - RTT_SMOOTHING) * stats.loss + RTT_SMOOTHING
            self.paths.link_cost_changed()
        p = self.pending.get(entry.tag) if entry.tag is not None else None
        if p is not None and p.next_try > now and any(lid != entry.link_id for lid in self.links):
            # Our private message never left the first hop: resend it at once on every path rather than wait
            # for the end-to-end retry. (Not with this link as our only one: the flood would be the same single
            # tracked send again, resent and given up in a loop that never counts an attempt.)
            self.pending.reschedule(p, now)
            p.free_send = True
            p.escalate = True
            self.counters.hop_failovers += 1

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
        self.links[link_id] = LinkState(mtu=mtu, up_since=now, bound_key=authenticated_signing_key)
        self.paths.link_up(link_id, cost_weight)
        self._send_announce([link_id], now)  # (a settled announce follows once its announce binds the link)
        if self._next_announce is None:
            self._schedule_announce(now)

    def link_down(self, link_id: str, now: float) -> None:
        self.links.pop(link_id, None)
        self._announced_at.pop(link_id, None)
        self._answers.pop(link_id, None)
        self.peers.unbind_link(link_id)
        self.paths.link_down(link_id)
        self.hoparq.drop_link(link_id)
        # Fail over: whatever awaits an ack and last left on this link is resent at once along the next best path.
        for p in self.pending:
            if p.attempts and p.next_try > now and link_id in self.last_links.get(p.peer_id, ()):
                self.pending.reschedule(p, now)
                p.free_send = True

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
        for_peer = self.pending.count_for(peer_id)
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
        p = PendingMessage(message_id, peer_id, text, created=now if created is None else created, next_try=now)
        self.pending.add(p)
        self._attempt_private(p, now)

    def _attempt_private(self, p: PendingMessage, now: float) -> None:
        s = self.settings
        reason = None
        if p.attempts >= s.private_max_attempts:
            reason = f"no delivery ack after {p.attempts} attempts"
        elif now - p.created >= s.private_expiry_s:
            reason = f"not delivered within {s.private_expiry_s:g} s (mesh.private_expiry_s)"
        if reason is not None:
            self.pending.remove(p.message_id)
            self._events.append(PrivateFailed(p.message_id, p.peer_id, reason))
            return
        if not self._reachable(p.peer_id, now) and self.peers.get(p.peer_id) is None and p.probes < UNKNOWN_PEER_PROBES:
            # Never heard an announce from it: in a large mesh a node's announce floods once per relay interval, and
            # a node at the edge of the TTL horizon may miss that flood. A Noise XX handshake needs no announce (the
            # peer proves its static key, which must hash to its peer ID), and a finished one makes the peer
            # reachable: try one a few times, backing off, before waiting for the announce. Odd tries follow a
            # source route when the topology (other peers' neighbour lists) names the peer (hop acks make that
            # reliable), even ones flood.
            p.probes += 1
            self.counters.unknown_peer_probes += 1
            self._start_handshake(p.peer_id, now, flood=p.probes % 2 == 0)
            wake = now + s.handshake_timeout_s * (1 + p.probes)
            self.pending.reschedule(p, min(wake, p.created + s.private_expiry_s))
            return
        if not self._reachable(p.peer_id, now):
            # Store and forward: the peer is unknown (restored from the outbox before it announced itself) or has
            # not been heard from lately (a partition, or it is offline). Sending would only flood the mesh and
            # burn attempts; its next announce wakes the message up. Meanwhile, carriers may take it there.
            sealing = s.courier_copies or self.seal_for_mailbox
            if sealing and not p.sealed and now - p.created >= s.courier_after_s:
                self._seal_for_couriers(p, now)
            wake = min(now + s.private_retry_max_interval_s, p.created + s.private_expiry_s)
            if sealing and not p.sealed and now < p.created + s.courier_after_s:
                # Look again when it is time to seal. (Past that time and still unsealed, the peer is unknown: no
                # key to seal to. Waking at `now` again would spin; its announce wakes the message instead.)
                wake = min(wake, p.created + s.courier_after_s)
            self.pending.reschedule(p, wake)
            return
        if self.sessions.session(p.peer_id) is None:
            # Nothing can be sent yet: (re)start the handshake and look again when it could have finished.
            # This is not an attempt; completing the handshake reschedules the send at once.
            # The first try follows the path table; later ones (a handshake message was lost) flood.
            self._start_handshake(p.peer_id, now, flood=now - p.created >= self.routed_tries * s.handshake_timeout_s)
            self.pending.reschedule(p, min(now + s.handshake_timeout_s, p.created + s.private_expiry_s))
            return
        counted = not p.free_send  # a send right after a fresh handshake is on the house
        p.free_send = False
        if counted:
            if p.attempts:
                self.counters.private_retries += 1
            p.attempts += 1
        backoff = s.private_retry_interval_s * (2 ** min(30, max(0, p.attempts - 1)))
        self.pending.reschedule(p, now + min(backoff, s.private_retry_max_interval_s))
        plaintext = encode_noise_payload(NoisePayloadType.PRIVATE_MESSAGE, encode_private_message(p.message_id, p.text))
        # The first send follows the path table (with hop acks, the first two); a resend (no ack came back) floods,
        # and so does a send right after the routed copy's first hop gave up.
        flood, p.escalate = p.escalate or p.attempts > self.routed_tries, False
        self._send_encrypted(p.peer_id, plaintext, now, queue=False, flood=flood, tag=p.message_id)
        if counted and p.attempts % REHANDSHAKE_AFTER_ATTEMPTS == 0 and self.sessions.session(p.peer_id) is not None:
            # Still no ack: our session may be one the peer no longer holds (it restarted, or lost the last
            # handshake message). Start a fresh handshake on every path; the old session serves until it completes.
            self._start_handshake(p.peer_id, now, flood=True)

    # ---------------------------------------------------------------- courier envelopes that reach us
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
        return self._open_own_envelope(env, pkt, now)

    def receive_mailbox_envelope(self, data: bytes, now: float) -> bool:
        """An envelope fetched from an anchor's mailbox (courier encoding): opened and delivered like a courier
        envelope (a MessageReceived event, unless this (sender, ID) was already received). False if it is not for
        us, expired, malformed or unopenable (it is counted; keeping it would not help)."""
        try:
            env = decode_envelope_untrusted(data)
        except MalformedFrame:
            self.counters.courier_refused += 1
            return False
        if env.recipient_id != self.peer_id:
            self.counters.courier_refused += 1
            return False
        return self._open_own_envelope(env, self._packet(MessageType.COURIER_ENVELOPE, b"", now, self.peer_id), now)

    def _open_own_envelope(self, env: Envelope, pkt: Packet, now: float) -> bool:
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

    # ---------------------------------------------------------------- receive
    def receive_frame(self, link_id: str, data: bytes, now: float) -> bool:
        """Take a frame from a link. False when it changed nothing — a duplicate of a packet already taken, or
        malformed: no output, no event and no earlier timer, so an adapter need not look for any."""
        self.counters.frames_in += 1
        # Fast path for the common case in a mesh, a copy of a packet we already took: relays forward the received
        # bytes with only the TTL byte rewritten, so the frame without its TTL (hashed) identifies the copy.
        view = memoryview(data)
        digest = hashlib.blake2b(view[:TTL_OFFSET], digest_size=16)
        digest.update(view[TTL_OFFSET + 1 :])
        raw = digest.digest()
        key = self._raw_seen.get(raw)
        if key is not None and self.dedupe.seen(key, now):
            self._on_duplicate(key, link_id)
            return False
        try:
            pkt = decode_packet_untrusted(data, self.limits)
        except MalformedFrame:
            self.counters.malformed += 1
            return False
        key = self._handle_packet(link_id, pkt, data, now)
        # (A copy of a directed packet still takes the full path when hop acks are on: it must be acked again.)
        if key is not None and (not self.hop_arq or is_broadcast(pkt)):
            self._raw_seen[raw] = key
            if len(self._raw_seen) > self.dedupe.max_entries:
                del self._raw_seen[next(iter(self._raw_seen))]
        return True

    def _on_duplicate(self, key: str, link_id: str) -> None:
        self.counters.duplicate += 1
        relay = self.relays.pending(key)
        if relay is None:
            return
        strike = [link_id]
        if relay.prunable:  # an announce: the copy's sender also covered its own neighbours (see _not_covered)
            covered = self._covered_by(link_id)
            if covered:
                peer_on = self.paths.link_peers
                strike += [lid for lid in relay.link_ids if peer_on.get(lid) in covered]
        if self.relays.strike(key, strike):
            self.counters.relay_cancelled += 1  # every neighbour we would pass it to has it already

    def _handle_packet(self, link_id: str, pkt: Packet, wire: bytes, now: float, *, relay: bool = True) -> str | None:
        """Process a decoded packet; its dedupe key if it was new and accepted (None otherwise)."""
        if pkt.sender_id == self.peer_id:
            self.counters.own_echo += 1
            return None
        if not pkt.is_rsr and abs(pkt.timestamp_ms - self.wall_ms(now)) > self.settings.max_clock_skew_s * 1000:
            self.counters.stale += 1
            return None
        if pkt.type == MessageType.HOP_ACK:
            self._on_hop_ack(link_id, pkt, now)  # never deduplicated, processed further or relayed
            return None
        key = dedupe_key(pkt.sender_id, pkt.timestamp_ms, pkt.type, pkt.payload)
        if relay and self.hop_arq and not is_broadcast(pkt):
            self._send_hop_ack(link_id, pkt, key, now)  # every copy: a resend means our last ack was lost
        if not self.dedupe.check_and_add(key, now):
            self._on_duplicate(key, link_id)
            return None
        broadcast = is_broadcast(pkt)
        for_us = pkt.recipient_id == self.peer_id
        t = pkt.type
        authentic = True  # False: failed authentication or parsing, never relayed
        phones_only, prune_by_sender = False, True  # (announces: see below)
        if t == MessageType.FRAGMENT:
            if broadcast or for_us:
                authentic = self._on_fragment(link_id, pkt, now)
        elif t == MessageType.ANNOUNCE:
            ann = self._on_announce(link_id, pkt, wire, now)
            authentic = ann is not None
            if ann is not None and relay and not self._flood and pkt.ttl > 1:
                how = self._announce_relay(link_id, pkt, ann, now)
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
            self._relay(link_id, pkt, wire, key, now, phones_only=phones_only, prune_by_sender=prune_by_sender)
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
    def _relay(
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
        if pkt.ttl <= 1 or pkt.is_rsr or pkt.type in (MessageType.REQUEST_SYNC, MessageType.HOP_ACK):
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
                if pkt.type == MessageType.ANNOUNCE:
                    if phones_only:
                        targets = [lid for lid in targets if not self._settles(lid)]
                    if prune_by_sender:
                        targets = self._not_covered(targets, in_link)
                elif pkt.type != MessageType.FRAGMENT:
                    targets = fanout_subset(key, others)
            else:
                targets = self._directed_relay_links(pkt, in_link, now)
            delay = relay_jitter_s(self.rng, pkt.type, broadcast=broadcast, degree=degree)
        if ttl < 1 or not targets:
            return
        frame = with_ttl(wire, ttl)
        prune = pkt.type == MessageType.ANNOUNCE and not self._flood
        track = not broadcast and len(targets) == 1 and self._tracks(targets[0], pkt)
        if not self.relays.push(now + delay, key, frame, targets, prunable=prune, track=track):
            self.counters.relay_queue_full += 1

    def _not_covered(self, link_ids: list[str], from_link: str) -> list[str]:
        """Announce relay pruning: of ``link_ids``, those whose neighbour is not also a neighbour of the peer on
        ``from_link``. That peer sent the packet to all of its neighbours or pruned them for a node that sent
        earlier still, so by induction the earliest sender next to any node sends to it: no node is left out for
        want of a sender, only for loss. Saves most duplicate frames of announce floods in a dense mesh; announces
        repeat, so a loss is made good by the next one. A neighbourship counts only when both ends' announces
        name each other, so a neighbour lying about its neighbours cannot make us starve a node."""
        covered = self._covered_by(from_link)
        if not covered:
            return link_ids
        peer_on = self.paths.link_peers
        return [lid for lid in link_ids if peer_on.get(lid) not in covered]

    def _covered_by(self, link_id: str) -> frozenset[bytes]:
        """The neighbours of the peer on ``link_id`` that both it and they name in their announces."""
        sender = self.paths.link_peers.get(link_id)
        return self.paths.mutual_neighbours(sender) if sender is not None else frozenset()

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
                hops=hops_travelled(pkt),
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
            self._early.pop(peer, None)  # the handshake is gone: so is what waited for it
            return
        if step.reply is not None:
            flood = arrived_flooded(pkt) and not self._hop_route(peer, now)
            self._send_directed(MessageType.NOISE_HANDSHAKE, step.reply, peer, now, flood=flood)
        if step.established:
            self._handshake_expiries.pop(peer, None)
            for early in self._early.pop(peer, ()):
                self._on_encrypted(early, now)
            for plaintext in self._session_queue.pop(peer, deque()):
                self._send_encrypted(peer, plaintext, now, queue=True)
            for p in self.pending.for_peer(peer):  # don't wait for the retry timer; this send is on the house
                self.pending.reschedule(p, now)
                p.free_send = True

    def _hold_early(self, pkt: Packet) -> bool:
        """With hop acks a resent handshake message 3 can arrive after the ciphertexts that followed it: while we
        are the responder of a handshake with the sender, hold its ciphertext until the handshake completes (or
        times out, which then starts a new one) instead of abandoning the handshake at once."""
        peer = pkt.sender_id
        if not self.hop_arq or not self.sessions.responding(peer) or len(pkt.payload) > EARLY_CIPHERTEXT_MAX_BYTES:
            return False
        held = self._early.setdefault(peer, deque(maxlen=EARLY_CIPHERTEXTS))
        held.append(pkt)
        self._early.move_to_end(peer)
        while len(self._early) > EARLY_PEERS:  # bounded: EARLY_PEERS x EARLY_CIPHERTEXTS x 4 KiB
            self._early.popitem(last=False)
        self.counters.early_ciphertext += 1
        return True

    def _on_encrypted(self, pkt: Packet, now: float) -> None:
        peer = pkt.sender_id
        if self.sessions.session(peer) is None:
            if self._hold_early(pkt):
                return
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
            if self._hold_early(pkt):
                return
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
            flood = key in self._seen_private or (arrived_flooded(pkt) and not self._hop_route(peer, now))
            self._send_encrypted(peer, ack, now, queue=True, flood=flood)
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
                    hops=hops_travelled(pkt),
                    timestamp_ms=pkt.timestamp_ms,
                )
            )
        elif ptype == NoisePayloadType.DELIVERED:
            message_id = body.decode("utf-8", errors="replace")
            p = self.pending.get(message_id)
            if p is not None and p.peer_id == peer:
                self.pending.remove(message_id)
                self._events.append(DeliveryAcked(message_id, peer))
        elif ptype == NoisePayloadType.APP_CHANNEL:
            app_event = self.app.receive_untrusted(peer, body)
            if isinstance(app_event, bytes):  # a resent request we answered already: answer it again
                self._send_encrypted(peer, app_event, now, queue=True)
            elif app_event is not None:
                self._events.append(app_event)
        # read receipts, authenticated peer state and optional types are accepted and ignored

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
