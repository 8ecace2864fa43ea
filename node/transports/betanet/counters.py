"""BetaNet's counters, shown by `village status` under ``transport_counters.betanet``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class BetanetCounters:
    links_opened: int = 0
    oversize_frames: int = 0
    dial_failures: int = 0
    stalled: int = 0
    mdns_discovered: int = 0
    identified: int = 0  # peers whose identify we ran on a new connection (either direction)
    identify_skipped: int = 0  # new connections not identified because the queue was full
    dht_routing_added: int = 0  # identified peers that serve the DHT, added to our routing table
    dht_lookups: int = 0  # peer-ID lookups through the DHT (`village connect /p2p/<id>`)
    dht_found: int = 0  # lookups that returned at least one address
    dht_answers_cut: int = 0  # DHT answers naming more than k (20) peers: cut to k before py-libp2p read them
    dht_answers_refused: int = 0  # DHT answers refused (dht.py: over MAX_DHT_ANSWER_BYTES, more than 2k peers, a
    # senderRecord under a key costly to verify): the stream reset, nothing passed to py-libp2p
    dht_requests_refused: int = 0  # requests to our DHT server refused: over MAX_DHT_REQUEST_BYTES (dht_store.py),
    # more than 2k named peers or a costly senderRecord (dht.py): the stream reset
    dht_records_dropped: int = 0  # signed records in DHT messages under keys costly to verify (RSA e > 65537, ...)
    dht_streams_refused: int = 0  # inbound DHT streams reset: the peer had DHT_STREAMS_PER_PEER served already
    dht_requests_timed_out: int = 0  # inbound DHT streams reset: no whole request within DHT_REQUEST_TIMEOUT_S
    dht_streams_expired: int = 0  # inbound DHT streams reset: not ended within DHT_STREAM_DEADLINE_S
    dht_streams_preempted: int = 0  # inbound DHT streams reset: all 12 slots taken, this peer held the most
    dht_slots_refused: int = 0  # inbound DHT streams reset: all 12 of py-libp2p's slots taken, none pre-emptable
    dht_streams_closed: int = 0  # inbound DHT streams stuck writing (the peer stopped reading): connection closed
    dht_puts_refused: int = 0  # PUT_VALUE requests to our DHT server: refused, nothing stored (dht_store.py)
    dht_providers_refused: int = 0  # ADD_PROVIDER records not stored: the record's, its peer's or the store's bounds
    dht_providers_evicted: int = 0  # provider records evicted for another peer's (the largest share's oldest first)
    peer_addrs_refused: int = 0  # addresses a peer gave (identify, DHT) not stored: scope, shape or bounds
    identify_push_timeouts: int = 0  # identify pushes a peer did not take in time (betanet.dial_timeout_s)
    identify_push_closes: int = 0  # of those, pushes stuck in their cut (the peer stopped reading): connection closed
    relay_reservations: int = 0  # slots reserved on relays (refreshes not counted)
    relay_dials: int = 0  # connections we opened through a relay (/p2p-circuit)
    dial_fallbacks: int = 0  # dials that connected on a later address (QUIC unreachable, TCP answered)
    mesh_streams_refused: int = 0  # mesh streams reset: beyond betanet.max_mesh_streams_per_connection
    quic_initials_dropped: int = 0  # QUIC Initials dropped: handshake/connection bounds (betanet.quic_max_*)
    quic_connections_refused: int = 0  # QUIC handshakes completed from a prefix that holds its share: closed
    quic_retries: int = 0  # QUIC Retry packets sent (handshakes under pressure: the client must prove its address)
    quic_streams_over_limit: int = 0  # QUIC streams reset: a peer ignored flow control, or too many waiting
