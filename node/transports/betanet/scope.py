"""What BetaNet tells strangers: our addresses per audience, and which addresses DHT answers may plant.

A node's LAN layout is the user's data. Each address has a *scope*: loopback (this machine), LAN (private, link-
local, CGNAT, unique-local: :func:`ip_scope`) or public. A peer is shown only the addresses of scopes it can use:

* a peer connected over loopback sees everything (it is this machine);
* a peer that reached us over a LAN address sees LAN and public addresses;
* any other peer (public, relayed, unknown) sees public addresses and ``betanet.announce_addrs`` only.

py-libp2p 0.8 sends our addresses in identify (listen addresses and a signed peer record), identify push, and the
signed peer record of every DHT message, all from ``host.get_addrs()`` with no peer in sight. A peer keeps the
newest signed record it got from us and drops every address not in it, so every record a peer gets from us must
carry its audience's addresses. :func:`scope_host` does it on one host instance (libp2p is pinned below 0.9):

* the *audience* is a context variable, set for the task serving each inbound stream and by ``host.new_stream``
  for the task that opened a stream (an awaited coroutine shares its caller's context), from the scope of the
  stream's connection (:func:`conn_scope`); unset means public;
* ``host.get_addrs()`` returns the addresses the current audience may see, at most :data:`MAX_OWN_ADDRS` of them
  (:func:`capped`: a peer refuses a bigger record of ours, as we refuse theirs) — the local signed record follows:
  libp2p re-signs it, with a newer sequence number, whenever the set differs from the cached one;
* identify and identify push are answered by :func:`identify_message`, which never falls back to the raw listen
  addresses (py-libp2p's does, when the list is empty).

Addresses from DHT answers (:class:`GuardedPeerStore`): the FIND_NODE replies of a connected peer name other
peers with addresses the peer chose, which py-libp2p puts in the peerstore, and the auto-connector and lookups
then dial. Only well-formed addresses of transports we dial are kept, never unspecified or multicast ones, never
loopback ones (or DNS names) unless the answering peer is on loopback, never LAN ones unless it is on loopback or
the LAN; at most
:data:`MAX_DHT_ADDRS_PER_PEER` per named peer (a signed record of more is not kept), :data:`MAX_DHT_PEERS` named
peers at once and :data:`MAX_DHT_PEERS_PER_ANSWERER` per answering peer (its own stale places, else its oldest
once :data:`DHT_PLACE_RENEW_S` old, make room for its new ones; with every place taken, expired ones are reclaimed,
else the oldest of the biggest answerer evicted). What a peer says about itself is checked alike and capped at
:data:`MAX_OWN_ADDRS`.

The same check covers a relay's answers on our hop stream to it (a reservation's record is the relay's, a
CONNECT's the destination's) and what py-libp2p's mDNS listener stores from zeroconf's thread: words of a host on
the LAN, whose announced peers are bounded like one DHT answerer's.

A task serving an inbound stream keeps its asker's audience when it opens a stream itself (py-libp2p pings a full
bucket's oldest peer from within the DHT handler): ``host.new_stream`` sets the audience only in other tasks.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import multiaddr
import trio
from libp2p.abc import IHost, IMuxedConn, INetStream, IPeerStore
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.identify import AGENT_VERSION, PROTOCOL_VERSION
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.envelope import Envelope
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStore, PeerStoreError, env_to_send_in_RPC
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID as STOP_PROTOCOL
from libp2p.utils import varint
from multiaddr.protocols import P_P2P

log = logging.getLogger("village.betanet.scope")

LOOPBACK, LAN, PUBLIC = 0, 1, 2  # address scopes, most private first
MAX_DHT_ADDRS_PER_PEER = 8  # addresses of one peer a DHT answer may put in the peerstore
MAX_DHT_PEERS = 256  # peers that DHT answers alone put in the peerstore, at once
MAX_DHT_PEERS_PER_ANSWERER = 64  # of those, named by one answering peer
# An answerer at its quota renews its share from its own places named at least this long ago (a DHT lookup's
# answers span seconds): one flooding answer keeps its first peers — the one looked up among them — and a node
# with one anchor keeps finding new peers through it lookup after lookup.
DHT_PLACE_RENEW_S = 30.0
MAX_OWN_ADDRS = 32  # addresses a peer may store for itself (identify, its signed record)
IDENTIFY_PUSH_CONCURRENCY = 8  # identify pushes in flight at once after our addresses change
IDENTIFY_PUSH_TIMEOUT_S = 10.0  # default time a peer gets to take one push (the transport passes dial_timeout_s)
# A push cut at its timeout normally returns within ms (py-libp2p resets the stream); one still running this many
# seconds later is stuck writing to a peer that stopped reading, and we close that peer's connections.
IDENTIFY_PUSH_CUT_GRACE_S = 1.0
CONNECTION_CLOSE_BOUND_S = 2.0  # how long closing a stuck peer's connections may take (yamux close sleeps 0.1 s)
_IP = ("ip4", "ip6")
# Outbound streams whose answers name addresses: DHT, identify, and relay (a reservation's answer carries the relay's
# record, a CONNECT's the destination's, both judged by the relay connection's scope).
_PEER_WORDS = (str(KAD_PROTOCOL), str(IDENTIFY_PROTOCOL), str(HOP_PROTOCOL), str(STOP_PROTOCOL))
MDNS_SPEAKER = ID(b"\x00mdns")  # who speaks for what zeroconf's thread stores: a host on the LAN
_NAMES = ("dns", "dns4", "dns6")


class Audience:
    """Who the current task is talking to: the scope of the connection and, for an outbound stream, its protocol
    and peer (what :class:`GuardedPeerStore` needs to know an answer's origin)."""

    __slots__ = ("inbound", "peer", "protocol", "scope")

    def __init__(self, scope: int, peer: ID, protocol: str | None, *, inbound: bool) -> None:
        self.scope = scope
        self.peer = peer
        self.protocol = protocol
        self.inbound = inbound


_audience: contextvars.ContextVar[Audience | None] = contextvars.ContextVar("betanet_audience", default=None)


def ip_scope(text: str) -> int:
    """LOOPBACK, LAN or PUBLIC for an IP address (IPv4-mapped IPv6 counts as its IPv4 address); an address that
    is not globally routable (private, link-local, CGNAT, unique-local, documentation, ...) is LAN."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return PUBLIC  # a name (dns): whoever configured it meant it for everyone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return LOOPBACK
    own = PUBLIC if ip.is_global else LAN
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return own if embedded is None else min(own, ip_scope(str(embedded)))


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT = ipaddress.IPv6Network("::/96")  # IPv4-compatible (deprecated): ::127.0.0.1


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-compatible, NAT64, 6to4), which it may lead to."""
    if ip in _COMPAT or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def addr_scope(addr: multiaddr.Multiaddr | str) -> int:
    """The scope of a multiaddr: that of its first IP (for a circuit, the relay's); PUBLIC without one."""
    maddr = addr if isinstance(addr, multiaddr.Multiaddr) else multiaddr.Multiaddr(addr)
    for proto in maddr.protocols():
        if proto.name in _IP:
            return ip_scope(str(maddr.value_for_protocol(proto.code)))
    return PUBLIC


def conn_scope(conn: IMuxedConn) -> int:
    """The scope of the network a connection reached us over: its remote IP's; PUBLIC when relayed (the peer may
    be anywhere) or unknown."""
    try:
        addrs = conn.get_transport_addresses()
    except Exception:  # noqa: BLE001 - a muxer without transport addresses: the most careful answer
        return PUBLIC
    scopes = [PUBLIC if "/p2p-circuit" in str(a) else addr_scope(a) for a in addrs]
    return max(scopes, default=PUBLIC)


def visible(addrs: Sequence[multiaddr.Multiaddr], scope: int, announced: frozenset[str]) -> list[multiaddr.Multiaddr]:
    """The addresses an audience of ``scope`` may see: those of its scope or a more public one, and the
    operator's announce addresses (``announced``, without /p2p) whatever their scope."""
    out = []
    for addr in addrs:
        if str(addr.decapsulate_code(P_P2P)) in announced or addr_scope(addr) >= scope:
            out.append(addr)
    return out


def capped(addrs: Sequence[multiaddr.Multiaddr], scope: int, announced: frozenset[str]) -> list[multiaddr.Multiaddr]:
    """At most MAX_OWN_ADDRS of ``addrs`` (those an audience of ``scope`` may see, :func:`visible`), the most useful
    to that audience first: the operator's announce addresses, then those of the audience's own scope before more
    public ones (a LAN peer dials our LAN address first), direct before relayed (``/p2p-circuit``), by their text
    within each. Deterministic whatever the order given (the relays' addresses come in the order our peerstore
    holds them): the same addresses give the same list, so every peer of a class is told the same ones and libp2p
    does not re-sign our record for nothing. A multi-homed node with relay slots has more than MAX_OWN_ADDRS; a
    peer refuses a signed record of more (:class:`GuardedPeerStore`), and then kept only identify's first
    MAX_OWN_ADDRS listen addresses, the announce addresses (listed last) cut."""

    def rank(addr: multiaddr.Multiaddr) -> tuple[bool, int, bool, str]:
        text = str(addr)
        is_announced = str(addr.decapsulate_code(P_P2P)) in announced
        return (not is_announced, abs(addr_scope(addr) - scope), "/p2p-circuit" in text, text)

    return sorted(set(addrs), key=rank)[:MAX_OWN_ADDRS]


def dialable(addr: multiaddr.Multiaddr, source_scope: int) -> bool:
    """Whether an address a peer of ``source_scope`` gave (for itself or another peer) may enter the peerstore: an
    IP, then TCP or UDP/QUIC v1 (or a circuit through such an address), not unspecified or multicast, and not more
    private than the network the peer is on. DNS names only from a peer on loopback: a name can resolve to an
    address of our LAN or loopback (so peers' announced names are not stored; a configured bootstrap name is)."""
    try:
        protos = [p.name for p in addr.protocols()]
        if len(protos) < 2 or protos[0] not in (*_IP, *_NAMES):
            return False
        host = str(addr.value_for_protocol(protos[0]))
        if str(addr.value_for_protocol(addr.protocols()[1].code)) == "0":
            return False  # port 0: nobody listens there
        if protos[1] == "tcp":
            rest = protos[2:]
        elif protos[1:3] == ["udp", "quic-v1"]:
            rest = protos[3:]
        else:
            return False
        if rest and rest not in (["p2p"], ["p2p", "p2p-circuit"], ["p2p", "p2p-circuit", "p2p"]):
            return False
        if protos[0] in _NAMES:
            return source_scope == LOOPBACK  # a name may resolve anywhere (our LAN, loopback): only from this machine
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified or ip.is_multicast or (isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved):
            return False  # (reserved: 240.0.0.0/4, with the broadcast address)
        return ip_scope(host) >= source_scope
    except Exception:  # noqa: BLE001 - multiaddr raises assorted errors for malformed values
        return False


@contextlib.contextmanager
def own_audience() -> Iterator[None]:
    """Within: no audience (public), and whatever the streams opened within set is undone at the end, so the
    caller's task does not go on as if talking to the last peer a lookup queried."""
    token = _audience.set(None)
    try:
        yield
    finally:
        _audience.reset(token)


def current_scope() -> int:
    audience = _audience.get()
    return PUBLIC if audience is None else audience.scope


def identify_message(host: IHost, observed: multiaddr.Multiaddr | None) -> bytes:
    """Our identify message for the current audience (length-prefixed): its addresses and a signed record of
    exactly those, never the raw listen addresses."""
    envelope, _ = env_to_send_in_RPC(host)  # signs host.get_addrs(), i.e. the audience's addresses
    msg = Identify(
        protocol_version=PROTOCOL_VERSION,
        agent_version=AGENT_VERSION,
        public_key=host.get_public_key().serialize(),
        listen_addrs=[a.decapsulate_code(P_P2P).to_bytes() for a in host.get_addrs()],
        observed_addr=observed.to_bytes() if observed is not None else b"",
        protocols=[str(p) for p in host.get_mux().get_protocols() if p is not None],
        signedPeerRecord=envelope,
    )
    body = msg.SerializeToString()
    return bytes(varint.encode_uvarint(len(body))) + body


def _observed(stream: INetStream) -> multiaddr.Multiaddr | None:
    """The peer's address as we see it, over TCP or QUIC (what identify's observed_addr carries)."""
    try:
        for addr in stream.muxed_conn.get_transport_addresses():
            if "/p2p-circuit" not in str(addr):
                return addr.decapsulate_code(P_P2P)
    except Exception:  # noqa: BLE001 - a muxer without transport addresses
        pass
    return None


def scope_host(
    host: IHost,
    full_addrs: Callable[[], list[multiaddr.Multiaddr]],
    announced: frozenset[str],
    *,
    loopback_is_local: bool = True,
    push_timeout_s: float = IDENTIFY_PUSH_TIMEOUT_S,
    on_push_timeout: Callable[[], None] | None = None,
    on_push_cut: Callable[[], None] | None = None,
) -> None:
    """Make ``host`` (this instance) show each peer only its audience's addresses (see the module docstring).
    ``full_addrs`` is every address we have (the transport's ``listen_addresses``); ``announced`` the operator's
    announce addresses, shown to everyone. Without ``loopback_is_local`` a peer on loopback counts as on the LAN
    (a local forwarder may bring strangers in). Identify pushes go as :func:`push_identify_to_all` sends them,
    each within ``push_timeout_s`` (seconds), ``on_push_timeout`` called for each that did not finish in time,
    ``on_push_cut`` for each whose peer's connections were closed because its cut did not end either."""

    def audience_scope(conn: IMuxedConn) -> int:
        scope = conn_scope(conn)
        return LAN if scope == LOOPBACK and not loopback_is_local else scope

    def get_addrs() -> list[multiaddr.Multiaddr]:
        scope = current_scope()
        return capped(visible(full_addrs(), scope, announced), scope, announced)

    plain_new_stream = host.new_stream

    async def new_stream(peer_id: ID, protocol_ids: Sequence[TProtocol]) -> INetStream:
        stream = await plain_new_stream(peer_id, protocol_ids)
        protocol = str(stream.get_protocol()) if stream.get_protocol() is not None else None
        scope = audience_scope(stream.muxed_conn)
        current = _audience.get()
        if current is not None and current.inbound:
            # A task serving an inbound stream keeps its asker's audience: py-libp2p opens streams from within
            # handlers (the DHT's routing table pings the oldest peer of a full bucket while adding the asker), and
            # what the task sends next is still for the asker. A nested stream whose answers name addresses makes
            # its peer the speaker, with the more public of the two scopes (what either may see or plant).
            if protocol in _PEER_WORDS:
                _audience.set(Audience(max(scope, current.scope), peer_id, protocol, inbound=False))
            return stream
        # Set in the caller's context (an awaited coroutine shares it): what it sends on this stream next is for
        # this peer. The scope is the connection's the stream runs on.
        _audience.set(Audience(scope, peer_id, protocol, inbound=False))
        return stream

    swarm = host.get_network()
    plain_handler = swarm.common_stream_handler  # type: ignore[attr-defined]  # BasicHost's dispatcher

    async def handle_inbound(stream: INetStream) -> None:
        conn = stream.muxed_conn
        _audience.set(Audience(audience_scope(conn), conn.peer_id, None, inbound=True))  # this stream's task only
        await plain_handler(stream)

    async def answer_identify(stream: INetStream) -> None:
        try:
            await stream.write(identify_message(host, _observed(stream)))
        except Exception as exc:  # noqa: BLE001 - a closed or reset stream: nothing to answer
            log.debug("identify to %s not sent: %s", stream.muxed_conn.peer_id, exc or type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):  # best effort
                await stream.close()

    async def push_identify_to_all_peers() -> None:  # py-libp2p's, run when we listen on a new address
        await push_identify_to_all(host, timeout_s=push_timeout_s, on_timeout=on_push_timeout, on_cut=on_push_cut)

    setattr(host, "get_addrs", get_addrs)  # noqa: B010 - instance overrides, not typed attributes
    setattr(host, "new_stream", new_stream)  # noqa: B010
    setattr(host, "_push_identify_to_all_peers", push_identify_to_all_peers)  # noqa: B010
    swarm.set_stream_handler(handle_inbound)
    host.set_stream_handler(IDENTIFY_PROTOCOL, answer_identify)


async def push_identify_to_all(
    host: IHost,
    *,
    timeout_s: float,
    on_timeout: Callable[[], None] | None = None,
    on_cut: Callable[[], None] | None = None,
) -> None:
    """Identify push to every connected peer, :data:`IDENTIFY_PUSH_CONCURRENCY` at once, each given ``timeout_s``
    (seconds) to take it (open the stream, negotiate, write): a peer that accepts the stream and never reads holds
    one of the pushers until its timeout, not the pushes to the others (py-libp2p's multistream negotiation alone
    waits 30 s for an answer; one at a time, a few such peers kept the rest on our old addresses for minutes).
    ``on_timeout`` is called for each push cut short. A push whose cut does not end within
    :data:`IDENTIFY_PUSH_CUT_GRACE_S` more has its peer's connections closed (:func:`_close_if_stuck`), and
    ``on_cut`` is called: so one round ends within timeout_s + grace + 2 x :data:`CONNECTION_CLOSE_BOUND_S` per peer,
    at shutdown too."""
    peers = iter(host.get_connected_peers())  # shared by the pushers: each peer is pushed to once

    async def pusher() -> None:
        for peer_id in peers:
            done = trio.Event()  # the push returned (taken, failed or cut)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_close_if_stuck, host, peer_id, done, timeout_s + IDENTIFY_PUSH_CUT_GRACE_S, on_cut)
                try:
                    with trio.move_on_after(timeout_s) as cancel:
                        await push_identify(host, peer_id)
                finally:
                    done.set()
            if cancel.cancelled_caught:
                log.debug("identify push to %s: not taken within %g s", peer_id, timeout_s)
                if on_timeout is not None:
                    on_timeout()

    async with trio.open_nursery() as nursery:
        for _ in range(IDENTIFY_PUSH_CONCURRENCY):
            nursery.start_soon(pusher)


async def _close_if_stuck(
    host: IHost, peer_id: ID, done: trio.Event, after_s: float, on_cut: Callable[[], None] | None
) -> None:
    """Close ``peer_id``'s connections if the push to it has not returned ``after_s`` (seconds) after it started.

    Our deadline cannot end every push: when it cuts py-libp2p's ``new_stream``, that resets the stream inside a
    *shielded* scope (basic_host.py, its ``finally``), and the RST frame goes through yamux's connection-wide write
    lock to the socket; to a peer that stopped reading (a zero TCP window: our send buffer full) that write waits
    forever, and with it the push, the round, and whatever nursery owns it (the relay's; shutdown). Closing the
    socket ends the blocked send (trio raises ClosedResourceError in it, which py-libp2p's TCP write takes as a
    closed stream), then the reset, then the push. We close the secured connection under yamux first: yamux's own
    close would first write GO_AWAY through the same held lock. Shielded with its own deadlines, so it does its
    job when our scope is cancelled (shutdown) as well."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(after_s):
            await done.wait()
            return
        log.warning("identify push to %s: not ended %g s after it began (stuck in its cut): closing", peer_id, after_s)
        if on_cut is not None:
            on_cut()
        await close_stuck_peer(host, peer_id)


async def close_stuck_peer(host: IHost, peer_id: ID) -> None:
    """Close ``peer_id``'s connections when a write to it is stuck (the peer stopped reading: a zero TCP window):
    the secured connection under yamux first (yamux's own close would first write GO_AWAY through its held write
    lock), then the swarm's ``close_peer`` (its bookkeeping and notifications). Each step has its own
    :data:`CONNECTION_CLOSE_BOUND_S` (seconds), so a first step cut at its bound does not skip the second; shielded,
    so it does its job when the caller's scope is cancelled (shutdown) as well."""
    network = host.get_network()
    with trio.CancelScope(shield=True):
        with trio.move_on_after(CONNECTION_CLOSE_BOUND_S):
            for conn in network.get_connections(peer_id):
                secured = getattr(conn.muxed_conn, "secured_conn", None)  # yamux/mplex over TCP; None for QUIC
                if secured is not None:
                    with contextlib.suppress(Exception):  # best effort: already closed or broken
                        await secured.close()
        with trio.move_on_after(CONNECTION_CLOSE_BOUND_S), contextlib.suppress(Exception):  # best effort
            await network.close_peer(peer_id)


async def push_identify(host: IHost, peer_id: ID) -> bool:
    """Send identify push to ``peer_id`` with its audience's addresses (a scoped host's ``new_stream`` sets it)."""
    try:
        stream = await host.new_stream(peer_id, [ID_PUSH])
    except Exception as exc:  # noqa: BLE001 - libp2p: no connection, protocol refused, ...
        log.debug("identify push to %s: %s", peer_id, exc or type(exc).__name__)
        return False
    try:
        await stream.write(identify_message(host, None))
        return True
    except Exception as exc:  # noqa: BLE001 - a closed or reset stream
        log.debug("identify push to %s: %s", peer_id, exc or type(exc).__name__)
        return False
    finally:
        with contextlib.suppress(Exception):  # best effort
            await stream.close()


class GuardedPeerStore(PeerStore):
    """py-libp2p's peerstore, where what a peer says about addresses (its identify, its DHT messages, the peers
    its DHT answers name) is checked against the network that peer is on, and what it says about *other* peers is
    bounded (see the module docstring). Our own dials and configuration are stored as py-libp2p stores them."""

    def __init__(self, on_refused: Callable[[int], None] | None = None) -> None:
        super().__init__()
        # Peers that only other peers' answers put here (named peer -> the peer that named it), oldest first,
        # bounded: MAX_DHT_PEERS in all, MAX_DHT_PEERS_PER_ANSWERER per answering peer.
        self._from_dht: dict[ID, ID] = {}
        self._named_at: dict[ID, float] = {}  # when each named peer took its place (time.monotonic)
        self._on_refused = on_refused
        self._thread = threading.get_ident()  # the event loop's; py-libp2p's mDNS listener calls from zeroconf's
        # The mDNS listener's calls and the event loop's both change _from_dht and py-libp2p's maps: one at a time
        # (re-entrant: consume_peer_record calls add_addrs).
        self._lock = threading.RLock()
        self._mdns = Audience(LAN, MDNS_SPEAKER, None, inbound=True)

    def _speaker(self) -> Audience | None:
        """The peer whose words this call stores, if any: a stream it opened, our identify / DHT / relay stream to
        it, or (a call from another thread: the mDNS listener) any host on the LAN, whose announced peers are
        third parties (checked as LAN words, bounded as one answerer's)."""
        if threading.get_ident() != self._thread:
            return self._mdns
        audience = _audience.get()
        if audience is None or not (audience.inbound or audience.protocol in _PEER_WORDS):
            return None
        return audience

    def _refused(self, n: int) -> None:
        if n > 0 and self._on_refused is not None:
            self._on_refused(n)

    def add_addrs(self, peer_id: ID, addrs: Sequence[multiaddr.Multiaddr], ttl: int = 0) -> None:
        with self._lock:
            self._add_addrs(peer_id, addrs, ttl)

    def _add_addrs(self, peer_id: ID, addrs: Sequence[multiaddr.Multiaddr], ttl: int) -> None:
        speaker = self._speaker()
        if speaker is None:
            super().add_addrs(peer_id, addrs, ttl)
            return
        own = peer_id == speaker.peer
        if own:
            self._from_dht.pop(peer_id, None)  # known by its own word now: no longer a named peer
            self._named_at.pop(peer_id, None)
        elif not self._admit(peer_id, speaker.peer):
            self._refused(len(addrs))
            return
        # Bounded whatever the speaker sends: py-libp2p's PeerData.add_addrs is quadratic in the addresses held.
        cap = MAX_OWN_ADDRS if own else MAX_DHT_ADDRS_PER_PEER
        have = set(self.peer_data_map[peer_id].get_addrs()) if peer_id in self.peer_data_map else set()
        room = max(0, cap - len(have))
        kept: dict[multiaddr.Multiaddr, None] = {}
        for addr in addrs[: cap * 2]:
            if len(kept) >= room:
                break
            if addr not in have and addr not in kept and dialable(addr, speaker.scope):
                kept[addr] = None
        self._refused(len(addrs) - len(kept))
        if kept:
            super().add_addrs(peer_id, list(kept), ttl)

    def consume_peer_record(self, envelope: Envelope, ttl: int) -> bool:
        with self._lock:
            return self._consume_peer_record(envelope, ttl)

    def _consume_peer_record(self, envelope: Envelope, ttl: int) -> bool:
        speaker = self._speaker()
        record = envelope.record()
        peer_id = record.peer_id
        own = speaker is None or peer_id == speaker.peer
        if len(record.addrs) > (MAX_OWN_ADDRS if own else MAX_DHT_ADDRS_PER_PEER):
            # Too many addresses to keep signed (a record cannot be cut); a third party's go in unsigned, capped.
            if speaker is None or own:
                self._refused(len(record.addrs))
                return False
            self.add_addrs(peer_id, list(record.addrs), ttl)  # counts what it refuses
            return True  # (False would make a lookup skip the peer)
        if speaker is None:
            return super().consume_peer_record(envelope, ttl)
        if not own and peer_id in self.peer_data_map and peer_id not in self._from_dht:
            # Known by its own word (or our dial, our configuration): another peer's record, newer or not, does not
            # replace what it told us (a public record from a stranger would clear the LAN addresses a neighbour
            # gave); its addresses are added, within the third-party cap.
            self.add_addrs(peer_id, list(record.addrs), ttl)
            return True
        if not own and not self._admit(peer_id, speaker.peer):
            self._refused(len(record.addrs))
            return False
        if all(dialable(a, speaker.scope) for a in record.addrs):
            return super().consume_peer_record(envelope, ttl)  # its addresses go through add_addrs above
        # A record naming addresses we refuse is not kept whole (a DHT server would pass it on as it is): what
        # py-libp2p does for a newer record, with only the acceptable addresses and no record.
        state = self.peer_record_map.get(peer_id)
        if state is not None and state.seq > record.seq:
            return False
        self.peer_record_map.pop(peer_id, None)
        if peer_id in self.peer_data_map:
            self.peer_data_map[peer_id].clear_addrs()
        self.add_addrs(peer_id, list(record.addrs), ttl)
        return True

    def clear_addrs(self, peer_id: ID) -> None:
        """py-libp2p's, except from the mDNS listener's thread: a LAN host's withdrawal clears only a peer that
        mDNS alone put here (not the addresses a connected peer gave, nor our configuration's)."""
        with self._lock:
            if threading.get_ident() != self._thread:
                if self._from_dht.get(peer_id) == MDNS_SPEAKER:
                    # Withdrawn (or updated: py-libp2p clears, then adds again): the place and the peer's entry go
                    # together, so an announcement again takes a place again (an entry kept without a place let a
                    # LAN host plant any number of peers by withdrawing each once, and py-libp2p's 1000-peer limit
                    # then evicted our own key pair's entry).
                    self._forget(peer_id)
                return
            super().clear_addrs(peer_id)

    def _stale(self, peer_id: ID) -> bool:
        """A named peer's place that holds nothing usable: evicted, expired or withdrawn (no address left)."""
        data = self.peer_data_map.get(peer_id)
        return data is None or data.is_expired() or not data.get_addrs()

    def _admit(self, peer_id: ID, answerer: ID) -> bool:
        """Whether ``answerer``'s answer may store ``peer_id``: known already, or a place among MAX_DHT_PEERS with
        the answerer under MAX_DHT_PEERS_PER_ANSWERER. An answerer at its quota gives up its own stale places
        (evicted, expired, withdrawn), else its oldest one once that is DHT_PLACE_RENEW_S old: it renews its own
        share and never takes the others' (a node with one anchor keeps finding peers through it: a refusal at the
        quota stopped every lookup after 64 named peers; one answer naming hundreds is refused past the quota).
        With every place taken, stale places are reclaimed; when none is, the oldest peer named by
        the answerer holding most places is evicted (so one answerer, or a few, cannot keep the others' out)."""
        if peer_id in self._from_dht or peer_id in self.peer_data_map:
            return True
        mine = [p for p, a in self._from_dht.items() if a == answerer]
        if len(mine) >= MAX_DHT_PEERS_PER_ANSWERER:
            stale = [p for p in mine if self._stale(p)]
            if not stale and time.monotonic() - self._named_at.get(mine[0], 0.0) < DHT_PLACE_RENEW_S:
                return False  # its share is all fresh: this answer floods it
            for gone in stale or mine[:1]:
                self._forget(gone)
        if len(self._from_dht) >= MAX_DHT_PEERS:
            for gone in list(self._from_dht):
                if self._stale(gone):
                    self._forget(gone)
        if len(self._from_dht) >= MAX_DHT_PEERS:
            counts: dict[ID, int] = {}
            for a in self._from_dht.values():
                counts[a] = counts.get(a, 0) + 1
            biggest = max(counts, key=lambda a: counts[a])
            self._forget(next(p for p, a in self._from_dht.items() if a == biggest))
        self._from_dht[peer_id] = answerer
        self._named_at[peer_id] = time.monotonic()
        return True

    def _forget(self, peer_id: ID) -> None:
        """Drop a named peer's place and what its namer said about it."""
        del self._from_dht[peer_id]
        self._named_at.pop(peer_id, None)
        if peer_id in self.peer_data_map:
            self.clear_peerdata(peer_id)

    def dht_named(self) -> int:
        """How many peers other peers' answers put in the peerstore (at most MAX_DHT_PEERS)."""
        return len(self._from_dht)

    def addrs(self, peer_id: ID) -> list[multiaddr.Multiaddr]:
        """py-libp2p's (raises PeerStoreError for an unknown or expired peer), under the writers' lock, as a copy."""
        with self._lock:
            return list(super().addrs(peer_id))

    def peer_info(self, peer_id: ID) -> PeerInfo:
        """py-libp2p's (raises PeerStoreError for an unknown peer), under the writers' lock, its addresses a copy."""
        with self._lock:
            info = super().peer_info(peer_id)
            return PeerInfo(info.peer_id, list(info.addrs))

    def known_addrs(self, peer_id: ID) -> list[multiaddr.Multiaddr]:
        """A copy of ``peer_id``'s addresses, [] when it is unknown or expired, read in one step under the writers'
        lock: ``addrs(p) if p in peer_ids()`` raced zeroconf's thread (which may drop the peer between the check and
        the read, or change its list while the caller iterates it), and py-libp2p's ``addrs`` raises for a peer
        still listed whose entry expired."""
        with self._lock:
            data = self.peer_data_map.get(peer_id)
            if data is None or data.is_expired():
                return []
            return list(data.get_addrs())

    def _enforce_peer_limit(self) -> None:
        """py-libp2p's eviction beyond its 1000 peers (empty entries first, then expired, then in insertion order),
        except that an entry holding a private key (our own key pair: identify and every signed record read it) is
        never a victim: the victims are chosen from the other entries, under the writers' lock, and our entry never
        leaves the map. (Setting it aside while py-libp2p's eviction ran raced the event loop: zeroconf's thread
        runs the eviction inside its add_addrs, and the event loop's unlocked privkey / pubkey / add_protocols
        found our entry missing, or wrote to a copy that was lost.)"""
        with self._lock:
            excess = len(self.peer_data_map) - self.max_peers
            if excess <= 0:
                return
            others = [(peer_id, data) for peer_id, data in self.peer_data_map.items() if data.privkey is None]
            # py-libp2p's order: no address before some, expired before live (a stable sort: oldest first within)
            others.sort(key=lambda item: (not item[1].get_addrs(), item[1].is_expired()), reverse=True)
            for peer_id, _ in others[:excess]:
                self.peer_record_map.pop(peer_id, None)
                del self.peer_data_map[peer_id]

    def _cleanup_expired_records(self) -> None:
        """py-libp2p's periodic cleanup (expired entries dropped, then the record and peer limits enforced), except
        that an entry holding a private key is never dropped (another peer's words may have given our own entry
        addresses with a TTL), nor taken out of the map meanwhile (see :meth:`_enforce_peer_limit`)."""
        with self._lock:
            expired = [p for p, data in self.peer_data_map.items() if data.privkey is None and data.is_expired()]
            for peer_id in expired:
                self.maybe_delete_peer_record(peer_id)
                del self.peer_data_map[peer_id]
            self._enforce_record_limit()
            self._enforce_peer_limit()


def peer_addrs(store: IPeerStore, peer_id: ID) -> list[multiaddr.Multiaddr]:
    """``peer_id``'s addresses in ``store``, [] when it has none (unknown, expired): atomic in a
    :class:`GuardedPeerStore` (:meth:`GuardedPeerStore.known_addrs`), never raising in any store."""
    if isinstance(store, GuardedPeerStore):
        return store.known_addrs(peer_id)
    try:
        return list(store.addrs(peer_id))
    except PeerStoreError:
        return []
