"""What the mesh core reports (events, polled with :meth:`MeshCore.next_event`) and counts (:class:`MeshCounters`)."""

from __future__ import annotations

from dataclasses import dataclass

from node.routing.app import AppEvent


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


@dataclass(frozen=True, slots=True)
class EnvelopeSealed:
    """A held private message was sealed (``envelope`` in the courier encoding): a mailbox client deposits it."""

    message_id: str
    peer_id: bytes
    envelope: bytes


MeshEvent = PeerAnnounced | PeerLeft | MessageReceived | DeliveryAcked | PrivateFailed | EnvelopeSealed | AppEvent


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
    unknown_peer_probes: int = 0  # flooded handshakes for held messages to peers never heard of
    fallback_probes: int = 0  # probes after UNKNOWN_PEER_PROBES, within the fallback budget
    fallback_refused: int = 0  # ... and those the budget refused (the message waits for the peer's announce)
    announce_relay_suppressed: int = 0  # announces passed on to phones only, or (link-up ones) not at all
    sent_direct: int = 0  # directed packets we originated, by how they left
    sent_routed: int = 0
    sent_reverse: int = 0
    sent_flooded: int = 0
    courier_sealed: int = 0  # our own held messages turned into envelopes
    courier_carried: int = 0  # envelopes accepted to carry for others
    courier_handed: int = 0  # envelope copies handed to a neighbour (carrier or recipient)
    courier_opened: int = 0  # envelopes for us, opened
    courier_refused: int = 0  # envelopes refused: malformed, unopenable, expired or no room
    hop_tracked: int = 0  # directed frames sent on one link to a hop-ack neighbour, kept until acknowledged
    hop_acks_sent: int = 0  # HOP_ACKs we sent (one per copy received, duplicates included)
    hop_acks_received: int = 0  # HOP_ACKs that settled a frame we were keeping
    hop_acks_ignored: int = 0  # HOP_ACKs for nothing we keep (late, forged, or from a link's wrong peer)
    hop_retransmits: int = 0  # frames resent on their link because no hop ack came back in time
    hop_give_ups: int = 0  # frames still unacknowledged after mesh.hop_retries resends
    hop_table_full: int = 0  # frames sent without hop protection: the retransmit table was full
    hop_failovers: int = 0  # private messages resent at once (flooded) after their first hop gave up
    early_ciphertext: int = 0  # ciphertexts held until the handshake they overtook completed (hop ARQ reorders)
    unencodable: int = 0  # frames we could not encode or fragment for a link (too large for v1, > 256 fragments)
    contained_errors: int = 0  # frames or timer tasks ended by an error of our tree that escaped a handler
    contained_bugs: int = 0  # ... by any other exception: a bug (tests assert this stays 0)
    nested_fragment: int = 0  # reassembled frames that were fragments again (dropped: fragments never nest)
    oversize: int = 0  # received public messages over mesh.max_public_text_chars (dropped, not relayed)
    ping_refused: int = 0  # pings not answered: payload too large for a ping, or over the pong rate limit
    rate_limited: int = 0  # remote-triggered floods (handshakes, pongs) refused by the per-origin/global limits
    handshake_refused: int = 0  # msg1 refused: over the responder limits (in flight / per peer / global rate)
    sessions_evicted: int = 0  # Noise sessions dropped as idle or least recently used beyond mesh.max_sessions
    leave_replayed: int = 0  # signed leaves refused: not newer than the peer's last announce or accepted leave
    pin_conflict: int = 0  # announces refused: their keys conflict with a pinned (handshake-proven) binding
    pins_added: int = 0  # peer ID -> signing key bindings made durable by a completed Noise handshake
    pins_refused: int = 0  # proven bindings not pinned: the pin store is full, or over the rate of new pins
    pin_replaced_unproven: int = 0  # a proven binding replaced another (unproven) one in the peer table
    binding_challenges: int = 0  # handshakes started to make a peer prove its Noise key (its announce conflicted)
