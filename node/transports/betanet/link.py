"""One BetaNet link: a libp2p stream on ``/aivillage/mesh/1.0.0`` carrying ``length u32 BE ‖ frame`` (at most
``betanet.max_frame_bytes``; a larger length ends the link and is counted). A reader task (:meth:`BetanetLink.pump`)
moves frames into a bounded channel, so ``receive`` is cancel-safe and a slow consumer applies back-pressure
through the muxer's flow control; a peer that accepts or sends nothing for ``betanet.stall_timeout_s`` is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import struct

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from node.ipprefix import source_prefixes
from node.transports.base import Link, LinkCapabilities, LinkClosed, check_frame_size
from node.transports.betanet.counters import BetanetCounters

log = logging.getLogger("village.betanet")

LENGTH = struct.Struct(">I")  # frame length prefix
RECEIVE_QUEUE_FRAMES = 64  # frames buffered per link before the reader stops reading (back-pressure)
READ_CHUNK = 65_536  # bytes asked of the stream per read


def rate_key_of(remote: str) -> str | None:
    """The mesh's per-source budget key for a connection to ``remote`` (a multiaddr as
    :func:`~node.transports.betanet.transport.remote_address_of` gives it): the IPv4 address or IPv6 /64
    (:mod:`node.ipprefix`), or the relay of a relayed connection; None (the link id) with no address at all."""
    parts = remote.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        return "betanet:" + source_prefixes(parts[2])[0]
    if "/p2p-circuit" in remote:
        return "betanet:" + remote.split("/p2p-circuit", 1)[0]
    return None


class BetanetLink(Link):
    def __init__(
        self,
        stream: INetStream,
        link_id: str,
        remote: str,
        max_frame_bytes: int,
        authenticated_signing_key: bytes | None,
        counters: BetanetCounters,
        stall_timeout_s: float,
    ) -> None:
        self._stall_s = stall_timeout_s
        self._stream = stream
        self._link_id = link_id
        self._remote = remote
        self._mtu = max_frame_bytes
        self._authenticated_key = authenticated_signing_key
        self._counters = counters
        self._send_lock = trio.Lock()
        self._frames_in, self._frames_out = trio.open_memory_channel[bytes](RECEIVE_QUEUE_FRAMES)
        self._closed = False
        self._closed_event = trio.Event()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    @property
    def link_id(self) -> str:
        return self._link_id

    @property
    def transport_name(self) -> str:
        return "betanet"

    @property
    def muxed_conn(self) -> object:
        """The libp2p connection this link's stream runs on."""
        conn: object = self._stream.muxed_conn
        return conn

    @property
    def peer(self) -> ID:
        """The libp2p peer at the other end (authenticated by the connection's handshake)."""
        peer: ID = self._stream.muxed_conn.peer_id
        return peer

    @property
    def authenticated_signing_key(self) -> bytes | None:
        return self._authenticated_key

    @property
    def mtu(self) -> int:
        return self._mtu

    @property
    def capabilities(self) -> LinkCapabilities:
        return LinkCapabilities(native_streams=True, reliable=True, ordered=True, broadcast_medium=False)

    @property
    def remote_address(self) -> str:
        return self._remote

    @property
    def rate_key(self) -> str | None:
        return rate_key_of(self._remote)

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise LinkClosed(f"{self._link_id} is closed")
        check_frame_size(frame, self._mtu)
        async with self._send_lock:
            try:
                with trio.move_on_after(self._stall_s) as scope:
                    await self._stream.write(LENGTH.pack(len(frame)) + frame)
                if scope.cancelled_caught:
                    self._stalled("did not accept a frame")
                    await self.aclose()
                    raise LinkClosed(f"{self._link_id}: peer stalled")
            except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._closed = True
                raise LinkClosed(f"{self._link_id}: {exc or type(exc).__name__}") from exc

    async def receive(self) -> bytes:
        try:
            return await self._frames_out.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise LinkClosed(f"{self._link_id} is closed") from None

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._closed_event.set()
        self._frames_out.close()
        errors = (StreamError, trio.BrokenResourceError, trio.ClosedResourceError, OSError)
        with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(*errors):
            try:
                await self._stream.close()
            except RuntimeError as exc:
                # Over py-libp2p 0.8's own QUIC (bench/betanet.py's quic_libp2p kind; nodes use ours), stream close
                # schedules a counter update in its connection's nursery (transport/quic/connection.py,
                # _remove_stream, line 1022), closed once the connection has shut down: the stream is gone anyway.
                if "closed to new arrivals" not in str(exc):
                    raise

    def _stalled(self, what: str) -> None:
        self._counters.stalled += 1
        log.warning(
            "%s: peer %s for %.0f s (betanet.stall_timeout_s); closing the link", self._link_id, what, self._stall_s
        )

    async def pump(self) -> None:
        """Read frames from the stream until it ends; then the link is closed."""
        buf = bytearray()
        try:
            while True:
                while len(buf) < LENGTH.size or len(buf) < LENGTH.size + LENGTH.unpack_from(buf)[0]:
                    if len(buf) >= LENGTH.size and LENGTH.unpack_from(buf)[0] > self._mtu:
                        self._counters.oversize_frames += 1
                        log.warning(
                            "%s: peer sent a %d-byte frame (limit %d, betanet.max_frame_bytes); closing the link",
                            self._link_id,
                            LENGTH.unpack_from(buf)[0],
                            self._mtu,
                        )
                        return
                    chunk = b""
                    with trio.move_on_after(self._stall_s) as scope:
                        chunk = await self._stream.read(READ_CHUNK)
                    if scope.cancelled_caught:
                        self._stalled("sent nothing" if not buf else "stopped in the middle of a frame")
                        return
                    if not chunk:
                        return
                    buf += chunk
                n = LENGTH.unpack_from(buf)[0]
                frame = bytes(buf[LENGTH.size : LENGTH.size + n])
                del buf[: LENGTH.size + n]
                await self._frames_in.send(frame)
        except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError, OSError, EOFError):
            return
        finally:
            self._frames_in.close()
            await self.aclose()
