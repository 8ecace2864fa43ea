"""What other peers can make a BetaNet DHT server store (``betanet.dht_mode`` = "server", or "auto" with
``relay = "hop"``): py-libp2p 0.8's KadDHT request handler (``_do_handle_stream`` in kad_dht/kad_dht.py) reads each
request of up to 4 MiB and keeps what PUT_VALUE and ADD_PROVIDER bring, bounded only in entries (50,000 values of
up to 1 MiB each for any key outside the /pk and /ipns namespaces; providers: 20 per key, any number of keys, any
number of addresses each). Measured on loopback against a real server host (py-libp2p alone): 40 PUT_VALUE of 1 MB
stored 40 records holding 38 MiB (~48 GiB at its entry bound); 10 ADD_PROVIDER of one peer (its rate limit: 10 per
10 s per peer, and identities are free) with 60,000 addresses each added 65 MiB of Python objects.

So, on this node:

- **Requests are read first, bounded** (:func:`gate_requests`): one request of more than
  :data:`MAX_DHT_REQUEST_BYTES` resets the stream unread (``dht_requests_refused``). An honest request is small:
  a key, the asker's signed record, and for ADD_PROVIDER the provider's own addresses (at most
  :data:`~.scope.MAX_OWN_ADDRS`).
- **A peer is served on at most :data:`DHT_STREAMS_PER_PEER` streams at once** (``dht_streams_refused``), each
  request whole within :data:`DHT_REQUEST_TIMEOUT_S` (``dht_requests_timed_out``) and each stream whole (requests,
  answers, reset) within :data:`DHT_STREAM_DEADLINE_S` (``dht_streams_expired``; one stuck writing to a peer that
  stopped reading has that peer's connections closed: ``dht_streams_closed``): py-libp2p serves 12 streams at
  once in all, without a timeout, so one peer's silent streams locked every other asker out, and 6 peers that
  stopped reading our answers held all 12 slots for as long as they liked. When all 12 are taken, a newcomer
  pre-empts the longest-held stream of the peer holding the most (``dht_streams_preempted``), else it is refused
  (``dht_slots_refused``: py-libp2p's own refusals were not counted).
- **PUT_VALUE is refused** (``dht_puts_refused``: the stream is reset, nothing parsed by py-libp2p, nothing stored).
  This node never puts or gets DHT values itself (peer routing only: FIND_NODE), so holding other peers' values
  serves nobody here; a value's publisher stores it at the other DHT servers closest to its key. GET_VALUE is still
  answered (no value: the closest peers).
- **ADD_PROVIDER's records are bounded** (:class:`ProviderBounds`): at most :data:`PROVIDER_ADDRS` addresses
  kept per record (the rest counted in ``peer_addrs_refused``), at most :data:`MAX_PROVIDER_RECORD_BYTES` per
  record, :data:`MAX_PROVIDER_RECORDS_PER_PEER` records and :data:`MAX_PROVIDER_BYTES_PER_PEER` bytes per
  providing peer (ADD_PROVIDER names only its sender as provider, so the provider is the sender), and
  :data:`MAX_PROVIDER_RECORDS` records and :data:`MAX_PROVIDER_BYTES` bytes in all. A peer at its own bound is
  refused (``dht_providers_refused``), and so is a record for a key that has py-libp2p's k (20) providers already
  (py-libp2p would drop it); when the store is full, expired records go first, then the oldest record of
  the peer holding the largest share, and only if that share is larger than the newcomer's (one peer never evicts
  another's records to grow past it: ``dht_providers_evicted``).

A node that is not a DHT server does not register the DHT protocol: a peer's request stream is refused at protocol
negotiation and nothing is read or stored. Instance overrides (libp2p is pinned below 0.9); KadDHT's
``switch_mode`` would register its unbounded handler again (this node never calls it).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable

import trio
from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht import KadDHT
from libp2p.kad_dht.common import BUCKET_SIZE
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.utils import varint

from node.errors import TransportError
from node.transports.betanet.counters import BetanetCounters
from node.transports.betanet.scope import MAX_OWN_ADDRS, close_stuck_peer

log = logging.getLogger("village.betanet.dht")

# One request to our DHT server, bytes. An honest request carries a key (≤ 80 B for ADD_PROVIDER), the asker's
# signed record and, for ADD_PROVIDER, the provider's own addresses (≤ 32) with their signed record: a few KB.
# py-libp2p's own bound is 4 MiB (MAX_DHT_MESSAGE_SIZE).
MAX_DHT_REQUEST_BYTES = 64 * 1024
# py-libp2p serves 12 inbound DHT streams at once and resets the rest at once (kad_dht.py, _inbound_limiter), with no
# timeout: 12 streams one peer opened and left silent locked every other asker out. So a peer is served on at most
# this many streams at once, and each request must arrive whole within DHT_REQUEST_TIMEOUT_S (seconds) of the
# stream's start or of the answer before (an honest asker sends its request at once; py-libp2p's own asker waits
# QUERY_TIMEOUT = 10 s for an answer).
DHT_STREAMS_PER_PEER = 2
DHT_REQUEST_TIMEOUT_S = 10.0
# The whole life of one inbound DHT stream, seconds: its requests, our answers and the reset (py-libp2p's handler
# has no bound on writing an answer: a peer that stopped reading held its slot for as long as the connection lived).
# An honest asker's stream lives a few ms (one request, one answer; py-libp2p's asker opens a stream per query).
# Cut there, the stream is reset (``dht_streams_expired``); one cut while writing an answer (the peer did not take
# it), a handler still running DHT_STREAM_CUT_GRACE_S (seconds) later, or a reset not written within
# DHT_RESET_BOUND_S (seconds) has the peer's connections closed (``dht_streams_closed``).
DHT_STREAM_DEADLINE_S = 5.0
DHT_STREAM_CUT_GRACE_S = 1.0
DHT_RESET_BOUND_S = 1.0
# When py-libp2p's 12 slots are all taken, a newcomer pre-empts the longest-held stream of the peer holding the most
# slots (more than the newcomer's peer) if held this long, seconds (``dht_streams_preempted``), and waits at most
# DHT_PREEMPT_WAIT_S (seconds) for its slot: else it is refused (``dht_slots_refused``).
DHT_PREEMPT_AFTER_S = 1.0
DHT_PREEMPT_WAIT_S = 0.5
PROVIDER_ADDRS = MAX_OWN_ADDRS  # addresses kept per provider record (as many as a peer may store for itself)
# One provider record as counted here: its key plus its addresses as binary multiaddrs (32 IPv6 QUIC addresses:
# ~1 KB). py-libp2p holds each as Python objects: ~3x that in memory.
MAX_PROVIDER_RECORD_BYTES = 4 * 1024
MAX_PROVIDER_RECORDS_PER_PEER = 128  # provider records one peer may hold here (keys it provides)
MAX_PROVIDER_BYTES_PER_PEER = 128 * 1024  # bytes (as counted above) one peer's provider records may hold
MAX_PROVIDER_RECORDS = 4096  # provider records in all (32 peers at their own bound)
MAX_PROVIDER_BYTES = 4 * 1024 * 1024  # bytes (as counted above) of all provider records


class DhtRequestRefused(TransportError):
    """Remote: a DHT request this server does not take (PUT_VALUE); the stream is reset."""


def gate_requests(
    host: IHost,
    dht: KadDHT,
    counters: BetanetCounters,
    notify: Callable[[], None] = lambda: None,
    *,
    handle: Callable[[INetStream], Awaitable[None]] | None = None,
) -> ProviderBounds:
    """Put the bounds of the module docstring between ``host``'s DHT server (``dht``) and the peers asking it:
    each inbound DHT stream's requests are read by :func:`_read_requests_bounded` before py-libp2p's handler
    sees them, a peer has at most :data:`DHT_STREAMS_PER_PEER` of py-libp2p's 12 handler slots, and the provider
    store takes records through :class:`ProviderBounds`, which is returned. ``notify`` is called when a stream
    is refused, timed out, expired or pre-empted (the transport's status watchers). ``handle``: the handler to serve
    a stream that passes (default: py-libp2p's own, ``dht.handle_stream``; dht.py passes its own bounded wrapper of
    it)."""
    bounds = ProviderBounds(dht, counters)
    serve = handle if handle is not None else dht.handle_stream
    limiter = dht._inbound_limiter  # py-libp2p's 12 handler slots (kad_dht.py), read only
    serving: dict[ID, list[_Served]] = {}  # peer -> its inbound DHT streams being served, oldest first

    def refuse_count(cause: str) -> None:
        setattr(counters, cause, getattr(counters, cause) + 1)
        notify()

    async def preempt_for(peer: ID) -> bool:
        """Free one of py-libp2p's slots (all taken) for ``peer``: reset the longest-held stream of the peer holding
        the most slots, if that peer holds more than ``peer`` and the stream is older than
        :data:`DHT_PREEMPT_AFTER_S`. Whether a slot is free now."""
        mine = len(serving.get(peer, ()))
        # only streams still holding a slot: one pre-empted or expired already is on its way out (its reset may take
        # up to DHT_RESET_BOUND_S), choosing it again refused every newcomer meanwhile (session 9 review, M1)
        live = [[s for s in held if s.live] for held in serving.values()]
        victim = max((held for held in live if held), key=lambda held: (len(held), -held[0].started), default=None)
        if victim is None or len(victim) <= mine or trio.current_time() - victim[0].started < DHT_PREEMPT_AFTER_S:
            return False
        held = victim[0]
        held.preempted = True
        held.scope.cancel()
        if held.shield is not None:  # a write in progress: it has half the wait to end, else it is cut (stuck)
            held.shield.deadline = min(held.shield.deadline, trio.current_time() + DHT_PREEMPT_WAIT_S / 2)
        refuse_count("dht_streams_preempted")
        with trio.move_on_after(DHT_PREEMPT_WAIT_S):
            await held.ended.wait()
        return limiter.borrowed_tokens < limiter.total_tokens

    async def handle_bounded(stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if len(serving.get(peer, ())) >= DHT_STREAMS_PER_PEER:
            refuse_count("dht_streams_refused")
            await _reset(stream)
            return
        if limiter.borrowed_tokens >= limiter.total_tokens and not await preempt_for(peer):
            refuse_count("dht_slots_refused")  # py-libp2p would reset it unseen: counted here
            await _reset(stream)
            return
        served = _Served()
        serving.setdefault(peer, []).append(served)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_close_if_stuck, host, peer, served, counters, notify)
                try:
                    with served.scope:
                        _read_requests_bounded(stream, counters, notify)
                        served.watch_writes(stream)
                        await serve(stream)
                finally:
                    served.ended.set()
                if served.scope.cancel_called:  # its deadline passed (or pre-empted), whether or not the cut caught it
                    if not served.preempted:
                        refuse_count("dht_streams_expired")
                    # a write cut at its shield's deadline, or a reset not written: the peer takes nothing
                    served.stuck = served.stuck or not await _reset(stream)
                served.done.set()
        finally:
            held = serving[peer]
            held.remove(served)
            if not held:
                del serving[peer]

    host.set_stream_handler(KAD_PROTOCOL, handle_bounded)
    return bounds


class _Served:
    """One inbound DHT stream being served: its whole life's scope (cancelled at its deadline or when pre-empted);
    ``ended`` is set once the handler has returned (py-libp2p's slot freed), ``done`` once the stream's reset after
    a cut has been written too (or could not be: ``stuck``)."""

    def __init__(self) -> None:
        self.started = trio.current_time()
        self.scope = trio.CancelScope(deadline=self.started + DHT_STREAM_DEADLINE_S)
        self.ended = trio.Event()
        self.done = trio.Event()
        self.preempted = False
        self.writing = False  # an answer being written (stream.write not returned)
        self.shield: trio.CancelScope | None = None  # that write's shield (its own deadline)
        self.stuck = False

    @property
    def live(self) -> bool:
        """Still holding its slot: neither pre-empted, cut at its deadline, nor ended."""
        return not (self.preempted or self.scope.cancel_called or self.ended.is_set())

    def watch_writes(self, stream: INetStream) -> None:
        """Track whether ``stream`` (this instance) is writing: ``writing``."""
        raw_write = stream.write

        async def write(data: bytes) -> None:
            # A write is never cut midway by the stream's deadline or a pre-emption (a send cut midway leaves the
            # connection's framing unknown, and the cut used to land at the write's first checkpoint — yamux's
            # locks, before a byte went — and closed an honest peer's connections): it is shielded, and the cut lands
            # at the checkpoint after it. One the peer never takes is ended by _close_if_stuck closing the
            # connection (DHT_STREAM_CUT_GRACE_S after the deadline), which wakes the blocked send.
            # The shield has its own deadline (the stream's + DHT_STREAM_CUT_GRACE_S, moved closer when the stream is
            # pre-empted): a write still blocked then is cut, the stream is stuck and its peer's connections are
            # closed (a shutdown, which cancels the watchdog too, waits for no peer that stopped reading).
            self.writing = True
            shield = trio.CancelScope(shield=True, deadline=self.scope.deadline + DHT_STREAM_CUT_GRACE_S)
            self.shield = shield
            try:
                with shield:
                    await raw_write(data)
            finally:
                self.writing = False
                self.shield = None
            if shield.cancelled_caught:
                self.stuck = True
                raise DhtRequestRefused(f"DHT answer to {stream.muxed_conn.peer_id} not taken in time")
            await trio.lowlevel.checkpoint()

        setattr(stream, "write", write)  # noqa: B010 - an instance override, not a typed attribute


async def _reset(stream: INetStream) -> bool:
    """Reset ``stream`` within :data:`DHT_RESET_BOUND_S` (seconds): the RST goes through yamux's connection-wide
    write lock, which a write to a peer that stopped reading (a zero TCP window) holds forever. Whether it ended."""
    with trio.move_on_after(DHT_RESET_BOUND_S) as cut, contextlib.suppress(Exception):  # best effort: gone anyway
        await stream.reset()
    return not cut.cancelled_caught


async def _close_if_stuck(
    host: IHost, peer: ID, served: _Served, counters: BetanetCounters, notify: Callable[[], None]
) -> None:
    """Close ``peer``'s connections if the stream ``served`` is stuck: not done :data:`DHT_STREAM_CUT_GRACE_S`
    (seconds) after its deadline (a write the peer never takes: writes are not cut midway), or its reset after a
    cut not written. A cut handler
    returns in ms unless its write (or reset) waits on a peer that stopped reading; closing the socket ends the
    blocked send, then the handler, which frees its slot (measured on real sockets by the session 9 review).
    Counted in ``dht_streams_closed``."""
    try:
        with trio.move_on_at(served.scope.deadline + DHT_STREAM_CUT_GRACE_S):
            await served.done.wait()
            if not served.stuck:
                return
    except trio.Cancelled:  # from outside (shutdown): a write in progress may wait on a peer that stopped reading
        if served.writing:
            await close_stuck_peer(host, peer)  # (shielded and bounded)
        raise
    counters.dht_streams_closed += 1
    notify()
    log.warning("DHT stream from %s: stuck writing (the peer stopped reading): closing its connections", peer)
    await close_stuck_peer(host, peer)


async def read_length_prefix(raw_read: Callable[[int], Awaitable[bytes]]) -> tuple[bytes, int | None]:
    """A DHT message's uvarint length prefix, read a byte at a time from ``raw_read``: the bytes read and the length,
    or None for it when the stream ended first or the prefix runs past 10 bytes (64 bits; py-libp2p's reader refuses
    what was read). Shared by the readers of answers (dht.py) and of requests (:func:`_read_requests_bounded`)."""
    prefix = bytearray()
    while len(prefix) < 10:
        byte = await raw_read(1)
        if not byte:
            return bytes(prefix), None
        prefix += byte
        if byte[0] & 0x80 == 0:
            return bytes(prefix), varint.decode_uvarint(bytes(prefix))
    return bytes(prefix), None


async def read_body(raw_read: Callable[[int], Awaitable[bytes]], length: int) -> bytes:
    """``length`` bytes from ``raw_read`` (the caller bounded ``length``), fewer if the stream ended first."""
    body = bytearray()
    while len(body) < length:
        chunk = await raw_read(length - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _read_requests_bounded(stream: INetStream, counters: BetanetCounters, notify: Callable[[], None]) -> None:
    """Make ``stream`` (this instance) hand py-libp2p's handler each request only once it is read whole: one over
    :data:`MAX_DHT_REQUEST_BYTES`, a PUT_VALUE, or one not whole within :data:`DHT_REQUEST_TIMEOUT_S` of the
    stream's start or of the previous request resets the stream, and the handler's read raises
    :class:`DhtRequestRefused` (py-libp2p's handler ends there, logging its text at WARNING, and frees its slot).
    A stream that ends early hands over what came, as it came."""
    raw_read = stream.read
    ready = bytearray()  # the current request, as py-libp2p may read it

    async def refuse(why: str) -> DhtRequestRefused:
        with contextlib.suppress(Exception):  # best effort: the peer stops sending
            await stream.reset()
        return DhtRequestRefused(f"DHT request from {stream.muxed_conn.peer_id} refused: {why}")

    async def next_request() -> bytes:
        prefix, length = await read_length_prefix(raw_read)
        if length is None:
            return prefix  # ended, or not a uvarint: py-libp2p's reader sees it so
        if length > MAX_DHT_REQUEST_BYTES:
            counters.dht_requests_refused += 1
            raise await refuse(f"{length} bytes (at most {MAX_DHT_REQUEST_BYTES})")
        body = await read_body(raw_read, length)
        if len(body) < length:
            return prefix + body  # ended early: py-libp2p's reader sees it so
        try:
            kind = Message.FromString(body).type
        except DecodeError:
            return prefix + body  # py-libp2p's parse refuses it
        if kind == Message.MessageType.PUT_VALUE:
            counters.dht_puts_refused += 1
            raise await refuse("PUT_VALUE (this node stores no DHT values)")
        return prefix + body

    async def read(n: int | None = None) -> bytes:
        if not ready:
            got: bytes | None = None
            with trio.move_on_after(DHT_REQUEST_TIMEOUT_S):
                got = await next_request()
            if got is None:
                counters.dht_requests_timed_out += 1
                notify()
                raise await refuse(f"no whole request within {DHT_REQUEST_TIMEOUT_S} s")
            ready.extend(got)
        take = len(ready) if n is None or n < 0 else min(n, len(ready))
        out = bytes(ready[:take])
        del ready[:take]
        return out

    setattr(stream, "read", read)  # noqa: B010 - an instance override, not a typed attribute


class ProviderBounds:
    """The provider store's bounds in records and bytes, per providing peer and in all (module docstring). An
    instance override of ``dht.provider_store.add_provider``, which py-libp2p's handler calls for each provider an
    ADD_PROVIDER names (only its sender). Every record enters through here, so the order records were added (or
    refreshed) in is their age order: the oldest are checked for expiry (or for having been dropped by py-libp2p's
    own ``get_providers``/``cleanup_expired``) first, O(1) each. The largest share comes from a heap of
    (share, peer) entries, stale ones skipped as they surface. One add at a full store, measured: 0.02 ms (4,096
    peers of one record each: refused), 0.08 ms (32 peers of 128: evicting); a scan of every record took 20 ms."""

    def __init__(self, dht: KadDHT, counters: BetanetCounters) -> None:
        self._store = dht.provider_store
        self._counters = counters
        self._add = self._store.add_provider
        self._keys: dict[str, dict[bytes, int]] = {}  # provider (str) -> its keys, oldest first -> record bytes
        self._bytes: dict[str, int] = {}  # provider (str) -> the bytes of its records
        self._age: dict[tuple[str, bytes], None] = {}  # every record held, oldest first
        self._largest: list[tuple[float, str]] = []  # heap of (-share, provider); stale entries skipped
        self.records = 0
        self.bytes = 0
        setattr(self._store, "add_provider", self.add_provider)  # noqa: B010 - an instance override

    def held(self, provider: ID) -> tuple[int, int]:
        """The records and bytes ``provider`` holds here."""
        return len(self._keys.get(str(provider), {})), self._bytes.get(str(provider), 0)

    def add_provider(self, key: bytes, provider: PeerInfo) -> None:
        if len(provider.addrs) > PROVIDER_ADDRS:
            self._counters.peer_addrs_refused += len(provider.addrs) - PROVIDER_ADDRS
            provider = PeerInfo(provider.peer_id, provider.addrs[:PROVIDER_ADDRS])
        size = len(key) + sum(len(a.to_bytes()) for a in provider.addrs)
        who = str(provider.peer_id)
        if (
            size > MAX_PROVIDER_RECORD_BYTES
            or self._key_full(who, key)
            or not self._fits_peer(who, key, size)
            or not self._make_room(who, key, size)
        ):
            self._counters.dht_providers_refused += 1
            log.debug("provider record of %s for key %s (%d bytes) refused: bounds", who, key.hex(), size)
            return
        self._add(key, provider)
        if who not in self._store.providers.get(key, {}):
            return  # py-libp2p's own bound: k (20) providers per key, the first ones kept
        self._drop(who, key)  # a refresh replaces its own record (and becomes its newest)
        self._keys.setdefault(who, {})[key] = size
        self._bytes[who] = self._bytes.get(who, 0) + size
        self._age[(who, key)] = None
        self.records += 1
        self.bytes += size
        self._push(who)

    def _key_full(self, who: str, key: bytes) -> bool:
        """Whether py-libp2p's store would drop ``who``'s record for ``key``: it keeps the first BUCKET_SIZE (k, 20)
        providers of a key, and ``who`` is not one of them. Checked before making room: else others' records would
        be evicted for a record then dropped."""
        providers = self._store.providers.get(key, {})
        return len(providers) >= BUCKET_SIZE and who not in providers

    def _after(self, who: str, key: bytes, size: int) -> tuple[int, int]:
        """The records and bytes ``who`` would hold with this record (a refresh replaces its own)."""
        keys = self._keys.get(who, {})
        return len(keys) + (key not in keys), self._bytes.get(who, 0) - keys.get(key, 0) + size

    def _fits_peer(self, who: str, key: bytes, size: int) -> bool:
        records, held = self._after(who, key, size)
        if records > MAX_PROVIDER_RECORDS_PER_PEER or held > MAX_PROVIDER_BYTES_PER_PEER:
            for gone in [k for k in self._keys.get(who, {}) if not self._kept(who, k)]:  # ≤ its 128 records
                self._drop(who, gone)
            records, held = self._after(who, key, size)
        return records <= MAX_PROVIDER_RECORDS_PER_PEER and held <= MAX_PROVIDER_BYTES_PER_PEER

    def _full(self, who: str, key: bytes, size: int) -> bool:
        keys = self._keys.get(who, {})
        records = self.records + (key not in keys)
        return records > MAX_PROVIDER_RECORDS or self.bytes - keys.get(key, 0) + size > MAX_PROVIDER_BYTES

    def _kept(self, who: str, key: bytes) -> bool:
        """Whether py-libp2p's store still holds ``who``'s record for ``key``, unexpired."""
        record = self._store.providers.get(key, {}).get(who)
        return record is not None and not record.is_expired()

    def _make_room(self, who: str, key: bytes, size: int) -> bool:
        """Free room in all for ``who``'s record: expired records first, then the oldest record of the peer holding
        the largest share, while that share exceeds the one ``who`` would hold with this record."""
        while self._full(who, key, size) and self._age:
            oldest_who, oldest_key = next(iter(self._age))
            if self._kept(oldest_who, oldest_key):
                break
            self._evict(oldest_who, oldest_key)  # expired (or dropped by py-libp2p already): not counted
        share = self._share(*self._after(who, key, size))
        while self._full(who, key, size):
            victim = self._largest_holder()
            if victim is None or victim == who or self._share_of(victim) <= share:
                return False
            self._evict(victim, next(iter(self._keys[victim])))
            self._counters.dht_providers_evicted += 1
        return True

    def _largest_holder(self) -> str | None:
        while self._largest:
            share, who = self._largest[0]
            if who in self._keys and -share == self._share_of(who):
                return who
            heapq.heappop(self._largest)  # stale: that peer's share changed since
        return None

    def _push(self, who: str) -> None:
        if who in self._keys:
            heapq.heappush(self._largest, (-self._share_of(who), who))
        if len(self._largest) > 4 * len(self._keys) + 64:  # stale entries: rebuild, O(peers)
            self._largest = [(-self._share_of(p), p) for p in self._keys]
            heapq.heapify(self._largest)

    def _share_of(self, who: str) -> float:
        return self._share(len(self._keys[who]), self._bytes[who])

    @staticmethod
    def _share(records: int, size: int) -> float:
        """A peer's share of the store: the larger of its fractions of the record and byte bounds."""
        return max(records / MAX_PROVIDER_RECORDS, size / MAX_PROVIDER_BYTES)

    def _evict(self, who: str, key: bytes) -> None:
        providers = self._store.providers.get(key, {})
        providers.pop(who, None)
        if not providers:
            self._store.providers.pop(key, None)
        self._drop(who, key)

    def _drop(self, who: str, key: bytes) -> None:
        keys = self._keys.get(who)
        if keys is None or key not in keys:
            return
        size = keys.pop(key)
        del self._age[(who, key)]
        self.records -= 1
        self.bytes -= size
        self._bytes[who] -= size
        if not keys:
            del self._keys[who], self._bytes[who]
        self._push(who)
