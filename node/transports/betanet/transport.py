"""BetaNet: mesh frames between nodes over the internet, on a py-libp2p host.

* Security is **never plaintext, identity always authenticated**. Over TCP the host has exactly one security
  transport, Noise, so a peer offering plaintext (or anything else) fails negotiation and is never connected.
  Over QUIC (``/udp/N/quic-v1``) libp2p has no Noise: the spec's TLS 1.3 with the peer-ID certificate
  extension authenticates the peer (:mod:`.quic`, :mod:`.quic_transport`, the team's reading of "Noise always").
* Transports: QUIC, through our event-driven QUIC transport (:mod:`.quic_transport`) in place of py-libp2p's,
  and TCP + Noise + yamux. A QUIC address is dialled first and falls back to the same node's TCP address.
* Discovery: mDNS on the LAN, bootstrap peers (redialled with backoff), and libp2p's Kademlia DHT
  (:mod:`.dht`): ``dial("/p2p/<peer id>")`` looks the peer's addresses up through connected peers.
* NAT: libp2p's circuit relay v2 (:mod:`.relay`). A ``client`` node reserves a slot on its bootstrap relays
  and advertises ``/p2p/<relay>/p2p-circuit/p2p/<us>``; relayed connections are Noise-secured end to end.
* Identity: the libp2p key pair is the node's Ed25519 signing key, so the libp2p peer ID is derived from the
  same key that signs BitChat announces. Each link carries the remote's Noise-authenticated Ed25519 public
  key (:attr:`BetanetLink.authenticated_signing_key`); the mesh refuses a direct announce over that link
  signed with any other key.
* Framing: one stream per link on ``/aivillage/mesh/1.0.0``; each frame is ``length u32 BE ‖ bytes``, at most
  ``betanet.max_frame_bytes``. A larger length ends the link (the peer is broken or hostile) and is counted.
  One connection carries at most ``betanet.max_mesh_streams_per_connection`` mesh streams; more are reset
  and counted. A dial whose peer refuses the mesh protocol says so and closes the connection it made.
  Every bound: ``docs/bounds-betanet.md``.
* One reader task per stream pumps frames into a bounded channel, so ``receive`` is cancel-safe and a slow
  consumer applies back-pressure through yamux's flow control.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import math
import socket
import struct
from collections.abc import Awaitable, Callable

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.host.basic_host import BasicHost
from libp2p.network.config import RetryConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.rcmgr import new_resource_manager
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.manager import TransportManager
from libp2p.transport.upgrader import TransportUpgrader

from node.errors import StartupError, TransportError
from node.identity import Identity
from node.transports.base import LinkSink, Transport
from node.transports.betanet.counters import BetanetCounters
from node.transports.betanet.dht import PeerRouting
from node.transports.betanet.link import BetanetLink
from node.transports.betanet.quic import QUIC_ATTEMPT_S, close_quic, dial_order, host_transports, is_quic
from node.transports.betanet.quic_admission import Limits
from node.transports.betanet.quic_transport import QuicTransport
from node.transports.betanet.relay import Relay, is_circuit, without_peer_suffix
from node.transports.betanet.rsa_guard import refuse_costly_rsa_keys
from node.transports.betanet.scope import (
    LAN,
    MAX_DHT_ADDRS_PER_PEER,
    GuardedPeerStore,
    peer_addrs,
    scope_host,
    visible,
)
from node.transports.betanet.scope import dialable as scope_dialable
from node.transports.betanet.settings import BetanetSection

log = logging.getLogger("village.betanet")

MESH_PROTOCOL = TProtocol("/aivillage/mesh/1.0.0")
SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address
MAX_DISCOVERY_DIALS = 32  # concurrent dials to peers found by mDNS
PEERSTORE_ADDR_TTL_S = 600  # how long libp2p keeps a dialled peer's address
MAX_DIAL_CANDIDATES = 8  # addresses of one peer found through the DHT that are tried (direct, then circuits)
DIRECT_ATTEMPT_S = 2.0  # one direct address found through the DHT gets this long before the next is tried


class DialError(TransportError):
    """A BetaNet dial failed (unreachable, refused, wrong peer, or no Noise)."""


def local_ipv4_addresses() -> list[str]:
    """This host's IPv4 interface addresses (loopback last), read with SIOCGIFADDR; Linux and Android."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24])
            except OSError:
                continue  # no IPv4 address on this interface
            found.append(addr)
    return sorted(set(found), key=lambda a: (a.startswith("127."), a))


def expand_unspecified(addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """Replace a wildcard listen address (/ip4/0.0.0.0/...) by one address per local interface, so what we
    advertise (mDNS, `village status`) can be dialled."""
    out: list[multiaddr.Multiaddr] = []
    for addr in addrs:
        text = str(addr)
        if text.startswith("/ip4/0.0.0.0/"):
            ips = [ip for ip in local_ipv4_addresses() if not ip.startswith("127.")] or ["127.0.0.1"]
            out.extend(multiaddr.Multiaddr(text.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/", 1)) for ip in ips)
        else:
            out.append(addr)
    return out


_UNDERLYING = ("secured_conn", "conn", "read_writer", "read_write_closer")  # muxer → Noise → msgio → raw


def _never_auto_connect(swarm: Swarm) -> None:
    """``betanet.auto_connect = "off"``: py-libp2p's auto-connector (network/auto_connector.py, 0.8) is never
    started on this swarm. It would dial up to 200 peers of the peerstore, 32 every 10 s, those that DHT answers
    (any connected peer's FIND_NODE reply) and identify named included: each would learn our IP address and peer ID,
    and a peer answering DHT queries would choose which addresses we dial (private ones too on a node without a
    public address). Its ``start`` becomes a no-op on this instance (the swarm calls it when it runs; libp2p is
    pinned below 0.9): never started, its periodic task returns at once and ``maybe_connect``, which the swarm also
    schedules on every disconnect, does nothing. ``record_disconnect`` (the swarm calls it on every closed
    connection, inbound ones too) becomes a no-op as well: it fills a per-peer table that only a running
    auto-connector's cycle prunes, so a remote peer connecting under fresh peer IDs would grow it forever."""

    async def start() -> None:
        return None

    def record_disconnect(peer_id: ID) -> None:
        return None

    setattr(swarm.auto_connector, "start", start)  # noqa: B010 - an instance override, not a typed attribute
    setattr(swarm.auto_connector, "record_disconnect", record_disconnect)  # noqa: B010 - likewise


def _relay_under(conn: object) -> ID | None:
    """The relay carrying a relayed connection: the peer on the far side of the relay stream under the
    connection's Noise session (muxer → secure session → Noise framing → raw connection → relay stream)."""
    for _ in range(8):  # bounded walk down the wrappers
        stream = getattr(conn, "stream", None)
        peer = getattr(getattr(stream, "muxed_conn", None), "peer_id", None)
        if isinstance(peer, ID):
            return peer
        conn = next((getattr(conn, a) for a in _UNDERLYING if getattr(conn, a, None) is not None), None)
        if conn is None:
            return None
    return None


def remote_address_of(stream: INetStream, me: ID) -> str:
    """The multiaddr a stream's connection runs over, ending in ``/p2p/<peer>``: the peer's IP and port, or
    ``/p2p/<relay>/p2p-circuit/p2p/<peer>`` for a relayed connection."""
    muxed = stream.muxed_conn
    peer = muxed.peer_id
    try:
        addrs = muxed.get_transport_addresses()
    except Exception:  # noqa: BLE001 - a muxer without transport addresses: fall back to the peer ID alone
        addrs = []
    for addr in addrs:
        text = str(without_peer_suffix(addr))
        if is_circuit(text):
            relay: ID | str | None = text.split("/p2p-circuit")[0].rpartition("/p2p/")[2]
            if relay == str(me):
                # py-libp2p 0.8 names the *destination* as the relay on inbound relayed connections
                # (relay/circuit_v2/protocol.py line 470: relay_peer_id = self.host.get_id()); find the real one.
                relay = _relay_under(muxed)
            text = f"/p2p/{relay}/p2p-circuit" if relay else "/p2p-circuit"  # the relay's IP is not the peer's
        if text:
            return f"{text}/p2p/{peer}"
    return f"/p2p/{peer}"


def signing_key_of(peer_id: ID) -> bytes | None:
    """The raw Ed25519 public key inside an identity-multihash peer ID (None for other key types)."""
    try:
        key = peer_id.extract_public_key()
    except Exception:  # noqa: BLE001 - libp2p raises assorted errors for non-identity multihashes
        return None
    if key is None:
        return None
    raw: bytes = key.to_bytes()
    return raw if len(raw) == 32 else None


class BetanetTransport(Transport):
    def __init__(self, identity: Identity, settings: BetanetSection) -> None:
        self._identity = identity
        self.settings = settings
        self.counters = BetanetCounters()
        self._key_pair = create_new_key_pair(bytes(identity.signing_key))
        self._key_pair_id = ID.from_pubkey(self._key_pair.public_key)
        self.host: IHost | None = None
        self.routing: PeerRouting | None = None  # the DHT, while running with betanet.dht
        self.relay: Relay | None = None  # circuit relay v2, while running with betanet.relay != "off"
        self._sink: LinkSink | None = None
        self._nursery: trio.Nursery | None = None
        self._ids = itertools.count(1)
        self._links: dict[str, BetanetLink] = {}
        self._changed = trio.Event()
        self._discovered_dialling: set[str] = set()  # peer IDs found by mDNS that we are dialling now
        self._handlers: dict[TProtocol, StreamHandler] = {}  # extra protocols (the mailbox)
        self._quic: QuicTransport | None = None  # the host's QUIC transport, closed by us at shutdown
        self._all_addrs: Callable[[], list[multiaddr.Multiaddr]] | None = None  # every address, all scopes

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _count_dial_failure(self) -> None:
        self.counters.dial_failures += 1
        self._notify()

    async def wait_counters(self, predicate: Callable[[BetanetCounters], bool]) -> None:
        """Wait until ``predicate(self.counters)`` holds (re-checked whenever a link opens, a dial fails, a
        peer is identified, a lookup ends, or a relay slot is reserved or lost)."""
        while not predicate(self.counters):
            await self._changed.wait()

    @property
    def name(self) -> str:
        return "betanet"

    @property
    def peer_id(self) -> str:
        return str(self._key_pair_id)

    def listen_addresses(self) -> list[str]:
        """Where peers can reach us, each ending in ``/p2p/<our id>``: interface addresses (QUIC first), the
        announce addresses, then a ``/p2p-circuit`` address through each relay holding a slot for us. All scopes:
        each peer is told only those of its scope (:mod:`.scope`)."""
        if self.host is None or self._all_addrs is None:
            return []
        return sorted((str(a) for a in self._all_addrs()), key=lambda a: not is_quic(a))  # QUIC first

    def _make_host(self, listen: list[multiaddr.Multiaddr]) -> IHost:
        # Exactly one security transport: Noise. libp2p's default set also offers plaintext.
        noise = NoiseTransport(self._key_pair, noise_privkey=create_x25519_key_pair().private_key)
        limits = Limits(
            stream_window_bytes=self.settings.quic_stream_window_bytes,
            max_streams_per_connection=self.settings.quic_max_streams_per_connection,
            max_handshakes=self.settings.quic_max_handshakes,
            max_handshakes_per_ip=self.settings.quic_max_handshakes_per_ip,
            max_connections=self.settings.quic_max_connections,
            max_connections_per_ip=self.settings.quic_max_connections_per_ip,
            max_connections_per_ipv6_48=self.settings.quic_max_connections_per_ipv6_48,
        )
        transports, self._quic = host_transports(self._key_pair, limits, self.counters, self._notify)
        # What libp2p.new_host(key_pair, sec_opt, muxer_opt, transports, ...) builds, built from the modules that
        # define it (new_host lives in libp2p/__init__.py, whose import loads every transport: node/libp2p_slim.py).
        # Muxers: yamux first, mplex as a fallback (libp2p.create_yamux_muxer_option). One dial attempt per
        # address: bootstrap peers are redialled with our own backoff and addresses found through the DHT are
        # raced; libp2p's default 3 retries per unreachable address only delayed the fallback to a relay.
        resources = new_resource_manager()  # new_host's default connection/stream limits
        peer_id = ID.from_pubkey(self._key_pair.public_key)
        peerstore = GuardedPeerStore(self._count_refused)
        peerstore.add_key_pair(peer_id, self._key_pair)
        upgrader = TransportUpgrader(
            secure_transports_by_protocol={NOISE_PROTOCOL_ID: noise},
            muxer_transports_by_protocol={TProtocol(YAMUX_PROTOCOL_ID): Yamux, TProtocol(MPLEX_PROTOCOL_ID): Mplex},
        )
        swarm = Swarm(
            peer_id,
            peerstore,
            upgrader,
            transports=transports,
            retry_config=RetryConfig(max_retries=0),
            transport_manager=TransportManager(port_demuxers={}),
        )
        swarm.set_resource_manager(resources)
        if self.settings.auto_connect == "off":
            _never_auto_connect(swarm)
        announced = [multiaddr.Multiaddr(a) for a in self.settings.announce_addrs]

        def addrs_factory(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
            found = expand_unspecified(candidates)  # real interface addresses, never 0.0.0.0
            return [*found, *(a for a in announced if a not in found)]

        host = BasicHost(
            network=swarm,
            enable_mDNS=self.settings.mdns,
            resource_manager=resources,
            addrs_factory=addrs_factory,
        )
        return host

    def _count_refused(self, n: int) -> None:
        self.counters.peer_addrs_refused += n

    def _count_push_timeout(self) -> None:
        self.counters.identify_push_timeouts += 1
        self._notify()

    def _count_push_close(self) -> None:
        self.counters.identify_push_closes += 1
        self._notify()

    @staticmethod
    def _advertise_real_addresses(host: IHost) -> None:
        """py-libp2p 0.8's mDNS broadcaster puts raw transport addresses in its TXT records, so a wildcard
        listener advertises /ip4/0.0.0.0/... which nobody can dial. It has no option for this; override its
        resolver on this host's instance only (libp2p is pinned below 0.9). Its audience is the LAN: loopback
        addresses are not multicast (:mod:`.scope`)."""
        broadcaster = getattr(getattr(host, "mDNS", None), "broadcaster", None)
        if broadcaster is None or not hasattr(broadcaster, "_resolve_host_addrs"):
            return  # mDNS off, or a libp2p whose internals changed: the default behaviour stays

        def resolve() -> list[str]:
            return [str(a) for a in visible(expand_unspecified(host.get_transport_addrs()), LAN, frozenset())]

        broadcaster._resolve_host_addrs = resolve

    def _advertise(self, host: IHost, relay: Relay | None) -> None:
        """What the host advertises (identify, signed peer records, the DHT): every address, relay circuit ones
        included, cut to each peer's scope (:func:`.scope.scope_host`). Circuit addresses cannot go through
        ``addrs_factory``: py-libp2p 0.8's ``BasicHost.get_addrs`` (host/basic_host.py, lines 534-538) strips the
        *first* ``/p2p/`` component of each address, which in a circuit address is the relay's, leaving the
        relay's IP and port under our peer ID; so they are added after it."""
        plain = host.get_addrs

        def all_addrs() -> list[multiaddr.Multiaddr]:
            return [*plain(), *(relay.circuit_addrs() if relay is not None else ())]

        self._all_addrs = all_addrs
        announced = frozenset(str(multiaddr.Multiaddr(a)) for a in self.settings.announce_addrs)
        scope_host(
            host,
            all_addrs,
            announced,
            loopback_is_local=self.settings.loopback_is_local,
            push_timeout_s=self.settings.dial_timeout_s,
            on_push_timeout=self._count_push_timeout,
            on_push_cut=self._count_push_close,
        )

    async def run(
        self,
        link_sink: LinkSink,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            listen = [multiaddr.Multiaddr(a) for a in self.settings.listen]
        except Exception as exc:  # noqa: BLE001 - multiaddr raises several error types for bad input
            raise StartupError(
                f"betanet.listen: not a valid multiaddr list {list(self.settings.listen)}: {exc}"
            ) from None
        for addr in self.settings.bootstrap:
            try:
                info_from_p2p_addr(multiaddr.Multiaddr(addr))
            except Exception as exc:  # noqa: BLE001 - multiaddr/libp2p raise several error types for bad input
                raise StartupError(
                    f"betanet.bootstrap: {addr!r} is not a multiaddr ending in /p2p/<peer id> ({exc})"
                ) from None
            if is_circuit(addr) and self.settings.relay == "off":
                raise StartupError(f"betanet.bootstrap: {addr!r} is a relayed address but betanet.relay is off")
        refuse_costly_rsa_keys()  # process-wide, once: no peer's RSA key with a costly exponent is verified
        host = self._make_host(listen)
        self._advertise_real_addresses(host)
        routing = (
            PeerRouting(
                host,
                self.counters,
                self._notify,
                self.settings.dial_timeout_s,
                refresh=self.settings.auto_connect != "off",
                server=self.settings.dht_server,
            )
            if self.settings.dht
            else None
        )
        relay = Relay(host, self.settings, self.counters, self._notify) if self.settings.relay != "off" else None
        self._advertise(host, relay)
        self.host = host
        self._sink = link_sink
        host.set_stream_handler(MESH_PROTOCOL, self._on_inbound)
        for protocol, handler in self._handlers.items():
            host.set_stream_handler(protocol, _with_remote_key(handler))
        token = trio.lowlevel.current_trio_token()

        def discovered(info: PeerInfo) -> None:  # called on zeroconf's thread
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._on_discovered, info)

        if self.settings.mdns:
            peerDiscovery.register_peer_discovered_handler(discovered)
        try:
            async with host.run(listen_addrs=listen), trio.open_nursery() as nursery:
                # libp2p logs a failed bind and carries on listening on nothing; a daemon must not.
                bound = host.get_transport_addrs()
                if len(bound) < len(listen):
                    raise StartupError(
                        f"betanet could not listen on {', '.join(self.settings.listen)} (listening on "
                        f"{', '.join(map(str, bound)) or 'nothing'}): the address is in use or not available on "
                        "this machine; change betanet.listen (port 0 picks a free port)"
                    )
                if routing is not None:
                    await nursery.start(routing.run)
                    self.routing = routing
                if relay is not None:
                    await nursery.start(relay.run)
                    self.relay = relay
                self._nursery = nursery
                log.info("betanet listening on %s", ", ".join(self.listen_addresses()) or "nothing")
                for addr in self.settings.bootstrap:
                    nursery.start_soon(self._keep_dialled, addr)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    # Close links, then our QUIC connections (each sends CONNECTION_CLOSE to its peer), while the
                    # host still runs; the swarm would only cancel them.
                    with trio.CancelScope(shield=True):
                        for link in list(self._links.values()):
                            await link.aclose()
                    if self._quic is not None:
                        await close_quic(self._quic)
        except OSError as exc:
            raise StartupError(
                f"betanet cannot listen on {', '.join(self.settings.listen)}: {exc.strerror or exc}"
                "; change betanet.listen (port 0 picks a free port)"
            ) from exc
        finally:
            if self.settings.mdns:
                peerDiscovery.unregister_peer_discovered_handler(discovered)
            self.host = None
            self.routing = None
            self.relay = None
            self._nursery = None
            self._all_addrs = None
            with trio.CancelScope(shield=True):
                for link in list(self._links.values()):
                    await link.aclose()

    def _new_link(self, stream: INetStream, direction: str) -> BetanetLink:
        remote_id = stream.muxed_conn.peer_id
        n = next(self._ids)
        link = BetanetLink(
            stream,
            f"betanet:{n}{direction}",
            remote_address_of(stream, self._key_pair_id),
            self.settings.max_frame_bytes,
            signing_key_of(remote_id),
            self.counters,
            self.settings.stall_timeout_s,
        )
        self._links[link.link_id] = link
        self.counters.links_opened += 1
        self._notify()
        return link

    async def _serve(self, link: BetanetLink) -> None:
        if self._sink is None:
            await link.aclose()
            return
        try:
            self._sink.send_nowait(link)
            await link.pump()
        finally:
            self._links.pop(link.link_id, None)

    async def _on_inbound(self, stream: INetStream) -> None:
        # The handler task is the stream's reader for as long as the link lives.
        conn = stream.muxed_conn
        limit = self.settings.max_mesh_streams_per_connection
        if sum(1 for link in self._links.values() if link.muxed_conn is conn) >= limit:
            self.counters.mesh_streams_refused += 1
            if self.counters.mesh_streams_refused == 1 or self.counters.mesh_streams_refused % 1000 == 0:
                log.warning(
                    "peer %s opened more than %d mesh streams on one connection "
                    "(betanet.max_mesh_streams_per_connection); resetting the extra ones (%d so far)",
                    conn.peer_id,
                    limit,
                    self.counters.mesh_streams_refused,
                )
            self._notify()
            with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(Exception):
                await stream.reset()  # best effort: the muxer raises assorted errors for half-closed streams
            return
        await self._serve(self._new_link(stream, "in"))

    def add_stream_handler(self, protocol: TProtocol, handler: StreamHandler) -> None:
        """Serve another protocol on this host: ``handler(stream, remote Ed25519 key)`` runs once per inbound
        stream (the key is the one the connection's Noise handshake authenticated, None if not Ed25519)."""
        self._handlers[protocol] = handler
        if self.host is not None:
            self.host.set_stream_handler(protocol, _with_remote_key(handler))

    async def open_stream(self, addr: str, protocol: TProtocol) -> INetStream:
        """A new stream on ``protocol`` to the peer at ``addr`` (a multiaddr ending in /p2p/<id>; connected first
        if need be, as :meth:`dial` does), within ``betanet.dial_timeout_s``. The caller closes it."""
        host = self.host
        if host is None:
            raise DialError("betanet is not running")
        try:
            maddr = multiaddr.Multiaddr(addr)
            info = info_from_p2p_addr(maddr)
        except Exception as exc:  # noqa: BLE001 - multiaddr/libp2p raise several error types for bad input
            raise DialError(f"{addr!r} is not a multiaddr ending in /p2p/<peer id>: {exc}") from None
        try:
            with trio.fail_after(self.settings.dial_timeout_s):
                if not host.get_network().get_connections(info.peer_id):
                    await self._connect(host, maddr, info)
                return await host.new_stream(info.peer_id, [protocol])
        except trio.TooSlowError:
            raise DialError(
                f"opening {protocol} to {addr} timed out after {self.settings.dial_timeout_s:g} s"
            ) from None
        except DialError:
            raise
        except Exception as exc:  # libp2p surfaces many error types for unreachable/refusing peers
            raise DialError(f"opening {protocol} to {addr} failed: {exc or type(exc).__name__}") from exc

    async def dial(self, addr: str) -> BetanetLink:
        """Connect to ``addr`` and open the mesh stream; the link also goes to the node. ``addr`` is one of

        * ``/ip4/.../tcp/N/p2p/<id>``: dialled directly;
        * ``.../p2p/<relay>/p2p-circuit/p2p/<id>``: through that relay (``betanet.relay`` not off);
        * ``/p2p/<id>``: looked up through the DHT (``betanet.dht``), then the addresses found are dialled,
          direct ones first, then circuits, including one through each connected relay."""
        return await self._dial(addr, reserve=False)

    async def _dial(self, addr: str, *, reserve: bool) -> BetanetLink:
        host, nursery = self.host, self._nursery
        if host is None or nursery is None:
            raise DialError("betanet is not running")
        try:
            maddr = multiaddr.Multiaddr(addr)
            info = info_from_p2p_addr(maddr)
        except Exception as exc:  # noqa: BLE001 - multiaddr/libp2p raise several error types for bad input
            raise DialError(f"{addr!r} is not a multiaddr ending in /p2p/<peer id>: {exc}") from None
        if info.peer_id == host.get_id():
            raise DialError(f"{addr} is this node itself")
        connected = False  # whether this dial made the connection (then a failure closes it again)
        try:
            with trio.fail_after(self.settings.dial_timeout_s):
                if not host.get_network().get_connections(info.peer_id):
                    await self._connect(host, maddr, info)
                    connected = True
            if reserve and self.relay is not None:
                await self.relay.reserve(info.peer_id)  # bounded by betanet.dial_timeout_s itself
            with trio.fail_after(self.settings.dial_timeout_s):
                stream = await host.new_stream(info.peer_id, [MESH_PROTOCOL])
        except trio.TooSlowError:
            await self._dial_failed(host, info.peer_id, connected)
            raise DialError(f"dialling {addr} timed out after {self.settings.dial_timeout_s:g} s") from None
        except DialError:
            await self._dial_failed(host, info.peer_id, connected)
            raise
        except Exception as exc:  # libp2p surfaces many error types for unreachable/refusing peers
            await self._dial_failed(host, info.peer_id, connected)
            refused = _refusal(exc)
            if refused is not None:
                raise DialError(f"{addr} refused {MESH_PROTOCOL}: {refused} (not an AIVillage node?)") from exc
            raise DialError(f"dialling {addr} failed: {_with_causes(exc)}") from exc
        link = self._new_link(stream, "out")
        nursery.start_soon(self._serve, link)
        return link

    async def _dial_failed(self, host: IHost, peer_id: ID, connected: bool) -> None:
        """Count a failed dial; a connection this dial made that carries no link of ours is closed again (a peer
        without the mesh protocol would otherwise stay connected with nothing on it)."""
        self._count_dial_failure()
        if not connected or any(link.peer == peer_id for link in self._links.values()):
            return
        with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(Exception):
            await host.disconnect(peer_id)  # best effort: libp2p raises assorted errors for half-closed peers

    async def _connect(self, host: IHost, maddr: multiaddr.Multiaddr, info: PeerInfo) -> None:
        if is_circuit(maddr):
            if self.relay is None:
                raise DialError(f"{maddr} is a relayed address but betanet.relay is off")
            await self.relay.dial(maddr)
        elif not str(info.addrs[0]):
            await self._connect_by_id(host, info.peer_id)
        else:
            await self._connect_direct(host, info)

    async def _connect_direct(self, host: IHost, info: PeerInfo) -> None:
        """Dial the given address; a QUIC one gets :data:`QUIC_ATTEMPT_S`, then its TCP twin and the peer's other
        known addresses are tried (:func:`.quic.dial_order`). Each address is dialled directly: py-libp2p's
        dial_peer (host.connect) waits a fixed 250 ms "happy eyeballs" delay even after its first dial
        succeeded (swarm.py _HAPPY_EYEBALLS_DELAY)."""
        peerstore = host.get_peerstore()
        known = peer_addrs(peerstore, info.peer_id)  # [] when unknown or expired (addrs raised for an expired one)
        candidates = dial_order(info.addrs[0], list(known))
        errors: list[str] = []
        for n, addr in enumerate(candidates):
            last = n == len(candidates) - 1
            peerstore.add_addrs(info.peer_id, [addr], PEERSTORE_ADDR_TTL_S)
            with trio.move_on_after(QUIC_ATTEMPT_S if is_quic(addr) and not last else math.inf) as scope:
                try:
                    await host.get_network().dial_addr(addr, info.peer_id)
                    if n:
                        self.counters.dial_fallbacks += 1
                        log.info("dialled %s/p2p/%s after %s", addr, info.peer_id, "; ".join(errors))
                    return
                except Exception as exc:  # libp2p surfaces many error types for unreachable/refusing peers
                    if last:
                        raise
                    errors.append(f"{addr}: {_with_causes(exc)}")
            if scope.cancelled_caught:
                errors.append(f"{addr}: no answer within {QUIC_ATTEMPT_S:g} s")

    async def _connect_by_id(self, host: IHost, peer_id: ID) -> None:
        """Find ``peer_id`` through the DHT and dial what was found: direct addresses, then circuits (one per
        relay), including one through each connected relay."""
        if self.routing is None:
            raise DialError(
                f"/p2p/{peer_id}: betanet.dht is off, so a peer ID alone cannot be looked up; give its full multiaddr"
            )
        found = await self.routing.find(peer_id)
        if host.get_network().get_connections(peer_id):
            return  # the lookup itself reached the peer (Kademlia queries the closest peers, the target too)
        relay = self.relay
        direct = sorted((str(without_peer_suffix(a)) for a in found if not is_circuit(a)), key=lambda a: not is_quic(a))
        circuits = [f"{without_peer_suffix(a)}/p2p/{peer_id}" for a in found if is_circuit(a)]
        if relay is not None:
            circuits += [f"/p2p/{r}/p2p-circuit/p2p/{peer_id}" for r in relay.connected_relays() if r != peer_id]
        errors: list[str] = []

        async def direct_dial(addr: str) -> None:
            ma = multiaddr.Multiaddr(addr)
            host.get_peerstore().add_addrs(peer_id, [ma], PEERSTORE_ADDR_TTL_S)
            await host.get_network().dial_addr(ma, peer_id)

        if await _first_that_connects(direct, direct_dial, errors, DIRECT_ATTEMPT_S):
            return
        if relay is not None:

            async def relayed_dial(addr: str) -> None:
                await relay.dial(multiaddr.Multiaddr(addr))

            if await _first_that_connects(_one_per_relay(circuits), relayed_dial, errors, None):
                return
        if not found and not circuits:
            raise DialError(f"/p2p/{peer_id}: no connected peer knows this peer (looked up through the DHT)")
        raise DialError(f"/p2p/{peer_id}: found through the DHT but no address answered: {'; '.join(errors)}")

    def _on_discovered(self, info: PeerInfo) -> None:
        """mDNS found a peer: dial it unless it is us, already connected, or already being dialled.
        (py-libp2p's discovery events are process-wide, so other hosts' discoveries arrive here too; the checks
        make those harmless.)"""
        host, nursery = self.host, self._nursery
        if host is None or nursery is None or info.peer_id == host.get_id():
            return
        key = str(info.peer_id)
        if key in self._discovered_dialling or host.get_network().get_connections(info.peer_id):
            return
        # Announced by any host on the LAN: never a loopback address or a name (GuardedPeerStore stores alike).
        shown = [a for a in info.addrs[:MAX_DHT_ADDRS_PER_PEER] if scope_dialable(a, LAN)]
        dialable = sorted((a for a in shown if "/tcp/" in str(a) or is_quic(a)), key=lambda a: not is_quic(a))
        if not dialable or len(self._discovered_dialling) >= MAX_DISCOVERY_DIALS:
            return
        self.counters.mdns_discovered += 1
        self._discovered_dialling.add(key)
        nursery.start_soon(self._dial_discovered, f"{dialable[0]}/p2p/{key}", key)

    async def _dial_discovered(self, addr: str, key: str) -> None:
        try:
            link = await self.dial(addr)
            log.info("mDNS: connected to %s (%s)", addr, link.link_id)
        except DialError as exc:
            log.warning("mDNS: %s", exc)
        finally:
            self._discovered_dialling.discard(key)

    async def _keep_dialled(self, addr: str) -> None:
        """Dial a bootstrap peer and redial with exponential backoff whenever the link drops. With
        ``betanet.relay = "client"`` a slot is reserved on it (if it is a relay) before the mesh stream opens,
        so by the time the peer hears our first announce it can relay to us."""
        delay = self.settings.reconnect_initial_s
        peer_id = info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id
        while True:
            try:
                link = await self._dial(addr, reserve=True)
            except DialError as exc:
                if self.relay is not None:
                    self.relay.release(peer_id)  # a slot reserved before the mesh stream failed is not ours
                log.warning("bootstrap %s: %s; retrying in %.1f s", addr, exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max_s)
                continue
            delay = self.settings.reconnect_initial_s
            log.info("bootstrap %s connected (%s)", addr, link.link_id)
            await link.wait_closed()
            if self.relay is not None:
                self.relay.release(peer_id)
            log.info("bootstrap %s lost; redialling", addr)


StreamHandler = Callable[[INetStream, bytes | None], Awaitable[None]]


def _with_remote_key(handler: StreamHandler) -> Callable[[INetStream], Awaitable[None]]:
    async def on_stream(stream: INetStream) -> None:
        await handler(stream, signing_key_of(stream.muxed_conn.peer_id))

    return on_stream


def _with_causes(exc: BaseException) -> str:
    """An error and what caused it, one line (py-libp2p's swarm wraps the transport's reason)."""
    parts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(parts) < 4:
        parts.append(str(cause) or type(cause).__name__)
        cause = cause.__cause__
    return ": ".join(parts)


def _refusal(exc: BaseException) -> str | None:
    """The peer's refusal, when a stream failed because the peer does not serve the protocol (py-libp2p wraps
    multistream-select's "na" in a StreamFailure whose message does not say so)."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            return None
        if isinstance(cause, MultiselectClientError) and "not supported" in str(cause):
            return "protocol not supported"
        cause = cause.__cause__ or cause.__context__
    return None


def _one_per_relay(circuits: list[str]) -> list[str]:
    """The first circuit address through each relay (the relay's IP part does not matter once connected)."""
    by_relay: dict[str, str] = {}
    for addr in circuits:
        by_relay.setdefault(addr.split("/p2p-circuit")[0].rpartition("/p2p/")[2], addr)
    return list(by_relay.values())


async def _first_that_connects(
    addrs: list[str], dial_one: Callable[[str], Awaitable[None]], errors: list[str], attempt_s: float | None
) -> bool:
    """Try up to :data:`MAX_DIAL_CANDIDATES` of ``addrs`` in turn, each for at most ``attempt_s``; True once one
    connects. One at a time: when two relayed dials to one peer were raced and the loser cancelled mid-upgrade,
    py-libp2p 0.8 ended up with neither (the peer logged "fail to upgrade mux", and our connection to the relay
    closed too; seen in tests/test_relay_netns.py). Failures are appended to ``errors``."""
    for addr in addrs[:MAX_DIAL_CANDIDATES]:
        with trio.move_on_after(attempt_s if attempt_s is not None else math.inf) as scope:
            try:
                await dial_one(addr)
                return True
            except Exception as exc:  # noqa: BLE001 - libp2p surfaces many error types for unreachable/refusing peers
                errors.append(f"{addr}: {exc or type(exc).__name__}")
        if scope.cancelled_caught:
            errors.append(f"{addr}: no answer within {attempt_s:g} s")
    return False
