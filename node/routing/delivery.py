"""Private delivery, a component of the mesh core: Noise sessions, private messages awaiting their delivery ack,
and the receipts that settle them.

:class:`PrivateDelivery` owns the :class:`~node.routing.sessions.SessionManager` (handshakes and transport
sessions), the :class:`~node.routing.pending.PendingSet` of unacknowledged private messages with their retry
schedule, what waits for a session (payloads queued per peer, ciphertexts that overtook the message 3 of their
handshake), and the IDs of private messages already received (re-delivered copies are acked, not shown twice). Its
timers are the handshakes' deadlines and the retries (:meth:`next_deadline`, :meth:`on_timer`).

It sends through a small :class:`DeliveryHost` (the mesh core): a directed packet to a peer (routed or flooded), a
question whether a reliable hop-acked route exists, a peer's expiry and the sealing of courier copies. Sans-IO.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Protocol

from node.crypto.errors import ReplayError
from node.errors import CryptoError, MeshError
from node.routing.app import AppChannel
from node.routing.events import DeliveryAcked, MeshCounters, MeshEvent, MessageReceived, PrivateFailed
from node.routing.meshbase import (
    EARLY_CIPHERTEXT_MAX_BYTES,
    EARLY_CIPHERTEXTS,
    EARLY_PEERS,
    FALLBACK_PROBE_INTERVAL_S,
    FALLBACK_PROBES_PER_MIN,
    HOLD_AFTER_EXPIRIES,
    MAX_TTL,
    PENDING_SESSION_FRAMES,
    PRIVATE_TEXT_MAX_BYTES,
    REHANDSHAKE_AFTER_ATTEMPTS,
    ROUTED_TRIES_WITH_HOP_ARQ,
    SEEN_PRIVATE_IDS,
    UNKNOWN_PEER_PROBES,
    arrived_flooded,
    hops_travelled,
)
from node.routing.peers import PeerInfo, PeerTable
from node.routing.pending import PendingMessage, PendingSet
from node.routing.pins import decode_peer_state_signing_key_untrusted
from node.routing.ratelimit import OriginLimiter
from node.routing.sessions import Msg1Tier, SessionLimits, SessionManager
from node.routing.settings import MeshSection
from node.wire import (
    MalformedFrame,
    MessageType,
    NoisePayloadType,
    Packet,
    decode_noise_payload_untrusted,
    decode_private_message_untrusted,
    encode_noise_payload,
    encode_private_message,
)

# Binding challenges that would not flood (a path to the peer is known, or only the announce's link is used) are
# charged to the link the conflicting announce came on, not to the global flood budget that anyone's forged
# ciphertext draws from: a link cannot be forged, so a flooder elsewhere cannot silence the challenge.
CHALLENGE_LINK_PER_S = 0.2  # one challenge per link every 5 s ...
CHALLENGE_LINK_BURST = 3.0  # ... after a burst of 3


class DeliveryHost(Protocol):
    """What private delivery needs from the core around it."""

    def send_directed(
        self, msg_type: int, payload: bytes, peer_id: bytes, now: float, *, flood: bool = False, tag: str | None = None
    ) -> list[str]: ...

    def hop_route(self, peer_id: bytes, now: float) -> bool: ...

    def routed(self, peer_id: bytes, now: float) -> bool: ...

    def send_on_link(self, link_id: str, msg_type: int, payload: bytes, peer_id: bytes, now: float) -> None: ...

    def peer_expiry_for(self, info: PeerInfo) -> float: ...

    def seal_for_couriers(self, p: PendingMessage, now: float) -> None: ...

    def session_established(self, peer_id: bytes, now: float) -> None: ...

    def peer_state(self, peer_id: bytes, signing_public_key: bytes, now: float, link_id: str = "") -> None: ...


class PrivateDelivery:
    """Sessions, pending private messages and receipts (see the module docstring)."""

    def __init__(
        self,
        *,
        host: DeliveryHost,
        noise_private: bytes,
        peer_id: bytes,
        settings: MeshSection,
        peers: PeerTable,
        counters: MeshCounters,
        events: deque[MeshEvent],
        app: AppChannel,
        hop_arq: bool,
        seal_for_mailbox: bool = False,
        flood_limiter: OriginLimiter | None = None,
    ) -> None:
        self.host = host
        self.peer_id = peer_id
        self.settings = settings
        self.peers = peers
        self.counters = counters
        self.events = events
        self.app = app
        self.hop_arq = hop_arq
        self.seal_for_mailbox = seal_for_mailbox  # seal held messages even with courier_copies = 0 (for a mailbox)
        # Floods remote input makes us start (a handshake after a ciphertext without a session, the ack of a courier
        # envelope): bounded per origin and in total. None: unlimited (unit tests).
        self.flood_limiter = flood_limiter
        self.routed_tries = ROUTED_TRIES_WITH_HOP_ARQ if hop_arq else 1
        # Our own budget for fallback probes to peers never heard of (see meshbase.FALLBACK_PROBES_PER_MIN).
        self.fallback_limiter = OriginLimiter(
            per_origin_per_s=1.0 / FALLBACK_PROBE_INTERVAL_S,
            burst=1.0,
            global_per_s=FALLBACK_PROBES_PER_MIN / 60.0,
            global_burst=FALLBACK_PROBES_PER_MIN,
            max_origins=settings.max_peers,
        )
        self.sessions = SessionManager(
            static_private=noise_private,
            local_peer_id=peer_id,
            timeout_s=settings.handshake_timeout_s,
            limits=SessionLimits(
                max_responders=settings.max_responder_handshakes,
                per_peer_per_min=settings.handshakes_per_peer_per_min,
                per_min=settings.handshakes_per_min,
                max_sessions=settings.max_sessions,
                idle_s=settings.session_idle_s,
                max_peers=settings.max_peers,
            ),
        )
        self.pending = PendingSet()
        self.seen_private: OrderedDict[str, None] = OrderedDict()
        self.session_queue: dict[bytes, deque[bytes]] = {}
        self.handshake_expiries: OrderedDict[bytes, int] = OrderedDict()  # peer -> handshakes that timed out
        # Ciphertexts that overtook the message 3 of their handshake (resent on some hop): opened once it completes.
        self.early: OrderedDict[bytes, deque[tuple[Packet, str]]] = OrderedDict()  # (packet, arrival link)
        # Links the last encrypted frame to each peer left on (bounded by the peer table's size).
        self.last_links: OrderedDict[bytes, list[str]] = OrderedDict()
        # The signing key each peer told us (0x21) inside the session it came in (kept only while that session is
        # the current one: compared by identity), for a binding challenge while the session lives.
        self.told_signing: OrderedDict[bytes, tuple[object, bytes]] = OrderedDict()
        # Binding challenges sent without flooding, per arrival link (keyed by link id; the table is bounded, and the
        # global bucket is the sum of max_peers links' rates, so it only bounds a churn of links).
        self.challenge_links = OriginLimiter(
            per_origin_per_s=CHALLENGE_LINK_PER_S,
            burst=CHALLENGE_LINK_BURST,
            global_per_s=CHALLENGE_LINK_PER_S * settings.max_peers,
            global_burst=CHALLENGE_LINK_BURST * settings.max_peers,
            max_origins=settings.max_peers,
        )

    # ---------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        a, b = self.sessions.next_deadline(), self.pending.next_due()
        return b if a is None else a if b is None or a <= b else b

    def on_timer(self, now: float) -> None:
        self.expire_handshakes(now)
        self.retry_due(now)

    def expire_handshakes(self, now: float) -> None:
        for peer in self.sessions.expire(now):
            # A handshake message was lost. If we still have something to say, try again straight away (one
            # handshake per handshake_timeout_s keeps within BitChat's 10 per minute per peer).
            early = self.early.pop(peer, None)  # the peer encrypts already: our handshake with it must complete
            waiting = self.session_queue.get(peer) or self.pending.count_for(peer) > 0 or early
            if waiting and self.reachable(peer, now):
                # The routed attempt was lost: every path now (with hop acks, one more routed attempt first).
                expired = self.handshake_expiries.pop(peer, 0) + 1
                self.handshake_expiries[peer] = expired
                while len(self.handshake_expiries) > self.settings.max_peers:
                    self.handshake_expiries.popitem(last=False)
                self.start_handshake(peer, now, flood=expired >= self.routed_tries)
            else:
                self.session_queue.pop(peer, None)

    def retry_due(self, now: float) -> None:
        """Attempt every message whose retry is due. A message whose attempt fails (a bug) is failed and removed,
        the others still go; the first failure is re-raised afterwards for the core to count."""
        failed: Exception | None = None
        for p in self.pending.pop_due(now):
            try:
                self.attempt(p, now)
            except Exception as exc:  # noqa: BLE001 - broad: one message's failure must not strand the others (re-raised)
                if self.pending.remove(p.message_id) is not None:
                    self.events.append(PrivateFailed(p.message_id, p.peer_id, f"internal error: {exc}"))
                failed = failed or exc
        if failed is not None:
            raise failed

    # ---------------------------------------------------------------- what the core tells us
    def reachable(self, peer_id: bytes, now: float) -> bool:
        """Worth sending to: heard from within two peer expiries. (A peer 6-7 hops away loses whole announces
        on a lossy path, and busy nodes announce only every 30 s: one expiry is too quick to give up.)"""
        info = self.peers.get(peer_id)
        if info is None:
            return self.sessions.session(peer_id) is not None  # unheard of, but it finished a handshake with us
        return info.reachable(now, HOLD_AFTER_EXPIRIES * self.host.peer_expiry_for(info))

    def wake(self, peer_id: bytes, now: float) -> None:
        """The peer announced itself (again): messages waiting for it go now."""
        for p in self.pending.for_peer(peer_id):
            if p.next_try > now:
                self.pending.reschedule(p, now)

    def peer_left(self, peer_id: bytes) -> None:
        self.sessions.drop(peer_id)

    def link_down(self, link_id: str, now: float) -> None:
        """Fail over: whatever awaits an ack and last left on this link is resent at once along the next best path."""
        for p in self.pending:
            if p.attempts and p.next_try > now and link_id in self.last_links.get(p.peer_id, ()):
                self.pending.reschedule(p, now)
                p.free_send = True

    def first_hop_gave_up(self, tag: str, now: float) -> bool:
        """The first hop never acknowledged the private message ``tag``: resend it at once on every path rather
        than wait for the end-to-end retry. True if a message was failed over."""
        p = self.pending.get(tag)
        if p is None or p.next_try <= now:
            return False
        self.pending.reschedule(p, now)
        p.free_send = True
        p.escalate = True
        return True

    # ---------------------------------------------------------------- sending
    def send_encrypted(
        self, peer_id: bytes, plaintext: bytes, now: float, *, queue: bool, flood: bool = False, tag: str | None = None
    ) -> None:
        """Encrypt to ``peer_id`` if a session exists; otherwise start a handshake (and, with ``queue``,
        hold the plaintext until it completes — acks are queued, private messages rely on retries)."""
        session = self.sessions.session(peer_id)
        if session is None:
            if queue:
                if peer_id not in self.session_queue and len(self.session_queue) >= self.settings.max_peers:
                    del self.session_queue[next(iter(self.session_queue))]  # the longest waiting peer's
                q = self.session_queue.setdefault(peer_id, deque(maxlen=PENDING_SESSION_FRAMES))
                q.append(plaintext)
            self.start_handshake(peer_id, now)
            return
        try:
            ciphertext = session.encrypt(plaintext)
        except CryptoError:  # nonce space exhausted: start over with a fresh handshake
            self.sessions.drop(peer_id)
            self.start_handshake(peer_id, now)
            return
        self.sessions.touch(peer_id, now)
        links = self.host.send_directed(MessageType.NOISE_ENCRYPTED, ciphertext, peer_id, now, flood=flood, tag=tag)
        self.last_links[peer_id] = links
        self.last_links.move_to_end(peer_id)
        while len(self.last_links) > self.settings.max_peers:
            self.last_links.popitem(last=False)

    def start_handshake(
        self, peer_id: bytes, now: float, *, flood: bool = False, beside_responder: bool = False
    ) -> None:
        msg1 = self.sessions.initiate(peer_id, now, beside_responder=beside_responder)
        if msg1 is not None:
            self.host.send_directed(MessageType.NOISE_HANDSHAKE, msg1, peer_id, now, flood=flood)

    def recovery_handshake(self, peer_id: bytes, now: float) -> None:
        """A flooded handshake because of what ``peer_id``'s frame showed (ciphertext we cannot open: the peer
        restarted, or finished a handshake whose message 3 we lost) — remote-triggered, so within the flood limits.
        A handshake in which we are the responder is kept beside it (the frame may be forged)."""
        if self.sessions.initiating(peer_id):
            return  # one at a time: nothing would be sent
        if self.flood_limiter is not None and not self.flood_limiter.allow(peer_id, now):
            self.counters.rate_limited += 1
            return
        self.start_handshake(peer_id, now, flood=True, beside_responder=True)

    def challenge(self, peer_id: bytes, link_id: str, now: float) -> None:
        """An announce of ``peer_id`` arrived on ``link_id`` with keys that conflict with the unproven (first-sight)
        binding we hold: one of the two announcers does not hold the Noise key the peer ID is derived from. Ask for
        proof — a handshake, sent the way the path table knows and on that link: the holder of the key completes it
        and tells us its signing key inside the session (0x21), which pins the binding and replaces a liar's
        (node.routing.pins). Without it, an attacker who claimed the ID first (after flooding the table and its
        memory of forgotten bindings) would have the genuine peer's announces refused, and our answers sent its way,
        for as long as it kept announcing. Remote-triggered: within the flood limits, one handshake at a time (and a
        liar's conflicting announce of an honest peer only makes us complete a handshake with that peer).

        Message 1 floods only when no path is known, within the flood limits. Otherwise (a path is known, or the flood
        budget is spent — a flood of forged ciphertext from throwaway IDs drains it) it goes the known way and/or on
        the announce's arrival link only, charged to that link's challenge budget: the link cannot be forged, so a
        flooder elsewhere cannot keep the challenge from going out."""
        session = self.sessions.session(peer_id)
        if session is not None:
            # Proven already: a pin follows the session's 0x21 — unless it could not be made (pins full, or over
            # their rate) and the binding was taken over while the session lived. The signing key the peer told us
            # inside this session is the proof: it replaces the liar's binding, no handshake needed.
            told = self.told_signing.get(peer_id)
            info = self.peers.get(peer_id)
            if told is not None and told[0] is session and info is not None and info.signing_public_key != told[1]:
                self.host.peer_state(peer_id, told[1], now, link_id)
            return
        if self.sessions.initiating(peer_id):
            return  # a handshake is under way
        routed = self.host.routed(peer_id, now)
        if not routed and (self.flood_limiter is None or self.flood_limiter.allow(peer_id, now)):
            link_only = False  # floods: every link, the arrival link among them
        elif link_id and self.challenge_links.allow(link_id.encode(), now):
            link_only = not routed
        else:
            self.counters.rate_limited += 1
            return
        msg1 = self.sessions.initiate(peer_id, now, beside_responder=True)
        if msg1 is None:
            return
        self.counters.binding_challenges += 1
        links = [] if link_only else self.host.send_directed(MessageType.NOISE_HANDSHAKE, msg1, peer_id, now)
        if link_id and link_id not in links:
            self.host.send_on_link(link_id, MessageType.NOISE_HANDSHAKE, msg1, peer_id, now)

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
        if message_id in self.pending:
            return
        self.check_private(peer_id, text)
        p = PendingMessage(message_id, peer_id, text, created=now if created is None else created, next_try=now)
        self.pending.add(p)
        self.attempt(p, now)

    def attempt(self, p: PendingMessage, now: float) -> None:
        s = self.settings
        reason = None
        if p.attempts >= s.private_max_attempts:
            reason = f"no delivery ack after {p.attempts} attempts"
        elif now - p.created >= s.private_expiry_s:
            reason = f"not delivered within {s.private_expiry_s:g} s (mesh.private_expiry_s)"
        if reason is not None:
            self.pending.remove(p.message_id)
            self.events.append(PrivateFailed(p.message_id, p.peer_id, reason))
            return
        if not self.reachable(p.peer_id, now) and self.peers.get(p.peer_id) is None and p.probes < UNKNOWN_PEER_PROBES:
            # Never heard an announce from it: in a large mesh a node's announce floods once per relay interval, and
            # a node at the edge of the TTL horizon may miss that flood. A Noise XX handshake needs no announce (the
            # peer proves its static key, which must hash to its peer ID), and a finished one makes the peer
            # reachable: try one a few times, backing off, before waiting for the announce. Odd tries follow a
            # source route when the topology (other peers' neighbour lists) names the peer (hop acks make that
            # reliable), even ones flood.
            p.probes += 1
            self.counters.unknown_peer_probes += 1
            self.start_handshake(p.peer_id, now, flood=p.probes % 2 == 0)
            wake = now + s.handshake_timeout_s * (1 + p.probes)
            self.pending.reschedule(p, min(wake, p.created + s.private_expiry_s))
            return
        if not self.reachable(p.peer_id, now) and self.peers.get(p.peer_id) is None:
            # Probes done and still never heard of (7 hops at high loss: its announces and our probes can all be
            # lost, and without a two-way neighbour claim no route names it): a fallback probe now and then, within
            # our own budget, so reachability does not wait on one announce getting through. A liar gains nothing
            # from it: it floods (or follows the path table as the probes do), it does not follow a one-way claim.
            if self.fallback_limiter.allow(p.peer_id, now):
                p.probes += 1
                self.counters.fallback_probes += 1
                self.start_handshake(p.peer_id, now, flood=p.probes % 2 == 0)
                self.pending.reschedule(p, min(now + FALLBACK_PROBE_INTERVAL_S, p.created + s.private_expiry_s))
                return
            self.counters.fallback_refused += 1
        if not self.reachable(p.peer_id, now):
            # Store and forward: the peer is unknown (restored from the outbox before it announced itself) or has
            # not been heard from lately (a partition, or it is offline). Sending would only flood the mesh and
            # burn attempts; its next announce wakes the message up. Meanwhile, carriers may take it there.
            sealing = s.courier_copies or self.seal_for_mailbox
            if sealing and not p.sealed and now - p.created >= s.courier_after_s:
                self.host.seal_for_couriers(p, now)
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
            self.start_handshake(p.peer_id, now, flood=now - p.created >= self.routed_tries * s.handshake_timeout_s)
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
        self.send_encrypted(p.peer_id, plaintext, now, queue=False, flood=flood, tag=p.message_id)
        if counted and p.attempts % REHANDSHAKE_AFTER_ATTEMPTS == 0 and self.sessions.session(p.peer_id) is not None:
            # Still no ack: our session may be one the peer no longer holds (it restarted, or lost the last
            # handshake message). Start a fresh handshake on every path; the old session serves until it completes.
            self.start_handshake(p.peer_id, now, flood=True)

    # ---------------------------------------------------------------- receiving
    def on_handshake(self, pkt: Packet, now: float, *, link_id: str = "", tier: Msg1Tier = Msg1Tier.UNKNOWN) -> None:
        """A 0x10 packet for us; ``link_id`` it arrived on and ``tier`` (what we know of its sender) decide which
        message-1 budget it is charged to."""
        peer = pkt.sender_id
        info = self.peers.get(peer)
        pinned = info.noise_public_key if info else None
        try:
            step = self.sessions.on_message_untrusted(peer, pkt.payload, now, pinned, link_id=link_id, tier=tier)
        except CryptoError:
            self.counters.handshake_failed += 1
            if not self.sessions.handshaking(peer):
                self.early.pop(peer, None)  # no handshake is left: neither is what waited for it
            return
        if step.refused:
            self.counters.handshake_refused += 1
            return
        if step.reply is not None:
            flood = arrived_flooded(pkt) and not self.host.hop_route(peer, now)
            if (
                link_id
                and self.flood_limiter is not None
                and (flood or not self.host.routed(peer, now))
                and not self.flood_limiter.allow(peer, now)
            ):
                # The answer would flood the mesh, and remote input may make us flood only within the flood limits
                # (a message 1 costs its sender nothing): beyond them, it goes back the way the message came.
                self.counters.rate_limited += 1
                self.host.send_on_link(link_id, MessageType.NOISE_HANDSHAKE, step.reply, peer, now)
            else:
                links = self.host.send_directed(MessageType.NOISE_HANDSHAKE, step.reply, peer, now, flood=flood)
                if link_id and pkt.ttl >= MAX_TTL and link_id not in links:
                    # It came straight from the peer (not relayed): answer on that link too. The path table's way
                    # may be stale, or learned from a liar's announce of this peer ID (it goes with the proof).
                    self.host.send_on_link(link_id, MessageType.NOISE_HANDSHAKE, step.reply, peer, now)
        if step.established:
            self.host.session_established(peer, now)
            self.handshake_expiries.pop(peer, None)
            for early, early_link in self.early.pop(peer, ()):
                self.on_encrypted(early, now, early_link)
            for plaintext in self.session_queue.pop(peer, deque()):
                self.send_encrypted(peer, plaintext, now, queue=True)
            for p in self.pending.for_peer(peer):  # don't wait for the retry timer; this send is on the house
                self.pending.reschedule(p, now)
                p.free_send = True

    def hold_early(self, pkt: Packet, link_id: str) -> bool:
        """With hop acks a resent handshake message 3 can arrive after the ciphertexts that followed it: while we
        are the responder of a handshake with the sender, hold its ciphertext until the handshake completes (or
        times out, which then starts a new one) instead of abandoning the handshake at once."""
        peer = pkt.sender_id
        if not self.hop_arq or not self.sessions.responding(peer) or len(pkt.payload) > EARLY_CIPHERTEXT_MAX_BYTES:
            return False
        held = self.early.setdefault(peer, deque(maxlen=EARLY_CIPHERTEXTS))
        held.append((pkt, link_id))
        self.early.move_to_end(peer)
        while len(self.early) > EARLY_PEERS:  # bounded: EARLY_PEERS x EARLY_CIPHERTEXTS x 4 KiB
            self.early.popitem(last=False)
        self.counters.early_ciphertext += 1
        return True

    def on_encrypted(self, pkt: Packet, now: float, link_id: str = "") -> None:
        """A 0x11 packet for us, arrived on ``link_id``."""
        peer = pkt.sender_id
        if self.sessions.session(peer) is None:
            if self.hold_early(pkt, link_id):
                return
            self.counters.decrypt_failed += 1
            # As BitChat: ciphertext without a session starts one. If we are the responder of a handshake, the
            # peer may have finished it and its message 3 never arrived: a handshake as initiator starts beside it.
            self.recovery_handshake(peer, now)
            return
        try:
            plaintext = self.sessions.decrypt_untrusted(peer, pkt.payload)
        except ReplayError:
            self.counters.replayed += 1  # a duplicate from the medium or a relay: harmless
            return
        except CryptoError:
            # The peer encrypts under keys we do not hold (it restarted, or finished a handshake whose last
            # message we lost). Start over; one handshake per peer at a time bounds what a forger can cause.
            if self.hold_early(pkt, link_id):
                return
            self.counters.decrypt_failed += 1
            self.recovery_handshake(peer, now)
            return
        self.sessions.touch(peer, now)
        try:
            ptype, body = decode_noise_payload_untrusted(plaintext)
            self.on_noise_payload(peer, ptype, body, pkt, now, link_id)
        except MalformedFrame:
            self.counters.malformed += 1

    def on_noise_payload(
        self, peer: bytes, ptype: int, body: bytes, pkt: Packet, now: float, link_id: str = ""
    ) -> None:
        self.peers.touch(peer, now)
        if ptype == NoisePayloadType.PRIVATE_MESSAGE:
            message_id, text = decode_private_message_untrusted(body)
            ack = encode_noise_payload(NoisePayloadType.DELIVERED, message_id.encode())
            key = f"{peer.hex()}:{message_id}"
            # Ack every copy. A resend means our ack was lost, and a flooded copy means the sender's route failed:
            # either way the ack goes on every path.
            flood = key in self.seen_private or (arrived_flooded(pkt) and not self.host.hop_route(peer, now))
            if self.sessions.session(peer) is not None:
                self.send_encrypted(peer, ack, now, queue=True, flood=flood)
            elif self.flood_limiter is None or self.flood_limiter.allow(peer, now):
                self.send_encrypted(peer, ack, now, queue=True, flood=flood)  # (a courier's: starts a handshake)
            else:
                self.counters.rate_limited += 1  # a courier envelope from a throwaway key: no flood for it
            if key in self.seen_private:
                return
            self.seen_private[key] = None
            while len(self.seen_private) > SEEN_PRIVATE_IDS:
                self.seen_private.popitem(last=False)
            info = self.peers.get(peer)
            self.events.append(
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
                self.events.append(DeliveryAcked(message_id, peer))
        elif ptype == NoisePayloadType.APP_CHANNEL:
            app_event = self.app.receive_untrusted(peer, body)
            if isinstance(app_event, bytes):  # a resent request we answered already: answer it again
                self.send_encrypted(peer, app_event, now, queue=True)
            elif app_event is not None:
                self.events.append(app_event)
        elif ptype == NoisePayloadType.AUTHENTICATED_PEER_STATE and self.sessions.session(peer) is not None:
            signing_key = decode_peer_state_signing_key_untrusted(body)  # (in a session: the Noise key is proven)
            if signing_key is not None:
                self.told_signing[peer] = (self.sessions.session(peer), signing_key)
                self.told_signing.move_to_end(peer)
                while len(self.told_signing) > self.settings.max_sessions:
                    self.told_signing.popitem(last=False)
                self.host.peer_state(peer, signing_key, now, link_id)
        # read receipts and optional types are accepted and ignored

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        s = self.settings
        return {
            "pending_private": (len(self.pending), s.max_pending_private),
            "seen_private": (len(self.seen_private), SEEN_PRIVATE_IDS),
            "session_queue_peers": (len(self.session_queue), s.max_peers),
            "early_ciphertext_peers": (len(self.early), EARLY_PEERS),
            "handshake_expiries": (len(self.handshake_expiries), s.max_peers),
            **self.sessions.bounded_sizes(),
            "last_links": (len(self.last_links), s.max_peers),
            **self.challenge_links.bounded_sizes("challenge_links"),
            **self.fallback_limiter.bounded_sizes("fallback_destinations"),
            "told_signing": (len(self.told_signing), s.max_sessions),
        }
