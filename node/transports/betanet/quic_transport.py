"""BetaNet's QUIC transport for py-libp2p's swarm: dial and listen on ``/ip4|ip6/A/udp/N/quic-v1``, with
connections driven by :class:`.quic_conn.QuicConn` (event-driven, one timer) instead of py-libp2p 0.8's
``QUICTransport`` (transport/quic/transport.py), whose connections poll aioquic in a sleep loop.

Security is the libp2p QUIC spec's, through py-libp2p's own code used as a library: the certificate (a fresh
P-256 key, signed over by the host's Ed25519 key in the libp2p extension) comes from
``QUICTLSConfigManager``, the server asks for the client's certificate (py-libp2p's ``ServerQuicConnection``),
and once the TLS 1.3 handshake completes the peer's certificate is checked with ``verify_peer_identity``:
the extension's signature must verify and, on a dial, the peer ID it proves must be the one dialled. Until
that check passes the swarm never sees the connection.

Demultiplexing: one UDP socket per listen address; datagrams are routed to connections by the sender's
address (no connection migration). Each dial uses its own ephemeral socket.

Spoofed Initials. A QUIC Initial costs its sender one datagram and can carry any source address, and each one
makes a connection (a TLS handshake in flight) here. Until its handshake completes a connection's address is
unvalidated. Once half of :attr:`Limits.max_handshakes` are in progress, or :attr:`Limits.max_handshakes_per_ip`
from the address's /32 or /64, a new address gets a stateless Retry (RFC 9000 8.1.2: a token bound to its
address, counted in ``quic_retries``) and no state until it comes back with the token, which a spoofed source
cannot. Besides, the listener holds at most :attr:`Limits.max_handshakes` handshakes (validated or not),
:attr:`Limits.max_connections` connections in all, and from one source prefix (an IPv4 address, an IPv6 /64, an
IPv6 /48) at most its share of validated connections (:mod:`.quic_admission`). An Initial beyond them is dropped
and counted (``quic_initials_dropped``), as is one in a datagram shorter than the 1200 bytes RFC 9000 requires of a
client's Initial, or one with a token that does not check out; a handshake that completes when its prefix holds
its share is closed (``quic_connections_refused``). A handshake that does not complete within
:data:`HANDSHAKE_TIMEOUT_S` frees its slot.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable

import multiaddr
import trio
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from aioquic._buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicHeader, QuicPacketType, QuicProtocolVersion, encode_quic_retry, pull_quic_header
from aioquic.quic.retry import QuicRetryTokenHandler
from libp2p.abc import IListener, IRawConnection, ITransport
from libp2p.crypto.keys import PrivateKey
from libp2p.peer.id import ID
from libp2p.transport.exceptions import OpenConnectionError
from libp2p.transport.quic.security import QUICTLSConfigManager, create_quic_security_transport

from node.transports.betanet.counters import BetanetCounters
from node.transports.betanet.quic_admission import DEFAULT_LIMITS, Admission, Limits, Verdict
from node.transports.betanet.quic_conn import (
    CONNECTION_WINDOW_STREAMS,
    Address,
    ClientQuicConnection,
    QuicConn,
    ServerReadCredit,
    UdpSocket,
)

log = logging.getLogger("village.betanet.quic")

ALPN = "libp2p"  # the libp2p QUIC spec's ALPN
HANDSHAKE_TIMEOUT_S = 10.0  # a handshake (dial or inbound) not complete by then is abandoned
IDLE_TIMEOUT_S = 30.0  # QUIC idle timeout (go-libp2p's): a vanished peer's connection ends within this
KEEPALIVE_FRACTION = 0.5  # a PING after this fraction of the idle timeout keeps a quiet connection (go-libp2p: 15 s)
MIN_INITIAL_DATAGRAM_BYTES = 1200  # RFC 9000 14.1: a client's Initial datagram is padded to at least this


ConnHandler = Callable[[QuicConn], Awaitable[None]]


def parse_quic(maddr: multiaddr.Multiaddr) -> tuple[socket.AddressFamily, Address, ID | None]:
    """``/ip4/A/udp/N/quic-v1[/p2p/ID]`` → (family, (A, N), ID or None). Raises ValueError otherwise."""
    parts = str(maddr).split("/")
    if len(parts) < 6 or parts[1] not in ("ip4", "ip6") or parts[3] != "udp" or parts[5] != "quic-v1":
        raise ValueError(f"{maddr} is not /ip4|ip6/<address>/udp/<port>/quic-v1")
    family = socket.AF_INET if parts[1] == "ip4" else socket.AF_INET6
    try:
        peer = ID.from_base58(parts[7]) if len(parts) >= 8 and parts[6] == "p2p" else None
        port = int(parts[4])
    except Exception as exc:  # base58/multihash decoding raise assorted errors
        raise ValueError(f"{maddr}: {exc}") from exc
    return family, (parts[2], port), peer


class QuicTransport(ITransport):
    provides_native_muxing: bool = True

    def __init__(
        self,
        private_key: PrivateKey,
        idle_timeout_s: float | None = None,
        limits: Limits | None = None,
        counters: BetanetCounters | None = None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        """``counters`` get the QUIC drops; ``notify`` is called after each change to them."""
        self.notify = notify
        idle_timeout_s = IDLE_TIMEOUT_S if idle_timeout_s is None else idle_timeout_s
        self.limits = limits if limits is not None else DEFAULT_LIMITS
        self.counters = counters if counters is not None else BetanetCounters()
        self.keepalive_s = idle_timeout_s * KEEPALIVE_FRACTION
        self._peer_id = ID.from_pubkey(private_key.get_public_key())
        self._security: QUICTLSConfigManager = create_quic_security_transport(private_key, self._peer_id)
        tls = self._security.create_server_config()
        window = self.limits.stream_window_bytes
        self._server_config = self._configuration(False, tls.certificate, tls.private_key, idle_timeout_s, window)
        tls = self._security.create_client_config()
        self._client_config = self._configuration(True, tls.certificate, tls.private_key, idle_timeout_s, window)
        self._background: trio.Nursery | None = None
        self._listeners: list[QuicListener] = []

    @staticmethod
    def _configuration(
        is_client: bool, cert: object, key: object, idle_timeout_s: float, window: int
    ) -> QuicConfiguration:
        config = QuicConfiguration(
            is_client=is_client,
            alpn_protocols=[ALPN],
            verify_mode=ssl.CERT_NONE,  # certificates are self-signed; the libp2p extension is checked instead
            idle_timeout=idle_timeout_s,
            max_data=window * CONNECTION_WINDOW_STREAMS,  # then granted as we read (quic_conn.ReadCredit)
            max_stream_data=window,
            supported_versions=[QuicProtocolVersion.VERSION_1],
        )
        config.certificate = cert
        config.private_key = key
        return config

    # -- hooks py-libp2p's swarm calls on transports that have them (transport/manager.py)
    def set_background_nursery(self, nursery: trio.Nursery) -> None:
        self._background = nursery

    def set_swarm(self, swarm: object) -> None:
        """Not needed: inbound connections go to the listener's handler."""

    def verify(self, conn: QuicConn, expected: ID | None) -> ID:
        """The peer ID the remote's certificate proves (raising if it proves none, or not ``expected``)."""
        cert = getattr(conn.quic.tls, "_peer_certificate", None)  # aioquic keeps the peer's certificate here
        if cert is None:
            raise OpenConnectionError("the peer presented no certificate")
        try:
            return self._security.verify_peer_identity(cert, expected)
        except Exception as exc:  # py-libp2p raises QUICPeerVerificationError and others
            raise OpenConnectionError(f"peer identity not proven: {exc}") from exc

    async def dial(self, maddr: multiaddr.Multiaddr) -> IRawConnection:
        if self._background is None:
            raise OpenConnectionError("the QUIC transport is not running (no swarm background nursery)")
        try:
            family, remote, expected = parse_quic(maddr)
        except ValueError as exc:
            raise OpenConnectionError(str(exc)) from exc
        if expected is None:
            raise OpenConnectionError(f"{maddr}: a QUIC dial needs /p2p/<peer id> to authenticate the peer")
        try:
            udp = UdpSocket(family, ("::" if family == socket.AF_INET6 else "0.0.0.0", 0), remote)
        except OSError as exc:
            raise OpenConnectionError(f"{maddr}: cannot open a UDP socket: {exc}") from exc
        quic = ClientQuicConnection(configuration=self._client_config)
        quic.set_windows(self.limits.stream_window_bytes, self.limits.max_streams_per_connection)
        conn = QuicConn(
            quic,
            udp,
            remote,
            initiator=True,
            owns_socket=True,
            keepalive_s=self.keepalive_s,
            counters=self.counters,
        )
        try:
            conn.quic.connect(remote, trio.current_time())  # before the timer task: it arms get_timer()
            await self._background.start(conn.run)
            await conn.flush()
            with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
                await conn.handshake_done.wait()
            if not conn.is_established:
                raise OpenConnectionError(f"{maddr}: QUIC handshake failed: {conn.error or 'no answer'}")
            conn.peer_id = self.verify(conn, expected)
        except BaseException:
            conn._end("dial abandoned")
            raise
        return conn

    def create_listener(self, handler_function: Callable[..., Awaitable[None]]) -> QuicListener:
        listener = QuicListener(self, handler_function)
        self._listeners.append(listener)
        return listener

    def can_dial(self, maddr: multiaddr.Multiaddr) -> bool:
        return "/quic-v1" in str(maddr) and "/p2p-circuit" not in str(maddr)

    def can_listen(self, maddr: multiaddr.Multiaddr) -> bool:
        return self.can_dial(maddr)

    def protocols(self) -> list[str]:
        return ["quic-v1"]

    def listen_order(self) -> int:
        return 1  # as go-libp2p's QUIC

    async def close(self) -> None:
        for listener in self._listeners:
            await listener.close()
        self._listeners.clear()


class QuicListener(IListener):
    """One UDP socket: new handshakes become connections, and each datagram goes to its connection."""

    def __init__(self, transport: QuicTransport, handler: ConnHandler) -> None:
        self._transport = transport
        self._handler = handler
        self._udp: UdpSocket | None = None
        self._addr: multiaddr.Multiaddr | None = None
        self._conns: dict[Address, QuicConn] = {}
        self.admission = Admission(transport.limits)  # counts of _conns by source prefix (quic_admission)
        self._retry = QuicRetryTokenHandler()  # a fresh key per listener: tokens live 30 s (aioquic's rule)
        self._scope = trio.CancelScope()
        self.background_nursery: trio.Nursery | None = None  # set by py-libp2p's swarm before listen()

    async def listen(self, maddr: multiaddr.Multiaddr) -> None:
        nursery = self.background_nursery or self._transport._background
        if nursery is None:
            raise OSError(f"cannot listen on {maddr}: the swarm is not running")
        family, bind, _ = parse_quic(maddr)
        self._udp = UdpSocket(family, bind)  # OSError (address in use, ...) goes to the swarm
        host, port = self._udp.local
        self._addr = multiaddr.Multiaddr(f"/{'ip6' if family == socket.AF_INET6 else 'ip4'}/{host}/udp/{port}/quic-v1")
        await nursery.start(self._serve, self._udp)

    async def _serve(self, udp: UdpSocket, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    task_status.started()
                    while udp.sock.fileno() != -1:
                        touched: dict[Address, QuicConn] = {}
                        for data, addr in await udp.receive_batch():
                            conn = self._conns.get(addr) or self._accept(data, addr, udp, nursery)
                            if conn is not None:
                                conn.datagram_received(data, addr)
                                touched[addr] = conn
                        for conn in touched.values():
                            try:
                                await conn.flush()
                            except Exception:  # one connection's failure ends it, not the listener
                                log.exception("QUIC %s: connection %s failed", self._addr, conn)
                                conn._end("internal error")
        finally:
            udp.close()

    def _accept(self, data: bytes, addr: Address, udp: UdpSocket, nursery: trio.Nursery) -> QuicConn | None:
        """A connection for a datagram from a new address, if it is a QUIC v1 Initial and there is room."""
        config = self._transport._server_config
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=config.connection_id_length)
        except ValueError:
            return None  # not QUIC
        if header.packet_type != QuicPacketType.INITIAL or header.version != QuicProtocolVersion.VERSION_1:
            return None
        limits = self._transport.limits
        original_cid, retry_cid = header.destination_cid, None
        if len(data) < MIN_INITIAL_DATAGRAM_BYTES:
            why = f"an Initial in a {len(data)}-byte datagram (RFC 9000: at least {MIN_INITIAL_DATAGRAM_BYTES})"
        elif header.token:
            try:  # the client's answer to our Retry: its address is validated
                original_cid = self._retry.validate_token(
                    address=addr, destination_cid=header.destination_cid, token=header.token, now=trio.current_time()
                )
                retry_cid = header.destination_cid
                why = ""
            except ValueError as exc:
                why = f"a Retry token that does not check out ({exc})"
        else:
            why = ""
        if not why:
            verdict, why = self.admission.check(addr[0], validated=retry_cid is not None)
            if verdict is Verdict.RETRY:  # no state for an unvalidated address: it must prove it owns it
                self._send_retry(header, addr, udp)
                return None
            if verdict is Verdict.ACCEPT:
                why = ""
        if why:
            self._dropped(addr, why)
            return None
        quic = ServerReadCredit(
            configuration=config, original_destination_connection_id=original_cid, retry_source_connection_id=retry_cid
        )
        quic.set_windows(limits.stream_window_bytes, limits.max_streams_per_connection)
        conn = QuicConn(
            quic,
            udp,
            addr,
            initiator=False,
            owns_socket=False,
            keepalive_s=self._transport.keepalive_s,
            on_ended=self._ended,
            counters=self._transport.counters,
        )
        self._conns[addr] = conn
        self.admission.opened(conn, addr[0], validated=retry_cid is not None)
        nursery.start_soon(self._run_inbound, conn)
        return conn

    def _send_retry(self, header: QuicHeader, addr: Address, udp: UdpSocket) -> None:
        """Answer an Initial with a Retry carrying a token bound to the client's address (RFC 9000 8.1.2): a
        client that really sends from ``addr`` comes back with it; a spoofed source never does."""
        retry_cid = os.urandom(self._transport._server_config.connection_id_length)
        token = self._retry.create_token(
            address=addr,
            original_destination_connection_id=header.destination_cid,
            retry_source_connection_id=retry_cid,
            now=trio.current_time(),
        )
        packet = encode_quic_retry(
            version=QuicProtocolVersion.VERSION_1,  # the only version accepted (checked in _accept)
            source_cid=retry_cid,
            destination_cid=header.source_cid,
            original_destination_cid=header.destination_cid,
            retry_token=token,
        )
        udp.send_now([(packet, addr)])
        self._transport.counters.quic_retries += 1
        self._transport.notify()

    def _dropped(self, addr: Address, why: str) -> None:
        counters = self._transport.counters
        counters.quic_initials_dropped += 1
        self._transport.notify()
        if counters.quic_initials_dropped == 1 or counters.quic_initials_dropped % 1000 == 0:
            log.warning(
                "QUIC %s: dropped an Initial from %s: %s (%d dropped so far)",
                self._addr,
                addr[0],
                why,
                counters.quic_initials_dropped,
            )

    def _ended(self, conn: QuicConn) -> None:
        self.admission.ended(conn)
        if self._conns.get(conn.remote) is conn:
            del self._conns[conn.remote]

    async def _run_inbound(self, conn: QuicConn) -> None:
        """Run the connection; once its handshake completes and the client's certificate proves a peer ID,
        hand it to the swarm. py-libp2p's handler then waits for the swarm's end, so it is cancelled when the
        connection ends (one task per live connection, not per connection ever accepted)."""
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(conn.run)
                with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
                    await conn.handshake_done.wait()
            finally:
                over_share = self.admission.handshake_over(conn, completed=conn.is_established)
            if over_share:
                self._transport.counters.quic_connections_refused += 1
                self._transport.notify()
                log.info("QUIC %s: refused a connection from %s:%d: %s", self._addr, *conn.remote, over_share)
                conn._end("too many connections from your network")
                return
            try:
                if not conn.is_established:
                    raise OpenConnectionError(f"handshake failed: {conn.error or 'timed out'}")
                conn.peer_id = self._transport.verify(conn, None)
            except OpenConnectionError as exc:
                log.info("QUIC %s: refused a connection from %s:%d: %s", self._addr, *conn.remote, exc)
                conn._end("peer identity not proven")
                return
            nursery.start_soon(self._hand_over, conn)
            await conn.terminated.wait()
            nursery.cancel_scope.cancel()

    async def _hand_over(self, conn: QuicConn) -> None:
        try:
            await self._handler(conn)
        except Exception:  # the swarm's handler failed: end this connection, keep the listener serving
            log.exception("QUIC %s: the swarm did not take the connection from %s", self._addr, conn)
            conn._end("not accepted")

    def get_addrs(self) -> tuple[multiaddr.Multiaddr, ...]:
        return (self._addr,) if self._addr is not None and self._udp is not None else ()

    async def close(self) -> None:
        """End every connection and close the socket, without waiting (safe while being cancelled)."""
        self._scope.cancel()  # _serve ends at its next checkpoint and closes the socket
        for conn in list(self._conns.values()):
            conn._end("listener closed")
        self._udp = None
        await trio.lowlevel.checkpoint()
