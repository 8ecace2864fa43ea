"""The issue's baseline for BetaNet's QUIC figures: bare aioquic driven from trio, with nothing on top.

aioquic's ``QuicConnection`` is sans-IO. This module is the thin adapter around it, written the way
STYLE.md asks of ours: a UDP socket reader feeds datagrams in, every input is followed by one ``flush`` that
sends what the core returns and re-arms the connection's single timer (a cancel scope whose deadline follows
``get_timer()``). No asyncio, no polling loop, no sleeps. The core's clock is ``trio.current_time()``.

Framing is the BetaNet link's: ``length u32 BE ‖ bytes`` on one bidirectional stream; the server replies
``!`` to every frame that starts with ``?``. Send-side back-pressure uses the same watermarks as py-libp2p's
QUIC stream (block at 1 MB un-acknowledged, resume at 256 KB), so both QUIC figures buffer alike.

The server's certificate is self-signed, made at start with ``cryptography`` in a temporary directory; the
client does not verify it (this measures transport cost, not PKI).
"""

from __future__ import annotations

import datetime
import math
import socket
import ssl
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from aioquic._buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LENGTH = struct.Struct(">I")  # frame length prefix, as on the BetaNet link
ALPN = "aivillage-bench"
MAX_FRAME_BYTES = 1 << 20  # a larger announced length ends the connection
SEND_HIGH_WATER_BYTES = 1 << 20  # un-acknowledged bytes on the stream before send() waits (py-libp2p's value)
SEND_LOW_WATER_BYTES = 256 * 1024  # ... and the level at which it resumes (py-libp2p's value)
RECEIVE_QUEUE_FRAMES = 64  # frames the client holds for receive(); the bench never has more than one
DATAGRAMS_PER_WAKEUP = 64  # datagrams read from the socket before the core's output is flushed
DATAGRAM_BYTES = 65_536  # recvfrom buffer


class BaselineError(Exception):
    """The bare QUIC connection failed (handshake, reset, a frame over the limit, or the peer closed)."""


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    """A fresh P-256 key and a self-signed certificate for ``localhost``, as PEM files in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class UdpSocket:
    """A non-blocking UDP socket; concurrent senders take turns only when the kernel buffer is full."""

    def __init__(self, bind: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(bind)
        self._lock = trio.Lock()

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    async def send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
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

    async def receive_batch(self) -> list[tuple[bytes, tuple[str, int]]]:
        """Wait for the socket to be readable, then take up to DATAGRAMS_PER_WAKEUP datagrams."""
        await trio.lowlevel.wait_readable(self.sock)
        batch = []
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                batch.append(self.sock.recvfrom(DATAGRAM_BYTES))
            except BlockingIOError:
                break
        return batch

    def close(self) -> None:
        self.sock.close()


class Endpoint:
    """One aioquic connection: feed it, flush it, and its single timer."""

    def __init__(self, quic: QuicConnection, udp: UdpSocket, on_frame: Callable[[Endpoint, int, bytes], None]) -> None:
        self.quic = quic
        self._udp = udp
        self._on_frame = on_frame
        self._timer = trio.CancelScope()  # replaced by the live one in run()
        self._buffers: dict[int, bytearray] = {}
        self._capacity = trio.Event()
        self._capacity.set()
        self.connected = trio.Event()
        self.terminated = trio.Event()
        self.error: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer task: sleep until the core's timer, handle it, flush; until the connection ends."""
        task_status.started()
        while not self.terminated.is_set():
            with trio.CancelScope() as scope:
                self._timer = scope
                self._rearm()
                await trio.sleep_forever()
            self.quic.handle_timer(trio.current_time())
            await self.flush()

    def _rearm(self) -> None:
        at = self.quic.get_timer()
        self._timer.deadline = math.inf if at is None or self.terminated.is_set() else at

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.quic.receive_datagram(data, addr, trio.current_time())

    async def flush(self) -> None:
        """Handle the core's events, send its datagrams, re-arm its timer, wake a blocked sender."""
        while (event := self.quic.next_event()) is not None:
            self._handle(event)
        await self._udp.send(self.quic.datagrams_to_send(trio.current_time()))
        self._rearm()
        if not self._capacity.is_set() and self._unacked(0) <= SEND_LOW_WATER_BYTES:
            self._capacity.set()

    def _handle(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self.connected.set()
        elif isinstance(event, events.StreamDataReceived):
            buf = self._buffers.setdefault(event.stream_id, bytearray())
            buf += event.data
            while len(buf) >= LENGTH.size:
                (n,) = LENGTH.unpack_from(buf)
                if n > MAX_FRAME_BYTES:
                    self.quic.close(error_code=0x100, reason_phrase="frame over the limit")
                    return
                if len(buf) < LENGTH.size + n:
                    break
                frame = bytes(buf[LENGTH.size : LENGTH.size + n])
                del buf[: LENGTH.size + n]
                self._on_frame(self, event.stream_id, frame)
        elif isinstance(event, events.StreamReset):
            self.quic.close(error_code=0x101, reason_phrase="stream reset")
        elif isinstance(event, events.ConnectionTerminated):
            self.error = f"connection terminated: {event.reason_phrase or event.error_code}"
            self.terminated.set()
            self.connected.set()  # wake a waiting dial; it checks terminated
            self._capacity.set()

    def _unacked(self, stream_id: int) -> int:
        # aioquic's public API has no "bytes not yet acknowledged"; py-libp2p reads the same two offsets.
        stream = self.quic._streams.get(stream_id)
        if stream is None:
            return 0
        return max(0, stream.sender._buffer_stop - stream.sender._buffer_start)

    async def send_frame(self, stream_id: int, frame: bytes) -> None:
        """Queue one frame on ``stream_id`` and flush; wait first while too much is un-acknowledged."""
        while self._unacked(stream_id) >= SEND_HIGH_WATER_BYTES and not self.terminated.is_set():
            self._capacity = trio.Event()
            await self._capacity.wait()
        if self.terminated.is_set():
            raise BaselineError(self.error or "connection terminated")
        self.quic.send_stream_data(stream_id, LENGTH.pack(len(frame)) + frame)
        await self.flush()


# ---------------------------------------------------------------- server
def server_configuration(directory: Path) -> QuicConfiguration:
    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    cert, key = write_self_signed(directory)
    config.load_cert_chain(cert, key)
    return config


def reply_to_questions(endpoint: Endpoint, stream_id: int, frame: bytes) -> None:
    if frame[:1] == b"?":
        endpoint.quic.send_stream_data(stream_id, LENGTH.pack(1) + b"!")


async def serve(ready: Callable[[int], None], host: str = "127.0.0.1") -> None:
    """Accept connections on a UDP port (``ready(port)`` is called once bound) and answer ``?`` frames."""
    with tempfile.TemporaryDirectory(prefix="aivillage-bench-") as tmp:
        config = server_configuration(Path(tmp))
    udp = UdpSocket((host, 0))
    endpoints: dict[tuple[str, int], Endpoint] = {}
    try:
        async with trio.open_nursery() as nursery:
            ready(udp.port)
            while True:
                touched: dict[tuple[str, int], Endpoint] = {}
                for data, addr in await udp.receive_batch():
                    endpoint = endpoints.get(addr)
                    if endpoint is None or endpoint.terminated.is_set():
                        try:
                            header = pull_quic_header(Buffer(data=data), host_cid_length=config.connection_id_length)
                        except ValueError:
                            continue  # not QUIC
                        if header.packet_type != QuicPacketType.INITIAL:
                            continue
                        quic = QuicConnection(
                            configuration=config, original_destination_connection_id=header.destination_cid
                        )
                        endpoint = endpoints[addr] = Endpoint(quic, udp, reply_to_questions)
                        nursery.start_soon(endpoint.run)
                    endpoint.datagram_received(data, addr)
                    touched[addr] = endpoint
                for endpoint in touched.values():
                    await endpoint.flush()
                for addr in [a for a, e in endpoints.items() if e.terminated.is_set()]:
                    del endpoints[addr]
    finally:
        udp.close()


# ---------------------------------------------------------------- client
class Client:
    """A client connection with one stream, used like a Link: ``send(frame)``, ``receive()``."""

    def __init__(self, endpoint: Endpoint, frames_out: trio.MemoryReceiveChannel[bytes]) -> None:
        self._endpoint = endpoint
        self._frames_out = frames_out
        self._stream_id = endpoint.quic.get_next_available_stream_id()

    async def send(self, frame: bytes) -> None:
        await self._endpoint.send_frame(self._stream_id, frame)

    async def receive(self) -> bytes:
        try:
            return await self._frames_out.receive()
        except trio.EndOfChannel:
            raise BaselineError(self._endpoint.error or "connection terminated") from None


@asynccontextmanager
async def open_client(host: str, port: int) -> AsyncIterator[Client]:
    """Dial ``host:port``, complete the handshake and yield the client; on exit, close the connection."""
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    udp = UdpSocket(("0.0.0.0", 0))
    frames_in, frames_out = trio.open_memory_channel[bytes](RECEIVE_QUEUE_FRAMES)

    def on_frame(endpoint: Endpoint, _stream_id: int, frame: bytes) -> None:
        try:
            frames_in.send_nowait(frame)
        except trio.WouldBlock:
            endpoint.quic.close(error_code=0x102, reason_phrase="client receive queue full")

    endpoint = Endpoint(QuicConnection(configuration=config), udp, on_frame)

    async def read() -> None:
        while not endpoint.terminated.is_set():
            for data, addr in await udp.receive_batch():
                endpoint.datagram_received(data, addr)
            await endpoint.flush()

    async def end_receive() -> None:
        await endpoint.terminated.wait()
        frames_in.close()

    try:
        async with trio.open_nursery() as nursery:
            endpoint.quic.connect((host, port), trio.current_time())  # before the timer: it arms get_timer()
            await nursery.start(endpoint.run)
            nursery.start_soon(read)
            nursery.start_soon(end_receive)
            await endpoint.flush()
            await endpoint.connected.wait()
            if endpoint.terminated.is_set():
                raise BaselineError(endpoint.error or "handshake failed")
            yield Client(endpoint, frames_out)
            endpoint.quic.close()
            await endpoint.flush()
            nursery.cancel_scope.cancel()
    finally:
        udp.close()
