"""Typed, frozen configuration loaded from TOML.

Every section is a frozen dataclass; every field carries its unit in its name and a help text in its
metadata. :func:`load_config` rejects unknown sections and keys and values of the wrong type or range with a
:class:`~node.errors.ConfigError` naming the key (``mesh.announce_interval_s``) and the expected form.

Where things live (first match wins):

* data dir: ``--data-dir`` → ``$VILLAGE_DATA_DIR`` → ``node.data_dir`` in the config file → platformdirs'
  user data dir for ``aivillage`` (``~/.local/share/aivillage`` on Linux).
* config file: ``--config`` → ``$VILLAGE_CONFIG`` → ``<data dir>/config.toml`` if it exists → built-in defaults.

``configs/node.example.toml`` is generated from the metadata here (``village config example``); a test keeps
the two identical.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from node.errors import ConfigError
from node.wire.limits import WireLimits

APP_NAME = "aivillage"
LOG_LEVELS = ("debug", "info", "warning", "error")


def _f(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    meta: dict[str, Any] = {"help": help}
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class NodeSection:
    nickname: str = _f(
        "",
        "Name shown to peers in announces (<= 255 UTF-8 bytes). Empty: 'village-' + "
        "the first 4 hex digits of the peer ID.",
    )
    data_dir: str = _f(
        "",
        "Where keys, state and the control socket live. Empty: --data-dir, "
        "$VILLAGE_DATA_DIR, or the platform's user data dir.",
    )
    log_level: str = _f("info", "Log verbosity.", choices=LOG_LEVELS)
    shutdown_deadline_s: float = _f(
        10.0, "Seconds allowed for a clean drain after SIGINT/SIGTERM before tasks are cancelled.", min=0.1, max=600
    )


@dataclass(frozen=True, slots=True)
class ControlSection:
    socket_path: str = _f("", "Unix socket for the CLI (mode 0600). Empty: <data dir>/control.sock.")
    max_request_bytes: int = _f(
        1_048_576, "Largest JSON-RPC request line accepted, in bytes.", min=1024, max=64 * 1_048_576
    )
    max_connections: int = _f(32, "Concurrent control connections; more wait for a free slot.", min=1, max=4096)
    follow_queue_messages: int = _f(
        256,
        "Messages buffered per `inbox --follow` subscriber before it is disconnected as too slow.",
        min=1,
        max=1_000_000,
    )


@dataclass(frozen=True, slots=True)
class MeshSection:
    announce_interval_s: float = _f(
        15.0, "Mean seconds between periodic announces (BitChat: 15 +- 4).", min=1, max=3600
    )
    announce_jitter_s: float = _f(4.0, "Random +- jitter added to each announce interval, in seconds.", min=0, max=600)
    default_ttl: int = _f(7, "Hop budget of packets we originate (BitChat: 7).", min=1, max=7)
    max_clock_skew_s: float = _f(
        120.0, "Packets whose timestamp differs from our clock by more are dropped.", min=1, max=86_400
    )
    announce_max_age_s: float = _f(900.0, "Announces older than this are ignored, in seconds.", min=1, max=86_400)
    dedupe_ttl_s: float = _f(
        300.0, "How long a seen packet is remembered for duplicate suppression.", min=1, max=86_400
    )
    dedupe_max_entries: int = _f(
        1000, "Most packets remembered for duplicate suppression (trimmed to 3/4).", min=16, max=10_000_000
    )
    peer_expiry_s: float = _f(
        60.0,
        "A neighbour not heard from for this long is shown as gone (a far peer: 2.5 announce relay intervals, "
        "when that is longer).",
        min=1,
        max=86_400,
    )
    max_peers: int = _f(
        1000, "Most peers tracked; the least recently heard is forgotten beyond this.", min=1, max=1_000_000
    )
    handshake_timeout_s: float = _f(
        5.0,
        "Seconds an unfinished Noise handshake may take before it is abandoned and retried on every path "
        "(BitChat's initiator waits 10; 7 BLE hops each way take ~1 s, and a lost message costs the whole wait).",
        min=0.5,
        max=600,
    )
    private_retry_interval_s: float = _f(
        3.0, "Seconds before an unacknowledged private message is resent; doubles per attempt.", min=0.1, max=3600
    )
    private_retry_max_interval_s: float = _f(
        60.0, "Longest wait between resends of an unacknowledged private message.", min=0.1, max=86_400
    )
    private_max_attempts: int = _f(
        20,
        "Sends of a private message before it is marked failed (mesh.private_expiry_s usually ends it first).",
        min=1,
        max=1000,
    )
    max_pending_per_peer: int = _f(
        64, "Private messages awaiting a delivery ack for one peer; more are refused.", min=1, max=1_000_000
    )
    private_expiry_s: float = _f(
        600.0,
        "A private message not acknowledged within this many seconds is marked failed (handshake time included).",
        min=1,
        max=30 * 86_400,
    )
    max_pending_private: int = _f(
        256, "Private messages awaiting a delivery ack, across all peers.", min=1, max=1_000_000
    )
    max_public_text_chars: int = _f(
        60_000, "Longest public or private text accepted (BitChat: 60,000).", min=1, max=1_000_000
    )
    routing: str = _f(
        "path",
        "path: source routes and next hops learned from announces, BitChat's fan-out limits and jitter, flooding "
        "only when no path is known. flood: naive TTL flooding of everything (a baseline for benchmarks).",
        choices=("path", "flood"),
    )
    announce_relay_min_interval_s: float = _f(
        15.0,
        "Shortest time between two relays of one peer's unchanged announce; a changed one (new neighbours, "
        "nickname) is passed on after 30 s. Far peers' paths and reachability last 2.5 times the relay interval.",
        min=0,
        max=3600,
    )
    announce_relay_per_s: float = _f(
        0.5,
        "Unchanged announces this node relays per second on average: in a large mesh the relay interval per peer "
        "stretches to (peers heard of) / this, so announce traffic stops growing with the square of the mesh.",
        min=0.01,
        max=10_000,
    )
    announce_relay_max_interval_s: float = _f(
        300.0,
        "Longest relay interval however many peers were heard of (bounds how stale far paths get, and what a flood "
        "of made-up identities can do to it).",
        min=1,
        max=86_400,
    )
    path_ttl_s: float = _f(
        60.0,
        "A path learned from an announce is used for this long after it (peers announce every ~15 s); longer when "
        "announces are relayed less often (2.5 x the announce relay interval, see announce_relay_per_s).",
        min=1,
        max=86_400,
    )
    hop_retries: int = _f(
        5,
        "Retransmissions of a directed frame sent on one link to an AIVillage neighbour before it is given up, "
        "when the neighbour does not acknowledge it (per-hop ARQ between nodes announcing the capability; never "
        "with BitChat phones, never with routing = flood). 0 turns hop acks and retransmissions off.",
        min=0,
        max=20,
    )
    relay_queue_max: int = _f(
        4096, "Relays waiting out their jitter; beyond this a relay is dropped and counted.", min=1, max=1_000_000
    )
    relay_queue_max_bytes: int = _f(
        4 * 1024 * 1024,
        "Bytes of frames waiting out their relay jitter; a relay that would go past this is dropped and counted "
        "(relay_queue_full), so a flood of large frames cannot grow memory.",
        min=1024,
        max=1 << 31,
    )
    courier_copies: int = _f(
        4,
        "Copies of a sealed envelope handed to carriers (spray and wait) for a private message whose peer nobody "
        "can reach; 0 turns courier copies off.",
        min=0,
        max=64,
    )
    courier_after_s: float = _f(
        60.0,
        "Seconds a private message waits for an unreachable peer before courier copies are made.",
        min=0,
        max=30 * 86_400,
    )
    courier_expiry_s: float = _f(
        86_400.0, "Lifetime of a courier envelope; carriers drop it afterwards.", min=60, max=30 * 86_400
    )
    courier_max_envelopes: int = _f(
        256, "Envelopes this node carries for others at once (the one nearest expiry goes first).", min=1, max=1_000_000
    )
    inbox_max_messages: int = _f(
        10_000, "Messages kept in the inbox; the oldest are pruned beyond this.", min=1, max=100_000_000
    )


# `[wire]` is the codec's WireLimits; its help texts and ranges live here so the codec stays config-free.
WIRE_HELP: dict[str, tuple[str, float, float]] = {
    "max_payload_bytes": ("Largest packet payload or originalSize accepted, in bytes.", 1024, 1 << 30),
    "max_decompression_ratio": ("Largest originalSize / compressed size accepted (zip-bomb guard).", 2, 1 << 20),
    "max_route_hops": ("Most hops in a v2 source route.", 0, 255),
    "fragment_max_total": ("Largest fragment count accepted from a peer.", 1, 65_535),
    "fragment_max_send_count": ("Most fragments we emit for one frame.", 1, 65_535),
    "fragment_max_assemblies": ("Concurrent reassemblies kept (oldest evicted).", 1, 1_000_000),
    "fragment_lifetime_s": ("Seconds an incomplete reassembly may live.", 0.1, 3600),
    "fragment_max_assembly_bytes": ("Bytes one reassembly may hold.", 1024, 1 << 30),
    "fragment_max_assembly_bytes_large": (
        "Bytes one reassembly of a noiseEncrypted/fileTransfer frame may hold.",
        1024,
        1 << 30,
    ),
}


@dataclass(frozen=True, slots=True)
class BetanetSection:
    enabled: bool = _f(
        True, "Run BetaNet, the internet transport (libp2p; never plaintext: Noise on TCP, TLS 1.3 on QUIC)."
    )
    listen: tuple[str, ...] = _f(
        ("/ip4/0.0.0.0/udp/4001/quic-v1", "/ip4/0.0.0.0/tcp/4001"),
        "Multiaddrs to listen on: QUIC (/udp/N/quic-v1, TLS 1.3 with the libp2p peer-ID certificate) and TCP "
        "(/tcp/N, Noise) on the same port by default; a QUIC dial falls back to the TCP address with the same "
        "port (port 0 picks a free port).",
    )
    bootstrap: tuple[str, ...] = _f(
        (), "Peers to dial at start and keep connected, as /ip4/.../udp/N/quic-v1/p2p/ID or /ip4/.../tcp/N/p2p/ID."
    )
    mdns: bool = _f(True, "Find and dial other nodes on the local network with mDNS (multicast on every interface).")
    dht: bool = _f(
        True,
        "Run libp2p's Kademlia DHT (peer routing): `village connect /p2p/<peer id>` looks the peer's addresses up "
        "through connected peers.",
    )
    relay: str = _f(
        "client",
        "Circuit relay v2 (libp2p's). off: none. client: accept connections relayed to us, dial /p2p-circuit "
        "addresses, and reserve a slot on each bootstrap peer that is a relay, advertising "
        "/p2p/<relay>/p2p-circuit/p2p/<us> addresses (for nodes behind NAT). hop: accept and dial relayed "
        "connections and relay for others (anchors); reserves nothing. Relayed links are Noise end to end.",
        choices=("off", "client", "hop"),
    )
    relay_max_reservations: int = _f(
        32, "With relay = hop: most peers holding a relay slot on this node at once.", min=1, max=100_000
    )
    relay_max_circuits_per_peer: int = _f(
        8,
        "With relay = hop: most relayed connections to one reserved peer at once (all circuits: at most "
        "relay_max_reservations times this).",
        min=1,
        max=10_000,
    )
    max_frame_bytes: int = _f(
        1_179_840,
        "Largest mesh frame accepted on a BetaNet stream (a full-size BitChat packet plus headers).",
        min=1024,
        max=64 * 1_048_576,
    )
    reconnect_initial_s: float = _f(
        1.0, "First delay before redialling a lost bootstrap peer; doubles per failure.", min=0.1, max=3600
    )
    reconnect_max_s: float = _f(60.0, "Longest delay between redials of a bootstrap peer.", min=1, max=86_400)
    dial_timeout_s: float = _f(10.0, "Seconds a dial (connect + Noise + stream) may take.", min=0.5, max=600)
    stall_timeout_s: float = _f(
        120.0,
        "A link that delivers no bytes for this long, or whose peer does not accept a frame for this long, is "
        "closed as stalled (peers announce every ~15 s).",
        min=1,
        max=86_400,
    )


# `[ble]`: BitChat over Bluetooth LE (node/transports/ble/). `enabled` takes the strings below or a bare TOML
# boolean (true/false are stored as "true"/"false").
BLE_ENABLED = ("auto", "true", "false")
BLE_POWER_MODES = ("auto", "performance", "balanced", "saver")


@dataclass(frozen=True, slots=True)
class BleSection:
    enabled: str = _f(
        "auto",
        "auto: run BLE where a working adapter is found, otherwise log one line and run without it. "
        "true: BLE is required; the node refuses to start without a working adapter. false: never touch BLE. "
        "true/false may also be written as bare booleans.",
        choices=BLE_ENABLED,
    )
    adapter: str = _f(
        "bluez",
        "bluez: the system Bluetooth stack over D-Bus (bleak as central, bless as peripheral; Linux, Raspberry Pi). "
        "bumble: Google's Bumble stack driving an HCI controller directly (USB dongle, serial, or a virtual "
        "controller) where BlueZ is absent; needs ble.bumble_transport.",
        choices=("bluez", "bumble"),
    )
    bumble_transport: str = _f(
        "",
        'With adapter = bumble: Bumble\'s transport spec for the controller, e.g. "usb:0", "serial:/dev/ttyUSB0", '
        '"tcp-client:127.0.0.1:9000".',
    )
    power_mode: str = _f(
        "auto",
        "Scan/advertise duty cycle. performance: scan and advertise continuously. balanced: scan 8 s of every 10 "
        "(BitChat Android's normal mode). saver: scan 2 s of every 30, advertise less often. auto: performance on "
        "external power, balanced on battery, saver on battery below 20 % (back to balanced above 25 %); balanced "
        "when the battery state cannot be read.",
        choices=BLE_POWER_MODES,
    )
    max_central_links: int = _f(
        6,
        "Most links this node opens as central (it connects out); peers connecting to us do not count "
        "(BitChat: iOS 6, Android 8). 0: peripheral only.",
        min=0,
        max=16,
    )
    rssi_min_dbm: int = _f(
        -90,
        "Peers heard weaker than this are not connected to, in dBm (BitChat iOS: -90).",
        min=-100,
        max=-30,
    )
    nickname: str = _f(
        "",
        "BLE device name BlueZ shows (adapter alias / GAP name; <= 255 UTF-8 bytes). Empty: the node's nickname. "
        "Announces always carry node.nickname.",
    )


@dataclass(frozen=True, slots=True)
class AnchorSection:
    enabled: bool = _f(
        False,
        "Also run the anchor (HTTP gateway + shared stores) inside `village run`; `village anchor run` does so "
        "regardless.",
    )
    gateway_listen: str = _f("127.0.0.1:8000", "HOST:PORT the HTTP gateway listens on (port 0 picks a free port).")
    services_settings: str = _f(
        "",
        "JSON file with the stores' connection settings (written by `scripts/services up`). Empty: "
        "$VILLAGE_SERVICES_SETTINGS, else <data dir>/services.json if it exists, else the checkout's "
        ".services/settings.json.",
    )
    token_ttl_s: float = _f(
        900.0, "Lifetime of the access tokens (JWT) POST /v1/auth/token issues.", min=10, max=86_400
    )
    key_rate_per_s: float = _f(
        50.0, "Requests per second each API key (or OAuth2 client) may make, sustained.", min=0.01, max=1_000_000
    )
    key_burst: int = _f(100, "Requests an API key may make at once above its sustained rate.", min=1, max=1_000_000)
    ip_rate_per_s: float = _f(
        100.0, "Requests per second from one client IP address, sustained.", min=0.01, max=1_000_000
    )
    ip_burst: int = _f(200, "Requests one client IP address may make at once above its rate.", min=1, max=1_000_000)
    max_body_bytes: int = _f(
        65_536, "Largest request body the gateway accepts, in bytes.", min=1024, max=64 * 1_048_576
    )
    max_event_streams: int = _f(64, "Concurrent WS /v1/events connections; more are refused.", min=1, max=100_000)
    store_timeout_s: float = _f(
        5.0, "Seconds a store call may take before the request fails with 503.", min=0.1, max=600
    )
    queue_max: int = _f(
        10_000,
        "Messages POST /v1/messages may hold in the Redis queue for the node; more are refused with 503.",
        min=1,
        max=10_000_000,
    )
    key_cache_ttl_s: float = _f(
        10.0,
        "Seconds Redis caches an API key's verified state (role, scopes, revoked) so requests skip PostgreSQL; "
        "a revocation through this anchor clears it at once, one made straight in PostgreSQL takes up to this "
        "long. 0: no cache.",
        min=0,
        max=3600,
    )
    health_cache_s: float = _f(
        1.0,
        "GET /v1/health asks the stores at most this often (seconds); in between it answers the last result.",
        min=0,
        max=60,
    )
    tls_cert: str = _f(
        "",
        "PEM certificate (chain) the gateway serves HTTPS with, together with tls_key. Empty: plain HTTP, which "
        "is refused on a non-loopback gateway_listen unless allow_plaintext_public.",
    )
    tls_key: str = _f("", "PEM private key of tls_cert (keep it 0600).")
    allow_plaintext_public: bool = _f(
        False,
        "Serve plain HTTP on a non-loopback gateway_listen: only behind a reverse proxy that terminates TLS.",
    )


@dataclass(frozen=True, slots=True)
class MailboxSection:
    anchors: tuple[str, ...] = _f(
        (),
        "Anchors keeping sealed envelopes for offline peers, as /ip4/.../tcp/N/p2p/ID: a private message whose peer "
        "is unreachable after mesh.courier_after_s is deposited at each, and this node fetches its own from them "
        "at start, whenever a link to one comes up, and every fetch_interval_s.",
    )
    fetch_interval_s: float = _f(
        300.0, "Seconds between fetches from each mailbox anchor while connected.", min=1, max=86_400
    )
    max_pending_deposits: int = _f(
        256,
        "Envelopes waiting to be deposited (an anchor is unreachable); the oldest go beyond this.",
        min=1,
        max=1_000_000,
    )
    request_timeout_s: float = _f(30.0, "Seconds one mailbox request (dial + answer) may take.", min=0.5, max=600)
    serve: bool = _f(
        False,
        "Keep envelopes for offline peers (an anchor): serve /aivillage/mailbox/1.0.0 on BetaNet, storing in the "
        "PostgreSQL of anchor.services_settings.",
    )
    max_envelope_bytes: int = _f(4096, "With serve: largest envelope accepted, in bytes.", min=256, max=1_048_576)
    max_envelopes_per_recipient: int = _f(
        256,
        "With serve: envelopes kept for one recipient. Depositors share them fairly (each one's share shrinks as "
        "more deposit for that recipient); a deposit that does not fit is refused (E_FULL, retried by the sender), "
        "never made room for by dropping stored mail.",
        min=1,
        max=1_000_000,
    )
    max_bytes_per_recipient: int = _f(
        524_288, "With serve: envelope bytes kept for one recipient (shared like the envelopes).", min=4096, max=1 << 30
    )
    unverified_share: float = _f(
        0.75,
        "With serve: the part of each recipient's envelopes and bytes that depositors not in trusted_depositors "
        "may use together (their keys cost nothing to make); the rest is kept for trusted ones. Without "
        "trusted_depositors, unverified ones may use all of it.",
        min=0.05,
        max=1.0,
    )
    trusted_depositors: tuple[str, ...] = _f(
        (),
        "With serve: BetaNet keys of known peers (Ed25519 signing keys, 64 hex digits, as `village id --json` shows "
        "signing_public_key) whose deposits are verified: they may use the whole mailbox, including the part kept "
        "from unverified ones.",
    )
    max_envelopes_total: int = _f(
        100_000, "With serve: envelopes kept for all recipients; more deposits are refused.", min=1, max=100_000_000
    )
    max_envelopes_per_depositor_total: int = _f(
        1000,
        "With serve: envelopes one depositor not in trusted_depositors may have kept for all recipients together "
        "(its key costs nothing, so it must not fill max_envelopes_total with junk for invented recipients); with "
        "trusted_depositors set, unverified deposits together also fill at most unverified_share of "
        "max_envelopes_total.",
        min=1,
        max=100_000_000,
    )
    keep_unverified_s: float = _f(
        7 * 86_400.0,
        "With serve: the longest an envelope from a depositor not in trusted_depositors is kept (a shorter expiry "
        "than max_expiry_s, so junk from free keys leaves sooner): its recipient must fetch it within this time.",
        min=3600,
        max=365 * 86_400,
    )
    max_expiry_s: float = _f(
        30 * 86_400.0, "With serve: deposits expiring further out than this are refused.", min=60, max=365 * 86_400
    )
    challenge_ttl_s: float = _f(
        30.0, "With serve: seconds a fetch challenge may be answered in (each is good for one answer).", min=1, max=3600
    )
    deposits_per_peer_per_min: float = _f(
        120.0,
        "With serve: deposits one BetaNet peer may make per minute (as many at once); more are answered busy.",
        min=1,
        max=1_000_000,
    )


@dataclass(frozen=True, slots=True)
class RagSection:
    enabled: bool = _f(True, "Serve the local knowledge base (rag.* control methods, `village rag`).")
    mode: str = _f(
        "hybrid",
        "Retrieval: hybrid (BM25 + MiniLM embeddings, fused), bm25 (SQLite FTS5 only: no model needed, nothing "
        "embedded at ingest) or dense (embeddings only).",
        choices=("hybrid", "bm25", "dense"),
    )
    chunk_chars: int = _f(1000, "Largest chunk, in characters (MiniLM reads ~256 word pieces).", min=100, max=100_000)
    chunk_overlap_chars: int = _f(
        200, "Characters of the previous chunk repeated at the start of the next.", min=0, max=50_000
    )
    max_file_bytes: int = _f(
        52_428_800, "Files larger than this are refused at ingest, in bytes.", min=1024, max=1 << 34
    )
    embed_threads: int = _f(2, "onnxruntime intra-op threads for the embedding model.", min=1, max=64)
    embed_batch: int = _f(
        8,
        "Texts embedded per model call (onnxruntime memory grows with batch x length^2: 8 peaks near 0.6 GB, 32 "
        "near 1.6 GB, at the same speed).",
        min=1,
        max=1024,
    )
    candidates: int = _f(100, "Hits taken from each retriever (BM25, dense) before fusion.", min=10, max=10_000)
    fusion: str = _f(
        "convex",
        "How BM25 and dense lists are merged: convex (weighted sum of z-normalised scores, tuned on SciFact "
        "training claims) or rrf (reciprocal-rank fusion, k = 60).",
        choices=("convex", "rrf"),
    )
    dense_weight: float = _f(0.5, "Weight of the dense list in the fusion (BM25 gets 1 - this).", min=0, max=1)
    graph: bool = _f(False, "Expand results through the knowledge graph (personalised PageRank).")
    max_results: int = _f(100, "Most results one query may ask for.", min=1, max=10_000)
    snippet_chars: int = _f(240, "Length of the snippet shown with each result, in characters.", min=20, max=10_000)
    hnsw_m: int = _f(16, "hnswlib M (graph degree); more: better recall, more memory.", min=4, max=128)
    hnsw_ef_construction: int = _f(200, "hnswlib ef at build time.", min=10, max=4096)
    hnsw_ef_search: int = _f(100, "hnswlib ef at query time (raised to the number of candidates).", min=10, max=4096)
    trust_half_life_days: float = _f(
        90.0,
        "Trust: feedback about a source weighs half after this many days (exponential forgetting).",
        min=0.01,
        max=36500,
    )


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    control: ControlSection = field(default_factory=ControlSection)
    mesh: MeshSection = field(default_factory=MeshSection)
    wire: WireLimits = field(default_factory=WireLimits)
    betanet: BetanetSection = field(default_factory=BetanetSection)
    anchor: AnchorSection = field(default_factory=AnchorSection)
    mailbox: MailboxSection = field(default_factory=MailboxSection)
    rag: RagSection = field(default_factory=RagSection)
    ble: BleSection = field(default_factory=BleSection)
    # Resolved, not read from TOML: the data dir and the file the config came from (None: defaults).
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    source: Path | None = None

    @property
    def socket_path(self) -> Path:
        return Path(self.control.socket_path) if self.control.socket_path else self.data_dir / "control.sock"


SECTIONS: dict[str, type] = {
    "node": NodeSection,
    "control": ControlSection,
    "mesh": MeshSection,
    "wire": WireLimits,
    "betanet": BetanetSection,
    "anchor": AnchorSection,
    "mailbox": MailboxSection,
    "rag": RagSection,
    "ble": BleSection,
}


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def _field_meta(section: str, f: dataclasses.Field[Any]) -> Mapping[str, Any]:
    if section == "wire":
        help_text, lo, hi = WIRE_HELP[f.name]
        return {"help": help_text, "min": lo, "max": hi}
    return f.metadata


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _check_value(key: str, value: Any, typ: Any, meta: Mapping[str, Any]) -> Any:
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    elif typing.get_origin(typ) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        value = tuple(value)
    else:  # pragma: no cover - a new field type must be taught here
        raise ConfigError(f"{key}: unsupported field type {typ!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise ConfigError(f"{key}: expected a value from {_num(lo)} to {_num(hi)}, got {value!r}")
    return value


def _build_section(name: str, raw: Any) -> Any:
    cls = SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}]: expected a table of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if name == "ble" and key == "enabled":
            if isinstance(value, bool):
                value = "true" if value else "false"  # `enabled = true` is the natural spelling
            elif not isinstance(value, str):
                raise ConfigError(f"ble.enabled: expected auto, true or false, got {value!r}")
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{name}.{key}: unknown key (known keys in [{name}]: {known})")
        kwargs[key] = _check_value(f"{name}.{key}", value, hints[key], _field_meta(name, fields[key]))
    section = cls(**kwargs)
    if name == "node" and len(section.nickname.encode()) > 255:
        raise ConfigError("node.nickname: expected at most 255 UTF-8 bytes")
    if name == "anchor":
        parse_host_port("anchor.gateway_listen", section.gateway_listen)
    if name == "rag" and section.chunk_overlap_chars >= section.chunk_chars:
        raise ConfigError(f"rag.chunk_overlap_chars: expected less than rag.chunk_chars ({section.chunk_chars})")
    if name == "ble":
        _check_ble(section)
    if name == "mailbox":
        for key in section.trusted_depositors:
            if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
                raise ConfigError(f"mailbox.trusted_depositors: expected 64 hex digits (an Ed25519 key), got {key!r}")
        share = section.unverified_share if section.trusted_depositors else 1.0  # nothing to keep room for
        if int(section.max_bytes_per_recipient * share) < section.max_envelope_bytes:
            raise ConfigError(
                f"mailbox.max_bytes_per_recipient: {section.max_bytes_per_recipient} x mailbox.unverified_share "
                f"({share:g}) must hold at least one mailbox.max_envelope_bytes ({section.max_envelope_bytes}) envelope"
            )
    return section


def parse_host_port(key: str, value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6) -> (host, port); a ConfigError naming ``key`` otherwise."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key}: expected HOST:PORT such as 127.0.0.1:8000, got {value!r}")
    return host, int(port)


def _check_ble(section: BleSection) -> None:
    if len(section.nickname.encode()) > 255:
        raise ConfigError("ble.nickname: expected at most 255 UTF-8 bytes")
    if section.adapter == "bumble" and section.enabled != "false" and not section.bumble_transport.strip():
        raise ConfigError(
            'ble.bumble_transport: adapter = "bumble" needs a Bumble transport spec, e.g. "usb:0" or '
            '"tcp-client:127.0.0.1:9000"'
        )


def config_from_mapping(raw: Mapping[str, Any], *, data_dir: Path | None = None, source: Path | None = None) -> Config:
    """Validate a parsed TOML document. ``data_dir`` (if given) wins over ``node.data_dir``."""
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"[{name}]: unknown section (known sections: {', '.join(SECTIONS)})")
        sections[name] = _build_section(name, value)
    node = sections.get("node", NodeSection())
    if data_dir is None:
        data_dir = Path(node.data_dir).expanduser() if node.data_dir else default_data_dir()
    return Config(data_dir=data_dir, source=source, **sections)


def load_config(
    config_path: Path | None = None, *, data_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Find, read and validate the configuration (see the module docstring for the search order)."""
    env = os.environ if env is None else env
    if data_dir is None and env.get("VILLAGE_DATA_DIR"):
        data_dir = Path(env["VILLAGE_DATA_DIR"])
    if config_path is None and env.get("VILLAGE_CONFIG"):
        config_path = Path(env["VILLAGE_CONFIG"])
    if config_path is None:
        candidate = (data_dir or default_data_dir()) / "config.toml"
        if not candidate.exists():
            return Config(data_dir=(data_dir or default_data_dir()).expanduser())
        config_path = candidate
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {config_path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {config_path} cannot be read: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_path} is not valid TOML: {exc}") from exc
    try:
        cfg = config_from_mapping(raw, data_dir=data_dir.expanduser() if data_dir else None, source=config_path)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(value)


def example_toml() -> str:
    """The documented example config: every key, its default, its meaning and range."""
    lines = [
        "# AIVillage node configuration. Every key is optional; the values shown are the defaults.",
        "# Generated by `village config example`; tests keep this file and the code in step.",
        "# Units are in the key names: _s seconds, _bytes bytes, _chars characters.",
    ]
    for name, cls in SECTIONS.items():
        lines.append("")
        lines.append(f"[{name}]")
        defaults = cls()
        for f in dataclasses.fields(cls):
            meta = _field_meta(name, f)
            rng = ""
            if "choices" in meta:
                rng = " One of: " + ", ".join(meta["choices"]) + "."
            elif "min" in meta:
                rng = f" Range {_num(meta['min'])} to {_num(meta['max'])}."
            lines.append(f"# {meta['help']}{rng}")
            lines.append(f"{f.name} = {_toml_value(getattr(defaults, f.name))}")
    return "\n".join(lines) + "\n"


def config_as_dict(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS}
    out["resolved"] = {
        "data_dir": str(cfg.data_dir),
        "socket_path": str(cfg.socket_path),
        "source": str(cfg.source) if cfg.source else None,
    }
    return out
