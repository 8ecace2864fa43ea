"""Kademlia peer routing for BetaNet: py-libp2p's own ``KadDHT`` on our host, fed by the host's identify.

libp2p's DHT only knows the peers someone adds to its routing table. We dial with ``Swarm.dial_addr`` (not
``host.connect``), and a hub never dials its inbound peers, so the routing table is fed from identify: py-libp2p
0.8's host runs identify (``/ipfs/id/1.0.0``) once on every new connection, in either direction
(``_IdentifyNotifee`` in ``host/basic_host.py``), and puts the peer's listen addresses and protocols in the
peerstore. We reuse that result instead of opening a second identify stream: a js-libp2p peer accepts one
inbound identify stream per connection by default and aborted our second one, so it never entered the table.
A lookup (:meth:`PeerRouting.find`) then asks the connected peers closest to the target, as Kademlia does.

The host's identify is a system task with no completion signal; :func:`_watch_identify` wraps this host
instance's ``_identify_peer`` (and ``_schedule_identify``, which skips peers whose protocols are already
cached) so that each finished identify queues the peer for the routing table. libp2p is pinned below 0.9.

Bounds: peers waiting to be added to the routing table (:data:`IDENTIFY_QUEUE`; beyond it they are skipped
and counted), one timeout per addition and per lookup, and what one answer to our DHT requests may make py-libp2p
do (:func:`_bound_answers`: at most :data:`MAX_DHT_ANSWER_BYTES`, k named peers, no signed record under a key
costly to verify), and what a request to our server may (:func:`_bound_requests`). The DHT speaks
``/ipfs/kad/1.0.0`` whatever prefix is asked for (0.8 ignores ``protocol_prefix``); its routing table holds at
most 256 buckets of 20 peers. What a server's askers can make it store is bounded in :mod:`.dht_store`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import multiaddr
import trio
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import IOException
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.common import BUCKET_SIZE, MAX_DHT_MESSAGE_SIZE
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.envelope import unmarshal_envelope
from libp2p.peer.id import ID
from libp2p.peer.pb import crypto_pb2, envelope_pb2
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils import varint

from node.transports.betanet.counters import BetanetCounters
from node.transports.betanet.dht_store import ProviderBounds, gate_requests, read_body, read_length_prefix
from node.transports.betanet.rsa_guard import MAX_RSA_EXPONENT
from node.transports.betanet.scope import addr_scope, current_scope, own_audience, peer_addrs

log = logging.getLogger("village.betanet.dht")

IDENTIFY_QUEUE = 256  # identified peers waiting to be added to the routing table; beyond this they are skipped
# One answer to a DHT request of ours (FIND_NODE, GET_PROVIDERS, GET_VALUE, PING, ...), bytes. An honest answer
# names k peers, each with at most MAX_OWN_ADDRS (32) addresses, sent twice (py-libp2p sends the peerstore's
# addresses and the signed record of them): a relayed peer's circuit address /ip6/.../p2p/<relay>/p2p-circuit/
# p2p/<peer> is ~110 B, so k x 32 x ~110 B x 2, the sender's record, keys and signatures: ~150-160 KB
# (tests/transports/test_betanet_dht_answers.py builds one). py-libp2p's own bound is 4 MiB.
MAX_DHT_ANSWER_BYTES = 192 * 1024
ANSWER_PEERS = BUCKET_SIZE  # k (20): peers of one answer's closerPeers, and of its providerPeers, py-libp2p reads
# An answer naming more closerPeers or providerPeers is refused (an honest server names at most k of each): the
# cut's walk and sort stay small.
MAX_ANSWER_PEERS = 2 * ANSWER_PEERS
# A signed record's RSA key beyond these is not verified (py-libp2p caps the modulus at 4096 bits; .rsa_guard
# makes it refuse a public exponent above MAX_RSA_EXPONENT too — here such records are dropped earlier, and counted).
MAX_RSA_MODULUS_BITS = 4096


def _watch_identify(host: IHost, on_done: Callable[[ID], None]) -> Callable[[], None]:
    """Call ``on_done(peer)`` whenever the host's own identify of ``peer`` has finished (successfully or not),
    or was skipped because the peer's protocols were already known. Returns the function that undoes it."""
    identify_peer: Callable[..., Awaitable[None]] | None = getattr(host, "_identify_peer", None)
    schedule: Callable[..., None] | None = getattr(host, "_schedule_identify", None)
    inflight: set[ID] | None = getattr(host, "_identify_inflight", None)
    if identify_peer is None or schedule is None or inflight is None:
        raise RuntimeError("this py-libp2p host has no automatic identify to follow (libp2p is pinned below 0.9)")

    async def identify_then_report(peer_id: ID, **kwargs: Any) -> None:
        try:
            await identify_peer(peer_id, **kwargs)
        finally:
            on_done(peer_id)

    def schedule_or_report(peer_id: ID, **kwargs: Any) -> None:
        schedule(peer_id, **kwargs)
        if peer_id not in inflight:  # skipped (already identified, or no live connection): report it now
            on_done(peer_id)

    host._identify_peer = identify_then_report  # type: ignore[attr-defined]  # instance override, see docstring
    host._schedule_identify = schedule_or_report  # type: ignore[attr-defined]

    def undo() -> None:
        host._identify_peer = identify_peer  # type: ignore[attr-defined]
        host._schedule_identify = schedule  # type: ignore[attr-defined]

    return undo


def _never_refresh(host: IHost, dht: KadDHT) -> None:
    """``betanet.auto_connect = "off"``: KadDHT's upkeep (``_run_main_loop`` in kad_dht/kad_dht.py, 0.8: at start
    and every 600 s) looks up our own ID and a random key in every non-empty bucket, and so dials the peers other
    peers' answers name, at the addresses they chose. Its ``refresh_routing_table`` becomes a no-op on this instance
    (libp2p is pinned below 0.9). The routing table's own upkeep pings entries idle for an hour (and the oldest of a
    full bucket), so it takes only peers this node is connected to: a peer a lookup answer named enters it once the
    node has a connection to it, never on the answer's word. The table is fed from identify
    (:meth:`PeerRouting._route`) and by the lookups the node is asked for (:meth:`PeerRouting.find`), which still
    work: they read the addresses answers put in the peerstore, not the table."""

    async def refresh_routing_table() -> None:
        return None

    table = dht.routing_table
    add_peer = table.add_peer

    async def add_connected_peer(peer: PeerInfo | ID, **kwargs: Any) -> bool:
        peer_id = peer.peer_id if isinstance(peer, PeerInfo) else peer
        if not host.get_network().get_connections(peer_id):
            return False
        return await add_peer(peer, **kwargs)

    setattr(dht, "refresh_routing_table", refresh_routing_table)  # noqa: B010 - an instance override, not a typed attribute
    setattr(table, "add_peer", add_connected_peer)  # noqa: B010 - likewise


def _table_takes_peerstore_addrs(host: IHost, dht: KadDHT) -> None:
    """A peer enters the routing table with the addresses the peerstore holds for it, not with those the answer
    that named it carried: the peerstore checked them (:class:`.scope.GuardedPeerStore`), and a lookup returns a
    table entry's addresses as they are (peer_routing.py, ``find_peer``)."""
    table = dht.routing_table
    add_peer = table.add_peer

    async def add_checked_peer(peer: PeerInfo | ID, **kwargs: Any) -> bool:
        if isinstance(peer, PeerInfo):
            addrs = peer_addrs(host.get_peerstore(), peer.peer_id)  # atomic: zeroconf's thread may drop it
            if not addrs:
                return False
            peer = PeerInfo(peer.peer_id, addrs)
        return await add_peer(peer, **kwargs)

    setattr(table, "add_peer", add_checked_peer)  # noqa: B010 - an instance override, not a typed attribute


def _answer_by_scope(dht: KadDHT) -> None:
    """A server's FIND_NODE and GET_PROVIDERS answers name each peer (closerPeers, providerPeers) only at the
    addresses the asker's scope may see (the scope of the connection it asked over, :mod:`.scope`): a peer on this
    node's LAN is not shown to a stranger at its LAN address. A peer whose signed record holds addresses the asker
    may not see goes without it (a record cannot be cut; the asker keeps the unsigned addresses): a provider's
    addresses are those of its ADD_PROVIDER, its record the peerstore's, so the record is read too. An instance
    override of KadDHT's ``_add_closer_peers_to_response`` (libp2p is pinned below 0.9), run in the task serving
    the asker's stream; py-libp2p calls it for every FIND_NODE, GET_PROVIDERS (after it has added the providers)
    and GET_VALUE answer."""
    add = dht._add_closer_peers_to_response

    def add_for_asker(response: Message, closest_peers: Sequence[ID], exclude_peer_id: ID | None = None) -> None:
        add(response, closest_peers, exclude_peer_id=exclude_peer_id)
        scope = current_scope()
        for peer in [*response.closerPeers, *response.providerPeers]:
            shown = [raw for raw in peer.addrs if _seen_by(raw, scope)]
            if len(shown) < len(peer.addrs):
                del peer.addrs[:]
                peer.addrs.extend(shown)
                peer.ClearField("signedRecord")
            elif peer.HasField("signedRecord") and not _record_seen_by(peer.signedRecord, scope):
                peer.ClearField("signedRecord")

    setattr(dht, "_add_closer_peers_to_response", add_for_asker)  # noqa: B010 - an instance override


def _seen_by(raw: bytes, scope: int) -> bool:
    """Whether an audience of ``scope`` may see a stored address (binary multiaddr)."""
    try:
        return addr_scope(multiaddr.Multiaddr(raw)) >= scope
    except Exception:  # noqa: BLE001 - multiaddr parses lazily; a stored address that fails is not shown
        return False


def _record_seen_by(envelope: bytes, scope: int) -> bool:
    """Whether an audience of ``scope`` may see every address of a stored signed peer record."""
    try:
        return all(addr_scope(a) >= scope for a in unmarshal_envelope(envelope).record().addrs)
    except Exception:  # noqa: BLE001 - a record that does not read is not passed on
        return False


def _bound_answers(host: IHost, counters: BetanetCounters) -> None:
    """Bound what one answer to our DHT requests costs before py-libp2p reads it. py-libp2p 0.8 reads an answer of
    up to 4 MiB, de-duplicates its closerPeers in two quadratic loops with no checkpoint (``peer_routing.py``,
    ``_query_peer_for_closest`` and ``_query_single_peer_for_closest``: one FIND_NODE answer naming 3,000 peers
    held the event loop 1.7 s, 20,000 peers ~36 s), and verifies every signed record in it back to back (an RSA
    key with a 4095-bit public exponent costs ~25 ms a check: 20 of them held it 0.5-1.0 s). So each stream this
    host opens for the DHT protocol reads every answer itself first (:func:`_bound_message_untrusted`): one of more
    than :data:`MAX_DHT_ANSWER_BYTES`, naming more than :data:`MAX_ANSWER_PEERS` closerPeers or providerPeers, or
    whose senderRecord is under a costly key (:func:`_cheap_record`) is refused (the stream is reset,
    ``dht_answers_refused``); a named peer's signed record under a costly key is dropped (``dht_records_dropped``:
    the peer keeps its unsigned addresses); one naming more than :data:`ANSWER_PEERS` peers is cut to that many
    (``dht_answers_cut``): closerPeers to the closest to the key asked for (the target itself, if named, stays),
    providerPeers to the first distinct ones. Every answer kind the DHT reads (FIND_NODE, GET_PROVIDERS,
    GET_VALUE, PUT_VALUE and ADD_PROVIDER echoes, PING) goes through this one read. An instance override of
    ``host.new_stream`` (libp2p is pinned below 0.9); only streams of the DHT protocol change."""
    plain_new_stream = host.new_stream

    async def new_stream(peer_id: ID, protocol_ids: Sequence[TProtocol]) -> INetStream:
        stream = await plain_new_stream(peer_id, protocol_ids)
        if str(stream.get_protocol()) == str(KAD_PROTOCOL):
            _read_bounded(stream, peer_id, counters, inbound=False)
        return stream

    setattr(host, "new_stream", new_stream)  # noqa: B010 - an instance override, not a typed attribute


def _bound_requests(host: IHost, dht: KadDHT, counters: BetanetCounters) -> Callable[[INetStream], Awaitable[None]]:
    """Server mode: each request a peer sends us is read the same way before py-libp2p's handler verifies its
    senderRecord (and an ADD_PROVIDER's provider records): at most py-libp2p's own MAX_DHT_MESSAGE_SIZE, a costly
    senderRecord refuses the request (the stream is reset), a costly provider record is dropped, more than
    :data:`MAX_ANSWER_PEERS` named peers refuse it (an honest request names one provider, itself). The DHT
    protocol's handler is registered again, wrapped (libp2p is pinned below 0.9); returned, for
    :func:`.dht_store.gate_requests` to wrap in turn."""
    handle = dht.handle_stream

    async def handle_bounded(stream: INetStream) -> None:
        _read_bounded(stream, stream.muxed_conn.peer_id, counters, inbound=True)
        await handle(stream)

    host.set_stream_handler(KAD_PROTOCOL, handle_bounded)
    return handle_bounded


def _read_bounded(stream: INetStream, peer_id: ID, counters: BetanetCounters, *, inbound: bool) -> None:
    """Make ``stream`` (this instance) hand its reader each message only once it is read whole and bounded (see
    :func:`_bound_answers`, :func:`_bound_requests`). What we write on an outbound stream is kept (up to
    :data:`MAX_DHT_ANSWER_BYTES`): the first request's key orders the named peers. A stream that ends early hands
    over what came, as it came."""
    raw_read, raw_write = stream.read, stream.write
    max_bytes = MAX_DHT_MESSAGE_SIZE if inbound else MAX_DHT_ANSWER_BYTES
    kind = "request" if inbound else "answer"
    asked = bytearray()  # our request(s) on this stream, as written
    ready = bytearray()  # the current message, bounded, as py-libp2p may read it

    async def write(data: bytes) -> None:
        if not inbound and len(asked) < MAX_DHT_ANSWER_BYTES:
            asked.extend(data[: MAX_DHT_ANSWER_BYTES - len(asked)])
        await raw_write(data)

    async def refuse(why: str) -> DhtMessageRefused:
        if inbound:
            counters.dht_requests_refused += 1
        else:
            counters.dht_answers_refused += 1
        with contextlib.suppress(Exception):  # best effort: the peer stops sending
            await stream.reset()
        return DhtMessageRefused(f"DHT {kind} from {peer_id} refused: {why}")

    async def next_message() -> bytes:
        prefix, length = await read_length_prefix(raw_read)
        if length is None:
            return prefix  # ended, or not a uvarint: py-libp2p's reader sees it so
        if length > max_bytes:
            raise await refuse(f"{length} bytes (at most {max_bytes})")
        body = await read_body(raw_read, length)
        if len(body) < length:
            return prefix + body  # ended early: py-libp2p's reader sees it so
        try:
            bounded = _bound_message_untrusted(body, _request_key(bytes(asked)), inbound=inbound)
        except DhtMessageRefused as exc:
            counters.dht_records_dropped += exc.costly_records
            raise await refuse(str(exc)) from exc
        counters.dht_records_dropped += bounded.records_dropped
        if bounded.cut:
            counters.dht_answers_cut += 1
            log.debug("DHT answer from %s named more than %d peers: cut", peer_id, ANSWER_PEERS)
        if bounded.body is None:
            return prefix + body
        return bytes(varint.encode_uvarint(len(bounded.body))) + bounded.body

    async def read(n: int | None = None) -> bytes:
        if not ready:
            ready.extend(await next_message())
        take = len(ready) if n is None or n < 0 else min(n, len(ready))
        out = bytes(ready[:take])
        del ready[:take]
        return out

    setattr(stream, "read", read)  # noqa: B010 - instance overrides, not typed attributes
    setattr(stream, "write", write)  # noqa: B010


def _request_key(asked: bytes) -> bytes | None:
    """The key of the first request written on a stream (varint-prefixed Message), if it parses."""
    try:
        length, used = varint.decode_varint_with_size(asked)
        return Message.FromString(asked[used : used + length]).key or None
    except Exception:  # noqa: BLE001 - our own bytes, cut at MAX_DHT_ANSWER_BYTES: no key then
        return None


class DhtMessageRefused(IOException):
    """A DHT message (an answer to us, or a request to our server) the node does not hand py-libp2p: its stream
    is reset. ``costly_records``: the costly signed records that refused it (see :func:`_cheap_record`)."""

    def __init__(self, why: str, costly_records: int = 0) -> None:
        super().__init__(why)
        self.costly_records = costly_records


@dataclasses.dataclass(frozen=True, slots=True)
class BoundedMessage:
    """What :func:`_bound_message_untrusted` made of a message: ``body`` None when it goes on unchanged."""

    body: bytes | None
    records_dropped: int  # named peers' signed records dropped: under a costly key
    cut: bool  # its named peers were cut to ANSWER_PEERS


def _bound_message_untrusted(body: bytes, key: bytes | None, *, inbound: bool) -> BoundedMessage:
    """``body`` without the named peers' signed records under costly keys (:func:`_cheap_record`), an answer's
    closerPeers cut to the :data:`ANSWER_PEERS` distinct peers closest to ``key`` (py-libp2p's distance: XOR of
    SHA-256 digests; in answer order without a key) and its providerPeers to the first :data:`ANSWER_PEERS`
    distinct ones. Raises :class:`DhtMessageRefused` for more than :data:`MAX_ANSWER_PEERS` closerPeers or
    providerPeers (counted before any loop: an honest server names at most k of each, so the record walk, the
    de-duplication and the sort below handle at most 2k; 98,272 empty providerPeers fit in 192 KiB and held the
    event loop 0.33 s) and for a senderRecord under a costly key. A body that does not parse goes on unchanged:
    py-libp2p's own parse refuses it."""
    try:
        message = Message.FromString(body)
    except DecodeError:
        return BoundedMessage(None, 0, cut=False)
    if len(message.closerPeers) > MAX_ANSWER_PEERS or len(message.providerPeers) > MAX_ANSWER_PEERS:
        raise DhtMessageRefused(
            f"names {len(message.closerPeers)} closer and {len(message.providerPeers)} provider peers "
            f"(at most {MAX_ANSWER_PEERS} each)"
        )
    if message.HasField("senderRecord") and not _cheap_record(message.senderRecord):
        raise DhtMessageRefused("its senderRecord is under a key too costly to verify", costly_records=1)
    dropped = 0
    for peer in [*message.closerPeers, *message.providerPeers]:
        if peer.HasField("signedRecord") and not _cheap_record(peer.signedRecord):
            peer.ClearField("signedRecord")
            dropped += 1
    cut = False
    for field, ranked in (("closerPeers", True), ("providerPeers", False)):
        peers = getattr(message, field)
        if inbound or len(peers) <= ANSWER_PEERS:
            continue
        first: dict[bytes, Message.Peer] = {}
        for peer in peers:
            first.setdefault(peer.id, peer)
        distinct = list(first.values())
        if ranked and key is not None:
            target = int.from_bytes(hashlib.sha256(key).digest(), "big")
            distinct.sort(key=lambda p: int.from_bytes(hashlib.sha256(p.id).digest(), "big") ^ target)
        kept = distinct[:ANSWER_PEERS]
        message.ClearField(field)
        getattr(message, field).extend(kept)
        cut = True
    changed = cut or dropped > 0
    return BoundedMessage(message.SerializeToString() if changed else None, dropped, cut=cut)


def _cheap_record(envelope: bytes) -> bool:
    """Whether a signed-record envelope's signature costs no more to verify than an Ed25519, secp256k1 or usual
    RSA one: its key is Ed25519 or secp256k1 (fixed cost), or RSA of at most :data:`MAX_RSA_MODULUS_BITS` with a
    public exponent of at most :data:`MAX_RSA_EXPONENT`. py-libp2p caps the modulus, never the exponent: a
    4095-bit exponent made one check ~25 ms. Any other key (or one that does not parse) is not cheap: py-libp2p
    would refuse it anyway. Costs one protobuf parse, and one DER parse for RSA (~0.2 ms at 4096 bits)."""
    try:
        key = envelope_pb2.Envelope.FromString(envelope).public_key
    except DecodeError:
        return False
    if key.Type in (crypto_pb2.KeyType.Ed25519, crypto_pb2.KeyType.Secp256k1):
        return True
    if key.Type != crypto_pb2.KeyType.RSA:
        return False
    try:
        public = load_der_public_key(key.Data)
    except (ValueError, UnsupportedAlgorithm):
        return False
    return (
        isinstance(public, rsa.RSAPublicKey)
        and public.key_size <= MAX_RSA_MODULUS_BITS
        and public.public_numbers().e <= MAX_RSA_EXPONENT
    )


class PeerRouting:
    """libp2p's KadDHT on ``host`` (client mode: lookups only; server mode: also answers others' lookups, see
    ``betanet.dht_mode``), owned by the BetaNet transport's nursery."""

    def __init__(
        self,
        host: IHost,
        counters: BetanetCounters,
        notify: Callable[[], None],
        timeout_s: float,
        *,
        refresh: bool = True,
        server: bool = False,
    ) -> None:
        self._host = host
        self._counters = counters
        self._notify = notify
        self._timeout_s = timeout_s
        self.dht = KadDHT(host, DHTMode.SERVER if server else DHTMode.CLIENT)
        if not refresh:
            _never_refresh(host, self.dht)
        _table_takes_peerstore_addrs(host, self.dht)
        _answer_by_scope(self.dht)
        _bound_answers(host, counters)
        # What other peers can make a server do, store or hold: each request read bounded twice — first by
        # dht_store's reader (64 KiB, PUT_VALUE refused, 10 s per request, 2 streams per peer), then by
        # _bound_requests' (costly signed records, named peers) — and providers bounded.
        self.providers: ProviderBounds | None = (
            gate_requests(host, self.dht, counters, notify, handle=_bound_requests(host, self.dht, counters))
            if server
            else None
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, recv = trio.open_memory_channel[ID](IDENTIFY_QUEUE)

        def identified(peer_id: ID) -> None:  # called synchronously from the host's identify task
            try:
                send.send_nowait(peer_id)
            except trio.WouldBlock:
                self._counters.identify_skipped += 1
            except trio.ClosedResourceError:
                pass

        undo = _watch_identify(self._host, identified)
        try:
            async with background_trio_service(self.dht):
                for peer_id in self._host.get_network().get_connections_map():  # connected before we watched
                    identified(peer_id)
                task_status.started()
                async for peer_id in recv:
                    await self._route(peer_id)
        finally:
            undo()
            send.close()

    async def _route(self, peer_id: ID) -> None:
        """Add an identified peer to the routing table if it serves the DHT (the peerstore, filled by the
        host's identify, says which protocols it speaks)."""
        if not self._host.get_network().get_connections(peer_id):
            return  # gone already, or identify never ran (no connection)
        try:
            known = bool(self._host.get_peerstore().get_protocols(peer_id))
        except PeerStoreError:  # the peer is not in the peerstore at all
            known = False
        if not known:
            log.debug("identify of %s did not complete; not routing to it", peer_id)
            return
        self._counters.identified += 1
        try:
            with trio.move_on_after(self._timeout_s):
                if await self.dht.add_peer(peer_id):
                    self._counters.dht_routing_added += 1
        except Exception as exc:  # noqa: BLE001 - the routing table queries the peerstore; a vanished peer raises there
            log.debug("adding %s to the DHT routing table failed: %s", peer_id, exc or type(exc).__name__)
        self._notify()

    async def find(self, peer_id: ID) -> list[multiaddr.Multiaddr]:
        """Look ``peer_id`` up through the DHT; its known addresses (empty when nobody knows it)."""
        self._counters.dht_lookups += 1
        info = None
        with trio.move_on_after(self._timeout_s), own_audience():
            info = await self.dht.find_peer(peer_id)
        addrs = [a for a in (info.addrs if info is not None else []) if str(a)]
        if addrs:
            self._counters.dht_found += 1
        self._notify()
        return addrs
