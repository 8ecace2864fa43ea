"""One QUIC connection driven event by event from trio, for py-libp2p's swarm: the adapter half of BetaNet's
QUIC (the transport and listener are in :mod:`.quic_transport`).

aioquic's ``QuicConnection`` is the sans-IO core. :class:`QuicConn` is its thin adapter, shaped like hypercorn's
``protocol/quic.py``: every input (a batch of datagrams, a write, the timer) is followed by one :meth:`flush`
that takes the core's events, sends its datagrams and re-arms the connection's single timer (a cancel scope
whose deadline follows ``get_timer()``). A stream reader sleeps until data for *its* stream arrives. There is
no polling loop, no sleep, and no read timeout inside (BetanetLink has its own stall timeout).

It replaces py-libp2p 0.8's ``QUICConnection``/``QUICStream`` (transport/quic/connection.py, stream.py), which
poll aioquic in a loop with ``trio.sleep(0.0001)`` between passes (connection.py lines 522-570), wake readers
per ~1 KB, reset streams idle for 30 s, and schedule work in nurseries that may already be closed.

Ownership: :meth:`QuicConn.run` owns the connection's tasks (its timer, and for a dialled connection its socket
reader) in one nursery; it is started in the swarm's background nursery (dial) or the listener's nursery
(inbound), both of which outlive it. Whatever ends ``run`` (close, the peer, cancellation at shutdown), its
``finally`` ends the connection synchronously: a CONNECTION_CLOSE is sent best-effort, streams and waiters
are woken, a dialled connection's socket is closed.

Bounds: un-acknowledged bytes per stream (writers wait); unread bytes per stream and per connection, by QUIC
flow control with credit granted as the node *reads* (:class:`ReadCredit`: aioquic alone grants credit when
data arrives, so a fast sender filled our buffers until the stream was reset); and inbound streams waiting
to be accepted.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import trio
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from libp2p.abc import IMuxedConn, IMuxedStream, IRawConnection
from libp2p.connection_types import ConnectionType
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedConnUnavailable, MuxedStreamClosed, MuxedStreamEOF, MuxedStreamReset
from libp2p.transport.quic.listener import ServerQuicConnection
from multiaddr import Multiaddr

from node.transports.betanet.counters import BetanetCounters

log = logging.getLogger("village.betanet.quic")

SEND_HIGH_WATER_BYTES = 1 << 20  # un-acknowledged bytes on a stream before write() waits (py-libp2p's value)
SEND_LOW_WATER_BYTES = 256 * 1024  # ... and the level at which it resumes (py-libp2p's value)
WRITE_CHUNK_BYTES = 64 * 1024  # a large write is queued in chunks so the watermark is checked between them
DEFAULT_STREAM_WINDOW_BYTES = 1 << 20  # flow-control window per stream (betanet.quic_stream_window_bytes)
CONNECTION_WINDOW_STREAMS = 4  # the connection's window is this many stream windows
DEFAULT_MAX_STREAMS = 16  # concurrent streams a peer may open on a connection (betanet.quic_max_streams_per_connection)
ACCEPT_QUEUE_STREAMS = 64  # inbound streams not yet accepted by the swarm; more are reset
DATAGRAMS_PER_WAKEUP = 64  # datagrams taken from the socket before the core's output is flushed
DATAGRAM_BYTES = 65_536  # recvfrom buffer
ERROR_NO_ERROR = 0x0  # QUIC application error codes we send
ERROR_STREAM_RESET = 0x1  # a stream reset by us (libp2p's STREAM_RESET_ERROR_CODE)
ERROR_OVER_LIMIT = 0x2  # a stream whose peer sent beyond its flow-control credit, or too many streams

Address = tuple[str, int]


class UdpSocket:
    """A non-blocking UDP socket; senders wait only while the kernel's send buffer is full."""

    def __init__(self, family: socket.AddressFamily, bind: Address, peer: Address | None = None) -> None:
        """Bound to ``bind``; with ``peer``, also connected to it, so that the kernel reports an ICMP "port
        unreachable" from it (ConnectionRefusedError from :meth:`receive_batch`) instead of dropping it."""
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.bind(bind)
            if peer is not None:
                self.sock.connect(peer)
        except OSError:
            self.sock.close()
            raise
        self._connected = peer is not None
        self._lock = trio.Lock()

    @property
    def local(self) -> Address:
        addr = self.sock.getsockname()
        return str(addr[0]), int(addr[1])

    async def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        for i, (data, addr) in enumerate(datagrams):
            try:
                self.sock.sendto(data, addr)
            except BlockingIOError:
                async with self._lock:
                    for data2, addr2 in datagrams[i:]:
                        while True:
                            try:
                                self.sock.sendto(data2, addr2)
                                break
                            except BlockingIOError:
                                await trio.lowlevel.wait_writable(self.sock)
                return
            except OSError:
                return  # unreachable/closed: QUIC's loss recovery or idle timeout deals with it

    def send_now(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Best effort, without waiting (used while ending a connection)."""
        for data, addr in datagrams:
            try:
                self.sock.sendto(data, addr)
            except OSError:
                return

    async def receive_batch(self) -> list[tuple[bytes, Address]]:
        """Wait for the socket to be readable, then take up to DATAGRAMS_PER_WAKEUP datagrams."""
        await trio.lowlevel.wait_readable(self.sock)
        batch: list[tuple[bytes, Address]] = []
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                data, addr = self.sock.recvfrom(DATAGRAM_BYTES)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                if self._connected:
                    raise  # the one peer of this socket has no socket on its port
                break  # an unconnected socket: a stale ICMP error about some earlier peer
            batch.append((data, (str(addr[0]), int(addr[1]))))
        return batch

    def close(self) -> None:
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)  # a task waiting on it gets ClosedResourceError
            self.sock.close()


def quic_multiaddr(addr: Address) -> Multiaddr:
    ip = addr[0]
    return Multiaddr(f"/{'ip6' if ':' in ip else 'ip4'}/{ip}/udp/{addr[1]}/quic-v1")


class ReadCredit(QuicConnection):
    """aioquic's ``QuicConnection`` with flow-control credit granted as the application reads.

    aioquic raises a stream's MAX_STREAM_DATA (doubling it) once half the window has *arrived*, and MAX_DATA
    likewise, whether or not anyone read the data, so a fast sender is never slowed down and the receiver's
    buffers grow without bound. Here the peer may send at most ``stream_window`` bytes beyond what the
    application has read on a stream, and ``connection_window`` bytes beyond what it has read on the whole
    connection; credit is announced once a quarter of a window has been read. A peer that sends beyond its
    credit is closed by aioquic itself (FLOW_CONTROL_ERROR). The application tells how much it holds unread
    with :attr:`unread_of` and :attr:`unread_total` (:class:`QuicConn` sets them).

    The connection's credit counts as held everything not yet *read*: the application's unread bytes, and what
    aioquic holds undelivered on a live stream (data beyond a gap: a peer that never sends byte 0 of a stream
    makes aioquic buffer the rest, and no event reaches us). Bytes of a stream aioquic has discarded are no
    longer held. So the bytes this connection holds never exceed ``connection_window``. The peer may also have
    at most ``max_streams`` bidirectional streams open at once (aioquic lets it open one more as each one is
    discarded) and no unidirectional stream (libp2p uses none).

    The two overrides set the limits, then let aioquic write the frames with its doubling rule kept from firing
    (it looks at the arrived bytes; they are shown to it as at most half of the new limit while it runs)."""

    stream_window = DEFAULT_STREAM_WINDOW_BYTES
    connection_window = DEFAULT_STREAM_WINDOW_BYTES * CONNECTION_WINDOW_STREAMS
    unread_of: Callable[[int], int] = staticmethod(lambda stream_id: 0)
    unread_total: Callable[[], int] = staticmethod(lambda: 0)

    def set_windows(self, stream_window: int, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        """Before the handshake (the stream limits go out in the transport parameters)."""
        self.stream_window = stream_window
        self.connection_window = stream_window * CONNECTION_WINDOW_STREAMS
        for limit, value in ((self._local_max_streams_bidi, max_streams), (self._local_max_streams_uni, 0)):
            limit.value = limit.sent = value

    def undelivered_bytes(self) -> int:
        """Bytes the peer has sent (or skipped) on live streams that aioquic has not handed to us yet."""
        held = 0
        for stream in self._streams.values():
            receiver = stream.receiver
            held += max(0, receiver.highest_offset - receiver._buffer_start)
        return held

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if not stream.max_stream_data_local:  # a stream of ours that receives nothing (unidirectional)
            super()._write_stream_limits(builder, space, stream)
            return
        receiver = stream.receiver
        consumed = receiver._buffer_start - self.unread_of(stream.stream_id)  # delivered, minus still unread
        target = consumed + self.stream_window
        if target - stream.max_stream_data_local >= self.stream_window // 4:
            stream.max_stream_data_local = target
        arrived = receiver.highest_offset
        receiver.highest_offset = min(arrived, stream.max_stream_data_local // 2)
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            receiver.highest_offset = arrived

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        limit = self._local_max_data
        consumed = limit.used - self.undelivered_bytes() - self.unread_total()  # arrived, and no longer held
        target = consumed + self.connection_window
        if target - limit.value >= self.connection_window // 4:
            limit.value = target
        used = limit.used
        limit.used = min(used, limit.value // 2)
        try:
            super()._write_connection_limits(builder, space)
        finally:
            limit.used = used


class ClientQuicConnection(ReadCredit):
    """The dialling side."""


class ServerReadCredit(ReadCredit, ServerQuicConnection):
    """The listening side (py-libp2p's server connection, which asks for the client's certificate)."""


class QuicStream(IMuxedStream):
    """One bidirectional QUIC stream. ``read`` sleeps until the connection hands this stream data."""

    def __init__(self, conn: QuicConn, stream_id: int) -> None:
        self.muxed_conn = conn
        self._conn = conn
        self.stream_id = stream_id
        self._buf = bytearray()
        self._eof = False  # the peer's FIN arrived
        self._reset = False  # reset by either side, or the connection ended
        self._write_closed = False
        self._readable = trio.Event()
        self._read_since_credit = 0  # bytes read since flow-control credit was last announced

    # -- called by the connection (synchronously, from flush)
    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if self._reset:
            return
        self._buf += data
        self._conn.unread_bytes += len(data)
        self._eof = self._eof or end_stream
        window = self._conn.quic.stream_window
        if len(self._buf) > 2 * window:  # cannot happen with flow control kept (aioquic enforces it); a guard
            log.warning(
                "QUIC stream %d from %s: %d unread bytes (window %d); resetting it",
                self.stream_id,
                self._conn.peer_id,
                len(self._buf),
                window,
            )
            self._conn.over_limit()
            self._reset_locally(ERROR_OVER_LIMIT)
        self._conn.unread_high_water = max(self._conn.unread_high_water, len(self._buf))
        self._readable.set()

    def _on_reset(self) -> None:
        self._reset = True
        self._conn.unread_bytes -= len(self._buf)
        self._buf.clear()
        self._readable.set()
        self._conn._forget(self)

    def _on_remote_reset(self) -> None:
        """The peer reset its sending side. A libp2p reset aborts the stream both ways, so ours is reset too:
        otherwise aioquic keeps the stream (and its slot among the peer's ``max_streams``) until we finish."""
        if not self._write_closed:
            self._write_closed = True
            self._conn.quic.reset_stream(self.stream_id, ERROR_STREAM_RESET)
        self._on_reset()

    def _reset_locally(self, code: int) -> None:
        quic = self._conn.quic
        if not self._write_closed:
            self._write_closed = True
            quic.reset_stream(self.stream_id, code)
        if not self._eof:
            quic.stop_stream(self.stream_id, code)
        self._on_reset()

    # -- IMuxedStream
    async def read(self, n: int | None = None) -> bytes:
        while not self._buf:
            if self._reset:
                raise MuxedStreamReset(f"QUIC stream {self.stream_id} was reset")
            if self._eof:
                raise MuxedStreamEOF(f"QUIC stream {self.stream_id} ended")
            self._readable = trio.Event()
            await self._readable.wait()
        if n is None or n < 0 or n >= len(self._buf):
            data = bytes(self._buf)
            self._buf.clear()
        else:
            data = bytes(self._buf[:n])
            del self._buf[:n]
        self._conn.unread_bytes -= len(data)
        if self._eof and not self._buf and self._write_closed:
            self._conn._forget(self)
        self._read_since_credit += len(data)
        if self._read_since_credit >= self._conn.quic.stream_window // 4 and not self._conn.terminated.is_set():
            self._read_since_credit = 0
            await self._conn.flush()  # announces the new credit (ReadCredit) so the sender may go on
        return data

    async def write(self, data: bytes) -> None:
        if self._reset:
            raise MuxedStreamReset(f"QUIC stream {self.stream_id} was reset")
        if self._write_closed:
            raise MuxedStreamClosed(f"QUIC stream {self.stream_id} is closed for writing")
        await self._conn._send(self, data)

    async def close(self) -> None:
        """Half-close: send FIN (what yamux's close does); reading continues until the peer's FIN."""
        if self._write_closed or self._reset or self._conn.terminated.is_set():
            self._write_closed = True
            await trio.lowlevel.checkpoint()
            return
        self._write_closed = True
        self._conn.quic.send_stream_data(self.stream_id, b"", end_stream=True)
        if self._eof and not self._buf:
            self._conn._forget(self)
        await self._conn.flush()

    async def reset(self) -> None:
        if not self._reset and not self._conn.terminated.is_set():
            self._reset_locally(ERROR_STREAM_RESET)
            await self._conn.flush()
        else:
            self._on_reset()
            await trio.lowlevel.checkpoint()

    def set_deadline(self, ttl: int) -> None:
        """Deadlines are the caller's (trio cancel scopes); nothing to do."""

    def get_remote_address(self) -> tuple[str, int] | None:
        return self._conn.remote

    async def __aenter__(self) -> QuicStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        await self.close()


class QuicConn(IRawConnection, IMuxedConn):
    """A QUIC connection as py-libp2p's swarm sees it: already secured (TLS 1.3 with the libp2p peer-ID
    certificate, checked by :mod:`.quic_transport` before the swarm gets it) and multiplexed."""

    def __init__(
        self,
        quic: ReadCredit,
        udp: UdpSocket,
        remote: Address,
        *,
        initiator: bool,
        owns_socket: bool,
        keepalive_s: float = math.inf,
        on_ended: Callable[[QuicConn], None] | None = None,
        counters: BetanetCounters | None = None,
    ) -> None:
        self.counters = counters
        self.quic = quic
        self._keepalive_s = keepalive_s
        self._next_ping = math.inf  # armed once the handshake completes
        self._udp = udp
        self.remote = remote
        self._initiator = initiator
        self._owns_socket = owns_socket
        self._on_ended = on_ended
        self.peer_id: ID = ID(b"")  # set by the transport once the peer's certificate is verified
        self.event_started = trio.Event()
        self.handshake_done = trio.Event()  # handshake completed, or the connection ended first
        self.terminated = trio.Event()
        self.error: str | None = None
        self.streams_over_limit = 0
        self.unread_bytes = 0  # received on this connection's streams, not yet read by the application
        self.unread_high_water = 0  # the most unread bytes one stream has held (tests and diagnostics)
        self._streams: dict[int, QuicStream] = {}
        quic.unread_of = self._unread_of
        quic.unread_total = lambda: self.unread_bytes
        self._accept_in, self._accept_out = trio.open_memory_channel[QuicStream](ACCEPT_QUEUE_STREAMS)
        self._timer = trio.CancelScope()  # replaced by the live one in _timer_loop
        self._flushed = trio.Event()  # set (and replaced) by each flush while writers wait for acknowledgements
        self._send_waiters = 0
        self._activity = trio.Event()  # set (and replaced) by each flush: see wait_until
        self.on_close: Callable[[], Awaitable[Any]] | None = None  # set by py-libp2p's SwarmConn

    # -- driving the core
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the connection's tasks until it ends; then end it (see the module docstring)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._timer_loop)
                if self._owns_socket:
                    nursery.start_soon(self._read_loop)
                task_status.started()
                await self.terminated.wait()
                nursery.cancel_scope.cancel()
        except Exception:  # the connection's supervisor: an unexpected error ends this connection, not its owner
            log.exception("QUIC %s: ended by an unexpected error", self)
            self.error = "internal error"
        finally:
            self._end("connection closed")

    async def _timer_loop(self) -> None:
        """The connection's one timer: the core's (loss detection, idle timeout, ...) or the keepalive PING,
        whichever is first. A PING every ``keepalive_s`` keeps a quiet but live connection inside the idle
        timeout; a peer that vanished (no CONNECTION_CLOSE: killed, unplugged) ends the connection at the
        idle timeout because nothing acknowledges it."""
        while not self.terminated.is_set():
            with trio.CancelScope() as scope:
                self._timer = scope
                self._rearm()
                await trio.sleep_forever()
            if self.terminated.is_set():
                break  # the scope was cancelled by _end, not by the timer
            now = trio.current_time()
            if now >= self._next_ping:
                self.quic.send_ping(0)
                self._next_ping = now + self._keepalive_s
            at = self.quic.get_timer()
            if at is not None and now >= at:
                self.quic.handle_timer(now)
            await self.flush()

    async def _read_loop(self) -> None:
        try:
            while not self.terminated.is_set():
                for data, addr in await self._udp.receive_batch():
                    self.quic.receive_datagram(data, addr, trio.current_time())
                await self.flush()
        except ConnectionRefusedError:
            self.error = self.error or "port unreachable (nothing listens on the peer's UDP port)"
            self.terminated.set()
        except (trio.ClosedResourceError, OSError) as exc:  # the socket was closed by _end, or failed
            self.error = self.error or f"socket: {exc or type(exc).__name__}"
            self.terminated.set()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """A datagram for this connection from the listener's socket (flushed by the listener after its batch)."""
        self.quic.receive_datagram(data, addr, trio.current_time())

    def _rearm(self) -> None:
        at = self.quic.get_timer()
        at = min(math.inf if at is None else at, self._next_ping)
        self._timer.deadline = math.inf if self.terminated.is_set() else at

    async def flush(self) -> None:
        """Handle the core's events, send its datagrams, re-arm its timer, wake writers waiting for acks."""
        while (event := self.quic.next_event()) is not None:
            self._handle(event)
        datagrams = self.quic.datagrams_to_send(trio.current_time())
        if datagrams:
            await self._udp.send(datagrams)
        self._rearm()
        if self._send_waiters:
            self._flushed.set()
            self._flushed = trio.Event()
        self._activity.set()
        self._activity = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked after each flush (input handled, output sent)."""
        while not predicate() and not self.terminated.is_set():
            await self._activity.wait()

    def _handle(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:
                stream = self._new_inbound(event.stream_id)
                if stream is None:
                    return
            stream._on_data(event.data, event.end_stream)
        elif isinstance(event, events.HandshakeCompleted):
            self._next_ping = trio.current_time() + self._keepalive_s
            self.handshake_done.set()
        elif isinstance(event, events.StreamReset):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream._on_remote_reset()
        elif isinstance(event, events.StopSendingReceived):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream._reset_locally(ERROR_STREAM_RESET)
        elif isinstance(event, events.ConnectionTerminated):
            self.error = f"{event.reason_phrase or 'closed'} (QUIC error {event.error_code:#x})"
            self.terminated.set()
            self.handshake_done.set()

    def _new_inbound(self, stream_id: int) -> QuicStream | None:
        ours = (stream_id & 1) == (0 if self._initiator else 1)
        if ours or stream_id & 2:  # a stream of ours we have forgotten, or unidirectional (libp2p uses none)
            return None
        stream = QuicStream(self, stream_id)
        try:
            self._accept_in.send_nowait(stream)
        except trio.WouldBlock:
            self.over_limit()
            log.warning(
                "QUIC %s: more than %d streams waiting to be accepted; resetting one", self, ACCEPT_QUEUE_STREAMS
            )
            self.quic.reset_stream(stream_id, ERROR_OVER_LIMIT)
            self.quic.stop_stream(stream_id, ERROR_OVER_LIMIT)
            return None
        self._streams[stream_id] = stream
        return stream

    def over_limit(self) -> None:
        self.streams_over_limit += 1
        if self.counters is not None:
            self.counters.quic_streams_over_limit += 1

    def _unread_of(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        return len(stream._buf) if stream is not None else 0

    def _forget(self, stream: QuicStream) -> None:
        self._streams.pop(stream.stream_id, None)

    def _unacked(self, stream_id: int) -> int:
        # aioquic's public API has no "bytes not yet acknowledged"; py-libp2p reads the same two offsets
        # (transport/quic/aioquic_compat.py, stream_send_buffer_size).
        stream = self.quic._streams.get(stream_id)
        if stream is None:
            return 0
        return max(0, stream.sender._buffer_stop - stream.sender._buffer_start)

    async def _send(self, stream: QuicStream, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._unacked(stream.stream_id) >= SEND_HIGH_WATER_BYTES:
                self._send_waiters += 1
                try:
                    while self._unacked(stream.stream_id) > SEND_LOW_WATER_BYTES and not stream._reset:
                        if self.terminated.is_set():
                            break
                        await self._flushed.wait()
                finally:
                    self._send_waiters -= 1
            if self.terminated.is_set() or stream._reset:
                raise MuxedStreamReset(f"QUIC stream {stream.stream_id}: {self.error or 'reset'}")
            try:
                self.quic.send_stream_data(stream.stream_id, bytes(view[:WRITE_CHUNK_BYTES]))
            except ValueError as exc:  # aioquic: the stream is closed or discarded in the core
                raise MuxedStreamReset(f"QUIC stream {stream.stream_id}: {exc}") from exc
            view = view[WRITE_CHUNK_BYTES:]
            await self.flush()

    def _end(self, reason: str) -> None:
        """End the connection now, without waiting: close the core, send its last datagrams best-effort, wake
        every stream and waiter, release the socket."""
        if not self.terminated.is_set():
            self.quic.close(error_code=ERROR_NO_ERROR, reason_phrase=reason)
            self._udp.send_now(self.quic.datagrams_to_send(trio.current_time()))
            self.error = self.error or reason
            self.terminated.set()
        self.handshake_done.set()
        self._timer.cancel()
        for stream in list(self._streams.values()):
            stream._on_reset()
        self._streams.clear()
        self._accept_in.close()
        self._flushed.set()
        if self._owns_socket:
            self._udp.close()
        if self._on_ended is not None:
            on_ended, self._on_ended = self._on_ended, None
            on_ended(self)

    # -- IMuxedConn
    @property
    def is_initiator(self) -> bool:  # type: ignore[override]  # IRawConnection: attribute, IMuxedConn: property
        return self._initiator

    async def start(self) -> None:
        """The swarm calls this once it has the connection; the connection already runs (:meth:`run`)."""
        self.event_started.set()
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        if not self.terminated.is_set():
            self.quic.close(error_code=ERROR_NO_ERROR, reason_phrase="closed")
            self._udp.send_now(self.quic.datagrams_to_send(trio.current_time()))
            self.error = "closed by us"
            self.terminated.set()  # run() wakes and ends the connection
        await trio.lowlevel.checkpoint()

    @property
    def is_established(self) -> bool:
        return self.handshake_done.is_set() and not self.terminated.is_set()

    @property
    def is_closed(self) -> bool:
        return self.terminated.is_set()

    async def open_stream(self) -> QuicStream:
        if self.terminated.is_set():
            raise MuxedConnUnavailable(f"QUIC connection to {self.peer_id} ended: {self.error}")
        stream_id = self.quic.get_next_available_stream_id()
        self.quic.send_stream_data(stream_id, b"")  # creates the stream in the core, so the next ID differs
        stream = QuicStream(self, stream_id)
        self._streams[stream_id] = stream
        await trio.lowlevel.checkpoint()
        return stream

    async def accept_stream(self) -> QuicStream:
        try:
            return await self._accept_out.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise MuxedConnUnavailable(f"QUIC connection to {self.peer_id} ended: {self.error}") from None

    def get_transport_addresses(self) -> list[Multiaddr]:
        return [quic_multiaddr(self.remote)]

    def get_connection_type(self) -> ConnectionType:
        return ConnectionType.DIRECT

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.remote

    # -- IRawConnection's byte stream: a QUIC connection carries streams only
    async def read(self, n: int | None = None) -> bytes:
        raise NotImplementedError("a QUIC connection is read through its streams")

    async def write(self, data: bytes) -> None:
        raise NotImplementedError("a QUIC connection is written through its streams")

    def __str__(self) -> str:
        return f"QUIC({'out' if self._initiator else 'in'} {self.remote[0]}:{self.remote[1]} {self.peer_id})"
