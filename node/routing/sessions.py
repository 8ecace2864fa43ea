"""Per-peer Noise XX sessions for private messages (sans-IO).

BitChat rules (bitchat/Noise/NoiseSessionManager.swift, BITCHAT.md §3):

* XX with empty payloads: messages of 32, 96 and 64 bytes travel as 0x10 packets addressed to the peer.
* The remote static key must hash to the peer's ID (and equal the key pinned from its announce).
* Crossed initiations: the side with the lower peer-ID hex keeps the initiator role; the other yields.
* A 32-byte message 1 from a peer we already have a session with starts a fresh handshake that replaces it.
* An unfinished handshake is abandoned after its timeout (initiator 10 s, responder 20 s in BitChat).
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict
from dataclasses import dataclass

from node.crypto.errors import DecryptError, HandshakeError, ReplayError
from node.crypto.session import NoiseTransportSession, XXHandshake
from node.identity import peer_id_from_noise_key
from node.routing.ratelimit import OriginLimiter

MSG1_BYTES = 32  # → e
MSG2_BYTES = 96  # ← e, ee, s, es (+16-byte tag of the encrypted static, +16 of the empty payload)
MSG3_BYTES = 64  # → s, se
RESPONDER_TIMEOUT_FACTOR = 2.0  # BitChat: responder 20 s vs initiator 10 s
UNKNOWN_LINK_SHARE = 4  # one link may use at most 1/4 of a tier's message-1 budget (unknown or announced senders)
RESPONDER_STATES_PER_PEER = 2  # responder handshakes kept per peer: its first message 1 and its latest


class Msg1Tier(enum.IntEnum):
    """What we know of the sender of a message 1, which decides the budget it is charged to."""

    UNKNOWN = 0  # no announce from it: anyone can claim any sender ID, so only the arrival link is charged
    ANNOUNCED = 1  # a signed announce of it is in the peer table
    PINNED = 2  # it proved its Noise key in an earlier handshake (node.routing.pins)


class Msg1Budget:
    """How often message 1 may make us answer (a DH and a flooded message 2), in three tiers with separate global
    buckets, so that senders of one tier never use up the budget of a better-known one:

    * pinned peers: per (peer, arrival link) ``per_peer_per_min``, and ``per_min`` for all pinned peers;
    * announced peers: per (peer, arrival link) ``per_peer_per_min``, per arrival link ``per_min /
      UNKNOWN_LINK_SHARE``, and ``per_min`` for all announced peers;
    * unknown senders: per arrival link ``per_min / UNKNOWN_LINK_SHARE`` (the link is the one thing a sender cannot
      forge), and ``per_min`` for all unknown senders.

    A forged message 1 "from V" is charged to (V, the forger's link), never to V's bucket on V's own link."""

    def __init__(self, lim: SessionLimits) -> None:
        def limiter(per_min: float) -> OriginLimiter:
            return OriginLimiter(
                per_origin_per_s=per_min / 60.0,
                burst=per_min,
                global_per_s=lim.per_min / 60.0,
                global_burst=float(lim.per_min),
                max_origins=lim.max_peers,
            )

        link_per_min = float(max(lim.per_peer_per_min, lim.per_min // UNKNOWN_LINK_SHARE))
        self.pinned = limiter(float(lim.per_peer_per_min))
        self.announced = limiter(float(lim.per_peer_per_min))
        self.announced_links = OriginLimiter(
            per_origin_per_s=link_per_min / 60.0,
            burst=link_per_min,
            global_per_s=1e9,  # (the announced tier's global bucket is in self.announced)
            global_burst=1e9,
            max_origins=lim.max_peers,
        )
        self.unknown = limiter(link_per_min)
        self.max_peers = lim.max_peers

    def allow(self, peer: bytes, link_id: str, tier: Msg1Tier, now: float) -> bool:
        link = link_id.encode()
        if tier == Msg1Tier.UNKNOWN:
            return self.unknown.allow(link, now)
        key = peer + b"@" + link
        if tier == Msg1Tier.PINNED:
            return self.pinned.allow(key, now)
        if not (self.announced.can(key, now) and self.announced_links.can(link, now)):
            return False
        return self.announced.allow(key, now) and self.announced_links.allow(link, now)

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        n = self.max_peers
        return {
            "handshake_rate_pinned": (len(self.pinned), n),
            "handshake_rate_announced": (len(self.announced), n),
            "handshake_rate_announced_links": (len(self.announced_links), n),
            "handshake_rate_unknown_links": (len(self.unknown), n),
        }


@dataclass
class _Handshake:
    hs: XXHandshake
    initiator: bool
    deadline: float


@dataclass(frozen=True, slots=True)
class HandshakeStep:
    reply: bytes | None  # a handshake message to send to the peer, if any
    established: bool  # a transport session with the peer now exists
    refused: bool = False  # a message 1 over the responder limits: ignored (counted by the caller)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Bounds of the session table (config: ``mesh.max_responder_handshakes``, ``mesh.handshakes_per_peer_per_min``,
    ``mesh.handshakes_per_min``, ``mesh.max_sessions``, ``mesh.session_idle_s``)."""

    max_responders: int = 64
    per_peer_per_min: int = 10
    per_min: int = 120
    max_sessions: int = 1024
    idle_s: float = 3600.0
    max_peers: int = 1000  # peers whose message-1 rate is remembered


class SessionManager:
    """Handshakes in flight and transport sessions, bounded (:class:`SessionLimits`).

    * Handshakes we started (initiator) and handshakes a peer started (responder) are kept apart: a message 1
      "from P" — forged or crossed — never replaces our own handshake with P; whichever completes first gives the
      session and ends the other.
    * Responder handshakes are unverified state, cheap to drop: at most ``max_responders`` at once (the oldest
      goes), and message 1 is answered within :class:`Msg1Budget` (per peer and arrival link, per link, ``per_min``
      per tier: pinned, announced, unknown) — beyond, it is ignored (:attr:`HandshakeStep.refused`).
    * Sessions unused for ``idle_s`` are dropped, and at most ``max_sessions`` are kept (least recently used goes).
    * Deadlines are a heap (lazy deletion) and idle sessions an LRU order: :meth:`next_deadline` and
      :meth:`expire` never scan the table.
    """

    def __init__(
        self,
        *,
        static_private: bytes,
        local_peer_id: bytes,
        timeout_s: float,
        limits: SessionLimits | None = None,
    ) -> None:
        self._static = static_private
        self._local_hex = local_peer_id.hex()
        self._timeout_s = timeout_s
        self.limits = lim = limits or SessionLimits()
        self._sessions: OrderedDict[bytes, NoiseTransportSession] = OrderedDict()  # least recently used first
        self._last_used: dict[bytes, float] = {}
        # The session a new handshake replaced, kept for decryption only: frames the peer encrypted just
        # before it switched (an ack in flight) still open, instead of setting off yet another handshake.
        self._previous: dict[bytes, NoiseTransportSession] = {}
        self._initiators: dict[bytes, _Handshake] = {}
        # Per peer its responder handshakes (oldest first, at most RESPONDER_STATES_PER_PEER); peers oldest first.
        self._responders: OrderedDict[bytes, list[_Handshake]] = OrderedDict()
        self._deadlines: list[tuple[float, int, bytes]] = []  # (deadline, seq, peer): lazily invalidated
        self._seq = 0
        self._msg1_rate = Msg1Budget(lim)
        self.evicted_sessions = 0  # idle or least recently used sessions dropped
        self.evicted_responders = 0  # responder handshakes dropped for a newer one beyond max_responders

    def __len__(self) -> int:
        return len(self._sessions)

    def session(self, peer: bytes) -> NoiseTransportSession | None:
        return self._sessions.get(peer)

    def touch(self, peer: bytes, now: float) -> None:
        """The session with ``peer`` was used (a frame sent or opened): it is the most recently used."""
        if peer in self._sessions:
            self._sessions.move_to_end(peer)
            self._last_used[peer] = now

    def handshaking(self, peer: bytes) -> bool:
        return peer in self._initiators or peer in self._responders

    def responding(self, peer: bytes) -> bool:
        """A handshake with ``peer`` is under way and we are its responder (message 3 is what we await)."""
        return peer in self._responders

    def drop(self, peer: bytes) -> None:
        self._sessions.pop(peer, None)
        self._last_used.pop(peer, None)
        self._previous.pop(peer, None)
        self._initiators.pop(peer, None)
        self._responders.pop(peer, None)

    def initiating(self, peer: bytes) -> bool:
        """A handshake with ``peer`` that we started is under way."""
        return peer in self._initiators

    def decrypt_untrusted(self, peer: bytes, frame: bytes) -> bytes:
        """Decrypt with the current session, else the one it replaced. Raises CryptoError (DecryptError when
        neither opens it, ReplayError for a replay) — and HandshakeError if there is no session at all."""
        current = self._sessions.get(peer)
        if current is None:
            raise HandshakeError("no session with this peer")
        try:
            return current.decrypt_untrusted(frame)
        except (DecryptError, ReplayError) as first:
            # Nonces restart at 0 in a new session, so an old-session frame can look like a replay to the new one.
            previous = self._previous.get(peer)
            if previous is None:
                raise
            try:
                return previous.decrypt_untrusted(frame)
            except (DecryptError, ReplayError):
                raise first from None

    def initiate(self, peer: bytes, now: float, *, beside_responder: bool = False) -> bytes | None:
        """Message 1 of a new handshake, or None if one is already under way. ``beside_responder``: start it even
        while we are the responder of a handshake with ``peer`` — the recovery when the peer sends ciphertext we
        cannot open (it may have finished that handshake, its message 3 lost on the way to us). Ciphertext
        is unauthenticated, so the half-done handshake is kept, not abandoned: whichever completes first gives the
        session and ends the other, and a forged frame costs the genuine handshake nothing."""
        busy = self.initiating(peer) if beside_responder else self.handshaking(peer)
        if busy or len(self._initiators) >= self.limits.max_peers:
            return None
        hs = XXHandshake.initiator_for(self._static)
        self._initiators[peer] = self._schedule(peer, _Handshake(hs, True, now + self._timeout_s))
        return hs.write()

    def on_message_untrusted(
        self,
        peer: bytes,
        message: bytes,
        now: float,
        pinned_static: bytes | None,
        *,
        link_id: str = "",
        tier: Msg1Tier = Msg1Tier.UNKNOWN,
    ) -> HandshakeStep:
        """Feed a 0x10 payload from ``peer``. Raises HandshakeError (a remote error) when it is invalid. The
        sender field is not authenticated, so a message that does not read (or gives the wrong key) leaves the
        half-done handshake it claims to continue untouched: it is read into a copy, kept only on success, and
        the handshake ends at its deadline otherwise."""
        if len(message) == MSG1_BYTES:
            return self._on_msg1(peer, message, now, link_id, tier)
        if len(message) == MSG2_BYTES and peer in self._initiators:
            candidates = [self._initiators[peer]]
        elif len(message) == MSG3_BYTES and peer in self._responders:
            candidates = list(reversed(self._responders[peer]))  # the newest message 1 first
        else:
            raise HandshakeError(f"handshake message of {len(message)} bytes with no handshake expecting it")
        failure: HandshakeError | None = None
        for pending in candidates:
            try:
                session, reply = self._complete(peer, pending, message, pinned_static)
            except HandshakeError as exc:
                failure = exc
                continue
            return self._established(peer, session, reply, now)
        assert failure is not None
        raise failure

    @staticmethod
    def _complete(
        peer: bytes, pending: _Handshake, message: bytes, pinned_static: bytes | None
    ) -> tuple[NoiseTransportSession, bytes | None]:
        hs = pending.hs.copy()  # the pending state stays as it was unless all of this succeeds
        hs.read_untrusted(message)
        reply = hs.write() if pending.initiator else None
        session = hs.finish()
        remote = session.remote_static
        if peer_id_from_noise_key(remote) != peer:
            raise HandshakeError("the peer's static key does not hash to its peer ID")
        if pinned_static is not None and remote != pinned_static:
            raise HandshakeError("the peer's static key differs from the key pinned from its announce")
        return session, reply

    def _established(
        self, peer: bytes, session: NoiseTransportSession, reply: bytes | None, now: float
    ) -> HandshakeStep:
        self._initiators.pop(peer, None)  # the other handshake, if both were under way, is moot
        self._responders.pop(peer, None)
        old = self._sessions.get(peer)
        if old is not None:
            self._previous[peer] = old
        self._sessions[peer] = session
        self.touch(peer, now)
        while len(self._sessions) > self.limits.max_sessions:
            lru, _ = self._sessions.popitem(last=False)
            self._last_used.pop(lru, None)
            self._previous.pop(lru, None)
            self.evicted_sessions += 1
        return HandshakeStep(reply, True)

    def _on_msg1(self, peer: bytes, message: bytes, now: float, link_id: str, tier: Msg1Tier) -> HandshakeStep:
        if peer in self._initiators and self._local_hex < peer.hex():
            return HandshakeStep(None, False)  # crossed: we keep the initiator role, they will yield
        if not self._msg1_rate.allow(peer, link_id, tier, now):
            return HandshakeStep(None, False, refused=True)
        hs = XXHandshake.responder_for(self._static)
        hs.read_untrusted(message)
        msg2 = hs.write()
        # A new message 1 never replaces our initiator handshake with the peer. Nor does it replace the oldest
        # responder handshake with it (a forged message 1 "from P" would otherwise end P's genuine one): up to
        # RESPONDER_STATES_PER_PEER are kept, the oldest and the newest, and the message 3 that reads wins.
        h = self._schedule(peer, _Handshake(hs, False, now + self._timeout_s * RESPONDER_TIMEOUT_FACTOR))
        states = self._responders.pop(peer, [])
        self._responders[peer] = [*states[: RESPONDER_STATES_PER_PEER - 1], h]
        while len(self._responders) > self.limits.max_responders:
            self._responders.popitem(last=False)
            self.evicted_responders += 1
        return HandshakeStep(msg2, False)

    def _schedule(self, peer: bytes, h: _Handshake) -> _Handshake:
        self._seq += 1
        heapq.heappush(self._deadlines, (h.deadline, self._seq, peer))
        live = len(self._initiators) + len(self._responders)
        if len(self._deadlines) > 4 * live + 64:  # many stale entries: rebuild from the live handshakes
            self._deadlines = [(x.deadline, i, p) for i, (p, x) in enumerate(self._live())]
            heapq.heapify(self._deadlines)
        return h

    def _live(self) -> list[tuple[bytes, _Handshake]]:
        return [*self._initiators.items(), *((p, h) for p, hs in self._responders.items() for h in hs)]

    def _due(self, peer: bytes, deadline: float) -> bool:
        """A handshake with ``peer`` has exactly this deadline (the heap entry is not stale)."""
        h = self._initiators.get(peer)
        return (h is not None and h.deadline == deadline) or any(
            r.deadline == deadline for r in self._responders.get(peer, ())
        )

    def expire(self, now: float) -> list[bytes]:
        """Abandon handshakes past their deadline (returns the peers left with no handshake under way) and drop
        sessions idle for ``idle_s``."""
        gone: list[bytes] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, peer = heapq.heappop(heap)
            if not self._due(peer, deadline):
                continue
            h = self._initiators.get(peer)
            if h is not None and h.deadline <= now:
                del self._initiators[peer]
            states = self._responders.get(peer)
            if states is not None:
                states[:] = [r for r in states if r.deadline > now]
                if not states:
                    del self._responders[peer]
            if not self.handshaking(peer) and peer not in gone:
                gone.append(peer)
        idle = self.limits.idle_s
        while self._sessions:
            peer = next(iter(self._sessions))
            if self._last_used.get(peer, now) + idle > now:
                break
            self.drop(peer)
            self.evicted_sessions += 1
        return gone

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and not self._due(heap[0][2], heap[0][0]):
            heapq.heappop(heap)  # stale: that handshake completed, failed or was replaced
        best = heap[0][0] if heap else None
        if self._sessions:
            oldest = self._last_used.get(next(iter(self._sessions)))
            if oldest is not None and (best is None or oldest + self.limits.idle_s < best):
                best = oldest + self.limits.idle_s
        return best

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        lim = self.limits
        return {
            "sessions": (len(self._sessions), lim.max_sessions),
            "responder_handshakes": (len(self._responders), lim.max_responders),  # each <= RESPONDER_STATES_PER_PEER
            "initiator_handshakes": (len(self._initiators), lim.max_peers),
            **self._msg1_rate.bounded_sizes(),
        }
