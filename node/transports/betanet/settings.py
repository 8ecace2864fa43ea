"""The ``[betanet]`` section: the internet transport (libp2p). Listen and bootstrap addresses are parsed here, so
`village config check` refuses what a start would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from node.errors import ConfigError
from node.schema import setting


@dataclass(frozen=True, slots=True)
class BetanetSection:
    SECTION: ClassVar[str] = "betanet"

    enabled: bool = setting(
        True, "Run BetaNet, the internet transport (libp2p; never plaintext: Noise on TCP, TLS 1.3 on QUIC)."
    )
    listen: tuple[str, ...] = setting(
        ("/ip4/0.0.0.0/udp/4001/quic-v1", "/ip4/0.0.0.0/tcp/4001"),
        "Multiaddrs to listen on: QUIC (/udp/N/quic-v1, TLS 1.3 with the libp2p peer-ID certificate) and TCP "
        "(/tcp/N, Noise) on the same port by default; a QUIC dial falls back to the TCP address with the same "
        "port (port 0 picks a free port).",
    )
    bootstrap: tuple[str, ...] = setting(
        (), "Peers to dial at start and keep connected, as /ip4/.../udp/N/quic-v1/p2p/ID or /ip4/.../tcp/N/p2p/ID."
    )
    mdns: bool = setting(
        True, "Find and dial other nodes on the local network with mDNS (multicast on every interface)."
    )
    dht: bool = setting(
        True,
        "Run libp2p's Kademlia DHT (peer routing): `village connect /p2p/<peer id>` looks the peer's addresses up "
        "through connected peers.",
    )
    dht_mode: str = setting(
        "auto",
        "Kademlia role. client (for phones and Pis): look peers up through DHT servers but serve no DHT; nobody "
        "can ask this node whom it is connected to (a server answers FIND_NODE with the peers of its routing "
        "table, which holds every connected peer that serves the DHT, with their addresses). server (anchors, "
        "well-connected nodes others bootstrap to): answer lookups, so peers that know only this node find each "
        "other by peer ID; it tells any connected peer which DHT-serving peers it is connected to. auto (the "
        "default): server on a relay (relay = hop: the meeting point others bootstrap to, whose relayed clients "
        "are found by peer ID through it), client otherwise. A mesh needs at least one server its nodes share (a "
        "bootstrap anchor): among clients only, `village connect /p2p/<id>` finds nobody.",
        choices=("auto", "client", "server"),
    )
    loopback_is_local: bool = setting(
        True,
        "Whether a peer that connects over loopback is this machine's own (shown loopback addresses, and may name "
        "them). Set false where a local forwarder (ssh -R, socat, tor, a container proxy) brings strangers in "
        "over loopback: such peers are then treated as on the LAN.",
    )
    announce_addrs: tuple[str, ...] = setting(
        (),
        "Extra addresses to tell every peer (a port forward, a public DNS name), as /ip4|ip6|dns4|dns6/.../tcp/N "
        "or .../udp/N/quic-v1 without /p2p. Interface addresses are told by scope: loopback ones only to peers "
        "on this machine, private and link-local ones only to peers that reached this node over such an "
        "address, public ones to everyone.",
    )
    auto_connect: str = setting(
        "peerstore",
        "py-libp2p's auto-connector. peerstore (py-libp2p's behaviour): while the node has fewer than 100 "
        "connections it dials peers of its peerstore (up to 200, 32 every 10 s), which redials a lost mDNS or "
        "`village connect` peer; those that DHT answers and identify named are dialled too (each learns this "
        "node's IP address and peer ID, at addresses the answering peer chose), and the DHT's own upkeep (at start "
        "and every 10 min) looks up random keys through them. off (privacy): the auto-connector never runs and "
        "the DHT's upkeep lookups are skipped; the node dials only its bootstrap peers (redialled when lost), the "
        "peers mDNS finds (once, when found) and the peers it is asked to reach (and those a lookup it is asked "
        "for queries). Cost: a dropped link to any peer other than a bootstrap peer is never redialled (until a "
        "restart or a new `village connect`), and the DHT routing table takes only peers the node is connected "
        "to (never one on a lookup answer's word).",
        choices=("off", "peerstore"),
    )
    relay: str = setting(
        "client",
        "Circuit relay v2 (libp2p's). off: none. client: accept connections relayed to us, dial /p2p-circuit "
        "addresses, and reserve a slot on each bootstrap peer that is a relay, advertising "
        "/p2p/<relay>/p2p-circuit/p2p/<us> addresses (for nodes behind NAT). hop: accept and dial relayed "
        "connections and relay for others (anchors); reserves nothing. Relayed links are Noise end to end.",
        choices=("off", "client", "hop"),
    )
    relay_max_reservations: int = setting(
        32, "With relay = hop: most peers holding a relay slot on this node at once.", min=1, max=100_000
    )
    relay_max_circuits_per_peer: int = setting(
        8,
        "With relay = hop: most relayed connections to one reserved peer at once (all circuits: at most "
        "relay_max_reservations times this).",
        min=1,
        max=10_000,
    )
    max_frame_bytes: int = setting(
        1_179_840,
        "Largest mesh frame accepted on a BetaNet stream (a full-size BitChat packet plus headers).",
        min=1024,
        max=64 * 1_048_576,
    )
    reconnect_initial_s: float = setting(
        1.0, "First delay before redialling a lost bootstrap peer; doubles per failure.", min=0.1, max=3600
    )
    reconnect_max_s: float = setting(60.0, "Longest delay between redials of a bootstrap peer.", min=1, max=86_400)
    dial_timeout_s: float = setting(10.0, "Seconds a dial (connect + Noise + stream) may take.", min=0.5, max=600)
    stall_timeout_s: float = setting(
        120.0,
        "A link that delivers no bytes for this long, or whose peer does not accept a frame for this long, is "
        "closed as stalled (peers announce every ~15 s).",
        min=1,
        max=86_400,
    )
    max_mesh_streams_per_connection: int = setting(
        4,
        "Most /aivillage/mesh/1.0.0 streams (links) one libp2p connection may carry at once; a peer opening more "
        "has them reset and counted (status: mesh_streams_refused). One suffices; a few allow redial races.",
        min=1,
        max=1024,
    )
    quic_stream_window_bytes: int = setting(
        1_048_576,
        "QUIC flow-control window per stream: the most bytes a peer may send on a stream beyond what this node "
        "has read. Credit is granted as the node reads, so a fast sender is slowed down, never reset.",
        min=65_536,
        max=64 * 1_048_576,
    )
    quic_max_streams_per_connection: int = setting(
        16,
        "Most QUIC streams a peer may have open at once on one connection (it may open another as one ends; "
        "a peer that opens more breaks QUIC's stream limit and is closed). With the connection's window, this "
        "bounds what one connection can make the node hold.",
        min=4,
        max=1024,
    )
    quic_max_handshakes: int = setting(
        256,
        "Most QUIC connections whose handshake is not complete (peer address not yet validated) per listen "
        "socket; from half of this on, a new address gets a stateless Retry (it must prove its address first), "
        "and beyond it Initials are dropped (and counted) until some complete or time out.",
        min=1,
        max=100_000,
    )
    quic_max_handshakes_per_ip: int = setting(
        16,
        "Most QUIC handshakes from unvalidated addresses (no Retry token yet) in one IPv4 address or IPv6 /64; "
        "beyond it the address gets a stateless Retry, so a spoofer cannot lock a real client of it out.",
        min=1,
        max=100_000,
    )
    quic_max_connections: int = setting(
        1024,
        "Most QUIC connections (established or in handshake) per listen socket.",
        min=1,
        max=1_000_000,
    )
    quic_max_connections_per_ip: int = setting(
        16,
        "Most QUIC connections from one IPv4 address or one IPv6 /64 whose address is validated (established, "
        "or in handshake after a Retry): one source cannot take the whole table. IPv4-mapped, 6to4 and NAT64 "
        "addresses count as their IPv4 address.",
        min=1,
        max=1_000_000,
    )
    quic_max_connections_per_ipv6_48: int = setting(
        64,
        "Most validated QUIC connections from one IPv6 /48 (a site or tunnel-broker allocation holds 65,536 /64s).",
        min=1,
        max=1_000_000,
    )

    @property
    def dht_server(self) -> bool:
        """Whether this node serves the DHT: ``dht_mode``, with auto resolved by ``relay``."""
        return self.dht_mode == "server" or (self.dht_mode == "auto" and self.relay == "hop")

    def __post_init__(self) -> None:
        import multiaddr  # only when addresses are configured: client commands stay fast

        for addr in self.listen:
            _multiaddr(multiaddr, "betanet.listen", addr, f"not a valid multiaddr list {list(self.listen)}")
        for addr in self.announce_addrs:
            _announce_multiaddr(multiaddr, addr)
        for addr in self.bootstrap:
            _p2p_multiaddr(multiaddr, "betanet.bootstrap", addr)
            if "/p2p-circuit" in addr and self.relay == "off":
                raise ConfigError(f"betanet.bootstrap: {addr!r} is a relayed address but betanet.relay is off")


def _multiaddr(multiaddr: Any, key: str, addr: str, what: str) -> Any:
    try:
        return multiaddr.Multiaddr(addr)
    except Exception as exc:  # noqa: BLE001 - multiaddr raises several error types (ValueError, its own, binascii) for bad input
        raise ConfigError(f"{key}: {what}: {exc}") from None


def _announce_multiaddr(multiaddr: Any, addr: str) -> None:
    """``addr`` is a dialable address of ours: an IP (not unspecified or multicast) or DNS name, then TCP or
    UDP/QUIC v1, nothing after; a ConfigError naming ``betanet.announce_addrs`` if not."""
    import ipaddress

    key = "betanet.announce_addrs"
    parsed = _multiaddr(multiaddr, key, addr, f"{addr!r} is not a multiaddr")
    names = [p.name for p in parsed.protocols()]
    shape = names[1:] in (["tcp"], ["udp", "quic-v1"])
    if not names or names[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or not shape:
        raise ConfigError(
            f"{key}: {addr!r} is not /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port> or .../udp/<port>/quic-v1 (no /p2p)"
        )
    if names[0] in ("ip4", "ip6"):
        ip = ipaddress.ip_address(parsed.value_for_protocol(names[0]))
        if ip.is_unspecified or ip.is_multicast:
            raise ConfigError(f"{key}: {addr!r} is not an address a peer can dial")
    if int(parsed.value_for_protocol(names[1])) == 0:
        raise ConfigError(f"{key}: {addr!r} has port 0")


def _p2p_multiaddr(multiaddr: Any, key: str, addr: str) -> None:
    """``addr`` parses and ends in ``/p2p/<peer id>`` (what a dial needs); a ConfigError naming ``key`` if not."""
    what = f"{addr!r} is not a multiaddr ending in /p2p/<peer id>"
    parsed = _multiaddr(multiaddr, key, addr, what)
    last = parsed.protocols()[-1].name if parsed.protocols() else ""
    if last != "p2p":
        raise ConfigError(f"{key}: {what} (it ends in /{last})")


def check_p2p_addresses(key: str, addrs: tuple[str, ...]) -> None:
    """Each of ``addrs`` is a multiaddr ending in /p2p/<peer id> (e.g. ``mailbox.anchors``)."""
    if addrs:
        import multiaddr

        for addr in addrs:
            _p2p_multiaddr(multiaddr, key, addr)
