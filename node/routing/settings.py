"""The ``[mesh]`` section: the mesh core's timers and bounds (sans-IO: declared with node.schema, never the loader)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.schema import setting


@dataclass(frozen=True, slots=True)
class MeshSection:
    SECTION: ClassVar[str] = "mesh"

    announce_interval_s: float = setting(
        15.0, "Mean seconds between periodic announces (BitChat: 15 +- 4).", min=1, max=3600
    )
    announce_jitter_s: float = setting(
        4.0, "Random +- jitter added to each announce interval, in seconds.", min=0, max=600
    )
    default_ttl: int = setting(7, "Hop budget of packets we originate (BitChat: 7).", min=1, max=7)
    max_clock_skew_s: float = setting(
        120.0, "Packets whose timestamp differs from our clock by more are dropped.", min=1, max=86_400
    )
    announce_max_age_s: float = setting(900.0, "Announces older than this are ignored, in seconds.", min=1, max=86_400)
    dedupe_ttl_s: float = setting(
        300.0, "How long a seen packet is remembered for duplicate suppression.", min=1, max=86_400
    )
    dedupe_max_entries: int = setting(
        1000, "Most packets remembered for duplicate suppression (trimmed to 3/4).", min=16, max=10_000_000
    )
    peer_expiry_s: float = setting(
        60.0,
        "A neighbour not heard from for this long is shown as gone (a far peer: 2.5 announce relay intervals, "
        "when that is longer).",
        min=1,
        max=86_400,
    )
    max_peers: int = setting(
        1000, "Most peers tracked; the least recently heard is forgotten beyond this.", min=1, max=1_000_000
    )
    handshake_timeout_s: float = setting(
        5.0,
        "Seconds an unfinished Noise handshake may take before it is abandoned and retried on every path "
        "(BitChat's initiator waits 10; 7 BLE hops each way take ~1 s, and a lost message costs the whole wait).",
        min=0.5,
        max=600,
    )
    private_retry_interval_s: float = setting(
        3.0, "Seconds before an unacknowledged private message is resent; doubles per attempt.", min=0.1, max=3600
    )
    private_retry_max_interval_s: float = setting(
        60.0, "Longest wait between resends of an unacknowledged private message.", min=0.1, max=86_400
    )
    private_max_attempts: int = setting(
        20,
        "Sends of a private message before it is marked failed (mesh.private_expiry_s usually ends it first).",
        min=1,
        max=1000,
    )
    max_pending_per_peer: int = setting(
        64, "Private messages awaiting a delivery ack for one peer; more are refused.", min=1, max=1_000_000
    )
    private_expiry_s: float = setting(
        600.0,
        "A private message not acknowledged within this many seconds is marked failed (handshake time included).",
        min=1,
        max=30 * 86_400,
    )
    max_pending_private: int = setting(
        256, "Private messages awaiting a delivery ack, across all peers.", min=1, max=1_000_000
    )
    max_public_text_chars: int = setting(
        60_000, "Longest public or private text accepted (BitChat: 60,000).", min=1, max=1_000_000
    )
    routing: str = setting(
        "path",
        "path: source routes and next hops learned from announces, BitChat's fan-out limits and jitter, flooding "
        "only when no path is known. flood: naive TTL flooding of everything (a baseline for benchmarks).",
        choices=("path", "flood"),
    )
    announce_relay_min_interval_s: float = setting(
        15.0,
        "Shortest time between two relays of one peer's unchanged announce; a changed one (new neighbours, "
        "nickname) is passed on after 30 s. Far peers' paths and reachability last 2.5 times the relay interval.",
        min=0,
        max=3600,
    )
    announce_relay_per_s: float = setting(
        0.5,
        "Unchanged announces this node relays per second on average: in a large mesh the relay interval per peer "
        "stretches to (peers heard of) / this, so announce traffic stops growing with the square of the mesh.",
        min=0.01,
        max=10_000,
    )
    announce_relay_max_interval_s: float = setting(
        300.0,
        "Longest relay interval however many peers were heard of (bounds how stale far paths get, and what a flood "
        "of made-up identities can do to it).",
        min=1,
        max=86_400,
    )
    path_ttl_s: float = setting(
        60.0,
        "A path learned from an announce is used for this long after it (peers announce every ~15 s); longer when "
        "announces are relayed less often (2.5 x the announce relay interval, see announce_relay_per_s).",
        min=1,
        max=86_400,
    )
    hop_retries: int = setting(
        5,
        "Retransmissions of a directed frame sent on one link to an AIVillage neighbour before it is given up, "
        "when the neighbour does not acknowledge it (per-hop ARQ between nodes announcing the capability; never "
        "with BitChat phones, never with routing = flood). 0 turns hop acks and retransmissions off.",
        min=0,
        max=20,
    )
    relay_queue_max: int = setting(
        4096, "Relays waiting out their jitter; beyond this a relay is dropped and counted.", min=1, max=1_000_000
    )
    relay_queue_max_bytes: int = setting(
        4 * 1024 * 1024,
        "Bytes of frames waiting out their relay jitter; a relay that would go past this is dropped and counted "
        "(relay_queue_full), so a flood of large frames cannot grow memory.",
        min=1024,
        max=1 << 31,
    )
    courier_copies: int = setting(
        4,
        "Copies of a sealed envelope handed to carriers (spray and wait) for a private message whose peer nobody "
        "can reach; 0 turns courier copies off.",
        min=0,
        max=64,
    )
    courier_after_s: float = setting(
        60.0,
        "Seconds a private message waits for an unreachable peer before courier copies are made.",
        min=0,
        max=30 * 86_400,
    )
    courier_expiry_s: float = setting(
        86_400.0, "Lifetime of a courier envelope; carriers drop it afterwards.", min=60, max=30 * 86_400
    )
    courier_max_envelopes: int = setting(
        256,
        "Envelopes this node carries for others at once (when full, the link holding the most loses its envelope "
        "expiring last).",
        min=1,
        max=1_000_000,
    )
    inbox_max_messages: int = setting(
        10_000, "Messages kept in the inbox; the oldest are pruned beyond this.", min=1, max=100_000_000
    )
    remote_floods_per_origin_per_s: float = setting(
        0.1,
        "Floods one origin's frames may make this node start, per second (handshakes after a ciphertext without "
        "a session, pongs to far pings, acks of courier envelopes); bursts of 3.",
        min=0.001,
        max=1000,
    )
    remote_floods_per_s: float = setting(
        2.0,
        "Floods all origins' frames together may make this node start, per second (bursts of 20).",
        min=0.01,
        max=10_000,
    )
    max_responder_handshakes: int = setting(
        64,
        "Noise handshakes in flight that a peer started (unverified state: the oldest is dropped beyond this).",
        min=1,
        max=1_000_000,
    )
    handshakes_per_peer_per_min: int = setting(
        10, "Handshake starts (message 1) accepted from one peer per minute (BitChat: 10).", min=1, max=10_000
    )
    handshakes_per_min: int = setting(
        120, "Handshake starts (message 1) accepted from all peers together per minute.", min=1, max=1_000_000
    )
    max_sessions: int = setting(
        1024, "Noise sessions kept; the least recently used is dropped beyond this.", min=1, max=1_000_000
    )
    session_idle_s: float = setting(
        3600.0,
        "A Noise session unused for this long is dropped (a new handshake starts on demand).",
        min=1,
        max=30 * 86_400,
    )
    fragment_max_assemblies_per_peer: int = setting(
        8, "Reassemblies one peer may have in progress; its own oldest is dropped beyond this.", min=1, max=100_000
    )
    fragment_max_bytes_per_peer: int = setting(
        2 * 1024 * 1024,
        "Bytes one peer's reassemblies may hold; its own oldest is dropped beyond this.",
        min=1024,
        max=1 << 31,
    )
    fragment_max_bytes: int = setting(
        16 * 1024 * 1024,
        "Bytes all reassemblies together may hold; the oldest of the peer holding most is dropped beyond this.",
        min=1024,
        max=1 << 33,
    )
    send_peer_state: bool = setting(
        True,
        "After a Noise handshake with an AIVillage peer, tell it our signing key inside the session "
        "(authenticatedPeerState) so it can pin our identity durably; costs one encrypted frame each way per "
        "handshake.",
    )
    max_pins: int = setting(
        10_000,
        "Peer ID -> signing key bindings kept (made durable by a completed Noise handshake, at most 6 new ones a "
        "minute). A pin is never evicted for a new one: when full, new bindings are refused (counted as "
        "pins_refused) until pins are forgotten (village peers --forget).",
        min=1,
        max=10_000_000,
    )
