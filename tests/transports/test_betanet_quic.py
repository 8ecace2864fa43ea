"""BetaNet over real loopback QUIC (/udp/N/quic-v1): Link conformance, the remote peer ID authenticated by
libp2p's TLS 1.3 certificate, the mesh identity binding, fallback to TCP, stalls and oversize frames counted,
and clean shutdown."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.identity import Identity
from node.transports.base import Link, LinkClosed
from node.transports.betanet import quic_transport
from node.transports.betanet.link import BetanetLink
from node.transports.betanet.quic import dial_order, is_quic, tcp_twin
from node.transports.betanet.quic_conn import QuicConn, UdpSocket
from node.transports.betanet.quic_transport import parse_quic
from node.transports.betanet.transport import MESH_PROTOCOL, BetanetTransport, DialError
from tests.certs import self_signed
from tests.transports.conformance import LinkConformance
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport

QUIC = dataclasses.replace(LOOPBACK, listen=("/ip4/127.0.0.1/udp/0/quic-v1",))
BOTH = dataclasses.replace(LOOPBACK, listen=("/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"))


def quic_address(t: BetanetTransport) -> str:
    return next(a for a in t.listen_addresses() if is_quic(a))


class TestBetanetQuicLinkConformance(LinkConformance):
    @pytest.fixture
    async def link_pair(self, nursery: trio.Nursery) -> AsyncIterator[tuple[Link, Link]]:
        a, _ = await start_transport(nursery, settings=QUIC)
        b, b_links = await start_transport(nursery, settings=QUIC)
        with trio.fail_after(WAIT_S):
            out = await a.dial(quic_address(b))
            inbound = await b_links.receive()
        assert "/quic" in out.remote_address and "/quic" in inbound.remote_address
        yield out, inbound


async def test_listens_on_quic_and_tcp_and_advertises_quic_first(nursery: trio.Nursery) -> None:
    ident = Identity.generate()
    t, _ = await start_transport(nursery, ident, BOTH)
    addrs = t.listen_addresses()
    assert len(addrs) == 2 and "/udp/" in addrs[0] and "/quic-v1/" in addrs[0] and "/tcp/" in addrs[1]
    assert all(a.endswith(f"/p2p/{t.peer_id}") for a in addrs)
    b, _ = await start_transport(nursery, settings=BOTH)
    with trio.fail_after(WAIT_S):
        link = await b.dial(addrs[0])
    assert "/quic-v1/" in link.remote_address
    assert link.authenticated_signing_key == ident.signing_public  # from the peer ID TLS authenticated
    assert b.counters.dial_fallbacks == 0


async def test_quic_authenticates_the_remote_peer_id(nursery: trio.Nursery) -> None:
    """The TLS 1.3 handshake proves the key behind the peer ID: dialling a QUIC listener while expecting
    another identity is refused, and nothing reaches either node."""
    b, b_links = await start_transport(nursery, settings=QUIC)
    a, a_links = await start_transport(nursery, settings=QUIC)
    someone_else = ID.from_pubkey(create_new_key_pair().public_key)
    wrong = quic_address(b).replace(b.peer_id, str(someone_else))
    with trio.fail_after(WAIT_S), pytest.raises(DialError):
        await a.dial(wrong)
    assert a.counters.dial_failures == 1
    assert a.counters.links_opened == 0 and b.counters.links_opened == 0
    for links in (a_links, b_links):
        with pytest.raises(trio.WouldBlock):
            links.receive_nowait()
    with trio.fail_after(WAIT_S):  # the right identity connects
        link = await a.dial(quic_address(b))
    assert link.authenticated_signing_key is not None


def test_dial_order_puts_quic_first_then_its_tcp_twin() -> None:
    q = multiaddr.Multiaddr("/ip4/10.0.0.1/udp/4001/quic-v1")
    assert str(tcp_twin(q)) == "/ip4/10.0.0.1/tcp/4001"
    other = [multiaddr.Multiaddr("/ip4/10.0.0.2/tcp/5"), multiaddr.Multiaddr("/ip4/10.0.0.2/udp/6/quic-v1")]
    assert [str(a) for a in dial_order(q, other)] == [
        "/ip4/10.0.0.1/udp/4001/quic-v1",
        "/ip4/10.0.0.1/tcp/4001",
        "/ip4/10.0.0.2/udp/6/quic-v1",
        "/ip4/10.0.0.2/tcp/5",
    ]
    tcp = multiaddr.Multiaddr("/ip4/10.0.0.1/tcp/4001")
    assert dial_order(tcp, other) == [tcp]  # an explicit TCP address is dialled as given


async def test_falls_back_to_tcp_when_quic_does_not_answer(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer listening on TCP only: its QUIC address (same port on UDP) answers with ICMP port unreachable,
    which ends the QUIC dial at once (not after QUIC_ATTEMPT_S), and the dial connects over TCP instead,
    counted in dial_fallbacks and logged with the reason."""
    caplog.set_level(logging.INFO, "village.betanet")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b, b_links = await start_transport(
        nursery, settings=dataclasses.replace(LOOPBACK, listen=(f"/ip4/127.0.0.1/tcp/{port}",))
    )
    a, _ = await start_transport(nursery, settings=BOTH)
    with trio.fail_after(WAIT_S):
        link = await a.dial(f"/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{b.peer_id}")
        inbound = await b_links.receive()
        await link.send(b"over tcp")
        assert await inbound.receive() == b"over tcp"
    assert f"/tcp/{port}/" in link.remote_address
    assert a.counters.dial_fallbacks == 1 and a.counters.dial_failures == 0
    assert any("after" in r.getMessage() and "port unreachable" in r.getMessage() for r in caplog.records)


async def test_oversize_frame_over_quic_is_counted_and_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = await start_transport(nursery, settings=QUIC)
    b, b_links = await start_transport(nursery, settings=dataclasses.replace(QUIC, max_frame_bytes=1024))
    with trio.fail_after(WAIT_S):
        out = await a.dial(quic_address(b))
        inbound = await b_links.receive()
        await out.send(b"fine")
        assert await inbound.receive() == b"fine"
        assert isinstance(out, BetanetLink)
        await out._stream.write(struct.pack(">I", 10_000_000) + b"x" * 100)  # a lying length prefix
        with pytest.raises(LinkClosed):
            await inbound.receive()
    assert b.counters.oversize_frames == 1
    assert any("10000000-byte frame" in r.getMessage() for r in caplog.records)


async def test_stalled_quic_peer_is_closed_counted_and_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer opens the mesh stream over QUIC and then stays silent: our reader gives up after
    stall_timeout_s (py-libp2p's own 30 s read timeout is off; ours decides)."""
    caplog.set_level(logging.WARNING, "village.betanet")
    ours, our_links = await start_transport(nursery, settings=dataclasses.replace(QUIC, stall_timeout_s=1.0))
    staller = BetanetTransport(Identity.generate(), QUIC)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1")]
    host = staller._make_host(listen)
    async with host.run(listen_addrs=listen):
        info = info_from_p2p_addr(multiaddr.Multiaddr(quic_address(ours)))
        await host.get_network().dial_addr(info.addrs[0], info.peer_id)
        stream = await host.new_stream(info.peer_id, [MESH_PROTOCOL])  # ...and then silence
        with trio.fail_after(WAIT_S):
            link = await our_links.receive()
            with pytest.raises(LinkClosed):
                await link.receive()
        assert ours.counters.stalled == 1
        assert any("sent nothing" in r.getMessage() and "stall_timeout_s" in r.getMessage() for r in caplog.records)
        await stream.reset()


def test_quic_shutdown_is_clean_repeatedly(caplog: pytest.LogCaptureFixture) -> None:
    """Two nodes connect over QUIC, exchange frames and stop, three times over, each in a fresh trio run:
    no exception escapes (py-libp2p 0.8 raised "Nursery is closed to new arrivals" here), nothing is logged
    at ERROR, and the UDP port is free again afterwards."""

    async def once() -> int:
        async with trio.open_nursery() as nursery:
            a, _ = await start_transport(nursery, settings=QUIC)
            b, b_links = await start_transport(nursery, settings=QUIC)
            addr = quic_address(b)
            with trio.fail_after(WAIT_S):
                out = await a.dial(addr)
                inbound = await b_links.receive()
                for i in range(20):
                    await out.send(b"%d" % i)
                    assert await inbound.receive() == b"%d" % i
                    await inbound.send(b"ack")
                    assert await out.receive() == b"ack"
            nursery.cancel_scope.cancel()
        return int(addr.split("/udp/")[1].split("/")[0])

    for _ in range(3):
        port = trio.run(once)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))  # the listener's socket was closed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


@asynccontextmanager
async def libp2p_quic_host() -> AsyncIterator[IHost]:
    """A host built by py-libp2p alone, with its own QUIC transport (not ours): the interop reference."""
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1")]
    host = new_host(key_pair=create_new_key_pair(), listen_addrs=listen, enable_mDNS=False)
    async with host.run(listen_addrs=listen):
        yield host


async def test_interoperates_with_py_libp2p_own_quic(nursery: trio.Nursery) -> None:
    """Our QUIC transport speaks the libp2p QUIC spec: py-libp2p's own QUIC host dials us, and we dial it;
    both sides authenticate the other's peer ID, and frames cross in both directions."""
    ours, our_links = await start_transport(nursery, settings=QUIC)
    async with libp2p_quic_host() as theirs:
        echoed: list[bytes] = []

        async def echo(stream: INetStream) -> None:
            data = await stream.read(100)
            echoed.append(data)
            await stream.write(data)

        theirs.set_stream_handler(MESH_PROTOCOL, echo)
        with trio.fail_after(WAIT_S):
            # They dial us: our link's authenticated key is their host key.
            info = info_from_p2p_addr(multiaddr.Multiaddr(quic_address(ours)))
            await theirs.get_network().dial_addr(info.addrs[0], info.peer_id)
            stream = await theirs.new_stream(info.peer_id, [MESH_PROTOCOL])
            await stream.write(struct.pack(">I", 5) + b"hello")
            inbound = await our_links.receive()
            assert await inbound.receive() == b"hello"
            assert inbound.authenticated_signing_key == theirs.get_public_key().to_bytes()
            await inbound.send(b"back")
            assert await stream.read(100) == struct.pack(">I", 4) + b"back"
            # We dial them (a second connection, from our side).
            their_addr = f"{theirs.get_addrs()[0]}"
            link = await ours.dial(their_addr if "/p2p/" in their_addr else f"{their_addr}/p2p/{theirs.get_id()}")
            assert "/quic-v1/" in link.remote_address
            await link.send(b"ping")
            assert await link.receive() == b"ping"
        assert echoed == [struct.pack(">I", 4) + b"ping"]


async def test_a_client_without_the_libp2p_certificate_is_refused(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain QUIC client (aioquic, ALPN libp2p, an ordinary self-signed certificate with no peer-ID
    extension) completes TLS but proves no peer ID: we close the connection and no link or stream appears."""
    caplog.set_level(logging.INFO, "village.betanet.quic")
    ours, our_links = await start_transport(nursery, settings=QUIC)
    _family, (host, port), _peer = parse_quic(multiaddr.Multiaddr(quic_address(ours)))
    key, cert = self_signed("not-libp2p", valid_for=datetime.timedelta(days=1))
    config = QuicConfiguration(is_client=True, alpn_protocols=["libp2p"], verify_mode=ssl.CERT_NONE)
    config.certificate, config.private_key = cert, key
    client = QuicConnection(configuration=config)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setblocking(False)
        client.connect((host, port), trio.current_time())
        terminated: events.ConnectionTerminated | None = None
        with trio.fail_after(WAIT_S):
            while terminated is None:  # a minimal aioquic client loop: send, wait for data or its timer, feed
                for data, addr in client.datagrams_to_send(trio.current_time()):
                    udp.sendto(data, addr)
                timer = client.get_timer()
                with trio.move_on_at(timer if timer is not None else math.inf):
                    await trio.lowlevel.wait_readable(udp)
                if timer is not None and trio.current_time() >= timer:
                    client.handle_timer(trio.current_time())
                while True:
                    try:
                        data, addr = udp.recvfrom(65536)
                    except BlockingIOError:
                        break
                    client.receive_datagram(data, addr, trio.current_time())
                while (event := client.next_event()) is not None:
                    if isinstance(event, events.ConnectionTerminated):
                        terminated = event
    assert terminated.reason_phrase == "peer identity not proven"
    assert any("refused a connection" in r.getMessage() for r in caplog.records)
    assert ours.counters.links_opened == 0
    with pytest.raises(trio.WouldBlock):
        our_links.receive_nowait()


async def test_junk_datagrams_are_dropped_and_the_listener_keeps_serving(nursery: trio.Nursery) -> None:
    b, b_links = await start_transport(nursery, settings=QUIC)
    a, _ = await start_transport(nursery, settings=QUIC)
    _family, target, _peer = parse_quic(multiaddr.Multiaddr(quic_address(b)))
    junk = [b"", b"\x00", b"hello", b"\xc0" + b"\xff" * 40, b"\x40" + bytes(1200), bytes(range(256)) * 5]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for datagram in junk:
            udp.sendto(datagram, target)
    with trio.fail_after(WAIT_S):
        link = await a.dial(quic_address(b))
        inbound = await b_links.receive()
        await link.send(b"still serving")
        assert await inbound.receive() == b"still serving"
    assert b.counters.links_opened == 1


async def test_keepalive_holds_a_quiet_link_and_a_vanished_peer_ends_it(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 1 s QUIC idle timeout: a link that carries nothing for 3 s stays up (PINGs every 0.5 s); when the
    peer vanishes without a CONNECTION_CLOSE (its socket just stops), the link ends at the idle timeout instead
    of waiting for betanet.stall_timeout_s."""
    monkeypatch.setattr(quic_transport, "IDLE_TIMEOUT_S", 1.0)
    a, _ = await start_transport(nursery, settings=QUIC)
    b, b_links = await start_transport(nursery, settings=QUIC)
    with trio.fail_after(WAIT_S):
        link = await a.dial(quic_address(b))
        inbound = await b_links.receive()
    with trio.move_on_after(3.0) as quiet:  # three idle timeouts with nothing to carry
        await link.receive()
    assert quiet.cancelled_caught  # nothing arrived, and the link did not close
    with trio.fail_after(WAIT_S):
        await link.send(b"still here")
        assert await inbound.receive() == b"still here"
    assert b._quic is not None
    for listener in b._quic._listeners:
        listener._scope.cancel()  # b's socket goes silent: no CONNECTION_CLOSE, no more datagrams
    with trio.fail_after(WAIT_S), pytest.raises(LinkClosed):
        await link.receive()


async def test_a_reader_that_stops_slows_the_sender_down_instead_of_resetting_its_stream(
    nursery: trio.Nursery,
) -> None:
    """Flow-control credit is granted as the node reads (quic_conn.ReadCredit), not as data arrives: when the
    receiving node stops reading, the sender is held at the window (here 256 KiB unread at most) instead of
    filling our buffers until the stream is reset; once the node reads again every frame arrives."""
    settings = dataclasses.replace(QUIC, quic_stream_window_bytes=256 * 1024)
    a, _ = await start_transport(nursery, settings=settings)
    b, b_links = await start_transport(nursery, settings=settings)
    frame, count = b"f" * 60_000, 200  # 12 MB: far more than every buffer on the way holds
    sent = 0

    async def sender() -> None:
        nonlocal sent
        for _ in range(count):
            await link.send(frame)
            sent += 1

    with trio.fail_after(WAIT_S):
        link = await a.dial(quic_address(b))
        inbound = await b_links.receive()  # ...not read yet: its queue fills, then the stream's window
        assert b._quic is not None
        (conn,) = b._quic._listeners[0]._conns.values()
        nursery.start_soon(sender)
        await conn.wait_until(lambda: conn.unread_bytes >= 128 * 1024)
        assert sent < count and conn.unread_high_water <= 256 * 1024
        for _ in range(count):
            assert await inbound.receive() == frame
    assert sent == count
    assert conn.unread_high_water <= 256 * 1024
    assert (conn.streams_over_limit, b.counters.quic_streams_over_limit) == (0, 0)


def spoofed_initials(target: tuple[str, int], source_ip: str, n: int) -> list[socket.socket]:
    """``n`` genuine QUIC v1 client Initials (aioquic's), each from its own UDP port on ``source_ip``, never
    followed up: what an attacker spoofing source addresses sends."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["libp2p"])
    socks = []
    for _ in range(n):
        client = QuicConnection(configuration=config)
        client.connect(target, now=0.0)
        (datagram, _addr), *_ = client.datagrams_to_send(now=0.0)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source_ip, 0))
        s.sendto(datagram, target)
        socks.append(s)
    return socks


async def testspoofed_initials_from_one_address_hold_at_most_its_share(nursery: trio.Nursery) -> None:
    """Initials from one (spoofed) address: at most betanet.quic_max_handshakes_per_ip handshakes are kept for
    it, the rest get a stateless Retry (no state: a spoofer never answers, a real client of that address would),
    and a peer from another address still connects."""
    settings = dataclasses.replace(QUIC, quic_max_handshakes=100, quic_max_handshakes_per_ip=8)
    b, b_links = await start_transport(nursery, settings=settings)
    a, _ = await start_transport(nursery, settings=QUIC)
    assert b._quic is not None
    port = int(quic_address(b).split("/udp/")[1].split("/")[0])
    socks = spoofed_initials(("127.0.0.1", port), "127.0.0.2", 12)
    try:
        with trio.fail_after(WAIT_S):
            await b.wait_counters(lambda c: c.quic_retries >= 4)
            link = await a.dial(quic_address(b))  # from 127.0.0.1: its own slots
            inbound = await b_links.receive()
            await link.send(b"served")
            assert await inbound.receive() == b"served"
        (listener,) = b._quic._listeners
        assert listener.admission.unvalidated == {"127.0.0.2": 8}
        assert (b.counters.quic_initials_dropped, b.counters.quic_retries) == (0, 4)
    finally:
        for s in socks:
            s.close()


async def test_under_pressure_new_addresses_get_a_retry_and_no_state(nursery: trio.Nursery) -> None:
    """Once half of betanet.quic_max_handshakes are in progress, an Initial from a new address is answered with
    a stateless Retry: spoofed sources never come back, so they cost no state; a real peer answers the Retry
    with its token and connects."""
    settings = dataclasses.replace(QUIC, quic_max_handshakes=8, quic_max_handshakes_per_ip=8)
    b, b_links = await start_transport(nursery, settings=settings)
    a, _ = await start_transport(nursery, settings=QUIC)
    assert b._quic is not None
    port = int(quic_address(b).split("/udp/")[1].split("/")[0])
    socks = spoofed_initials(("127.0.0.1", port), "127.0.0.2", 4)  # half the table: pressure from now on
    try:
        socks += spoofed_initials(("127.0.0.1", port), "127.0.0.3", 30)
        with trio.fail_after(WAIT_S):
            await b.wait_counters(lambda c: c.quic_retries >= 30)
        (listener,) = b._quic._listeners
        assert listener.admission.unvalidated == {"127.0.0.2": 4} and b.counters.quic_initials_dropped == 0
        with trio.fail_after(WAIT_S):
            link = await a.dial(quic_address(b))  # gets a Retry too, and comes back with the token
            inbound = await b_links.receive()
            await link.send(b"validated")
            assert await inbound.receive() == b"validated"
        assert b.counters.quic_retries == 31
    finally:
        for s in socks:
            s.close()


async def test_an_initial_in_a_short_datagram_is_dropped(nursery: trio.Nursery) -> None:
    """RFC 9000 14.1: a client's Initial datagram is at least 1200 bytes; a shorter one (cheap to send, and an
    amplification lever) makes no connection."""
    b, _ = await start_transport(nursery, settings=QUIC)
    assert b._quic is not None
    port = int(quic_address(b).split("/udp/")[1].split("/")[0])
    client = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["libp2p"]))
    client.connect(("127.0.0.1", port), now=0.0)
    (datagram, _addr), *_ = client.datagrams_to_send(now=0.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(datagram[:1100], ("127.0.0.1", port))
        with trio.fail_after(WAIT_S):
            await b.wait_counters(lambda c: c.quic_initials_dropped == 1)
    assert not b._quic._listeners[0]._conns


def quic_conns(a_link: Link, b: BetanetTransport) -> tuple[QuicConn, QuicConn]:
    """The dialling side's QuicConn (under ``a_link``) and the listener's (``b`` has one connection)."""
    assert isinstance(a_link, BetanetLink) and b._quic is not None
    client = a_link._stream.muxed_conn
    (server,) = b._quic._listeners[0]._conns.values()
    assert isinstance(client, QuicConn)
    return client, server


def gapped(conn: QuicConn, stream_id: int, size: int) -> None:
    """Queue ``size`` bytes on a new stream whose byte 0 is never sent: the rest arrives out of order and the
    receiver's aioquic buffers it with no event for the application."""
    conn.quic.send_stream_data(stream_id, b"x" * size)
    conn.quic._streams[stream_id].sender._pending.subtract(0, 1)


async def test_out_of_order_data_counts_against_the_connection_window(nursery: trio.Nursery) -> None:
    """A peer that never sends byte 0 of its streams (the review's quic_gap_memory): aioquic buffers the rest
    undelivered. That data counts as held, so the connection's credit (MAX_DATA) is not raised and what the node
    holds stays within the connection window, instead of ~a stream window per stream (40 MB here; 128 MiB with
    aioquic's 128 streams). The peer also has at most quic_max_streams_per_connection streams open."""
    a, _ = await start_transport(nursery, settings=QUIC)
    b, b_links = await start_transport(nursery, settings=dataclasses.replace(QUIC, quic_max_streams_per_connection=8))
    with trio.fail_after(WAIT_S):
        link = await a.dial(quic_address(b))
        await b_links.receive()
    client, server = quic_conns(link, b)
    window = server.quic.connection_window
    initial_max_data = server.quic._local_max_data.value
    for _ in range(40):
        gapped(client, client.quic.get_next_available_stream_id(), 1_000_000)
    await client.flush()

    def held() -> int:  # undelivered in aioquic (out of order, or a gap) plus delivered and unread
        streams = server.quic._streams.values()
        return sum(s.receiver.highest_offset - s.receiver._buffer_start for s in streams) + server.unread_bytes

    def peer_streams() -> int:
        return sum(1 for sid in server.quic._streams if sid % 4 == 0)  # client-initiated bidirectional

    def settled() -> bool:  # the client used all its credit and the server has all it sent (or the bound broke)
        sent = client.quic._remote_max_data_used
        return held() > window or (sent >= client.quic._remote_max_data and server.quic._local_max_data.used == sent)

    with trio.fail_after(WAIT_S):
        await server.wait_until(settled)
    assert window == 4 * 1_048_576 and held() <= window
    assert sum(len(s.receiver._buffer) for s in server.quic._streams.values()) <= window
    assert server.quic._local_max_data.value == initial_max_data  # nothing was read: no new credit
    assert peer_streams() <= 8 and client.quic._streams_blocked_bidi  # the rest wait for a stream slot


async def test_streams_reset_by_the_peer_free_their_slots(nursery: trio.Nursery) -> None:
    """The stream bound limits streams open at once, not in all: 40 streams, each reset by the peer on its
    sending side only (RESET_STREAM without STOP_SENDING), open one after another with a bound of 4 (the node
    resets its side too, so aioquic discards each stream and lets the peer open another)."""
    a, _ = await start_transport(nursery, settings=QUIC)
    b, b_links = await start_transport(nursery, settings=dataclasses.replace(QUIC, quic_max_streams_per_connection=4))
    with trio.fail_after(WAIT_S):
        link = await a.dial(quic_address(b))
        inbound = await b_links.receive()
    client, server = quic_conns(link, b)
    with trio.fail_after(WAIT_S):
        for _ in range(40):
            stream = await client.open_stream()
            await stream.write(b"x")
            await client.wait_until(lambda: not client.quic._streams_blocked_bidi)  # a slot: the stream is sent
            client.quic.reset_stream(stream.stream_id, 1)
            client._forget(stream)
            await client.flush()
        await link.send(b"still up")
        assert await inbound.receive() == b"still up"
    assert sum(1 for sid in server.quic._streams if sid % 4 == 0) <= 4


async def test_one_address_holds_at_most_its_share_of_connections(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's conn_exhaust: peers with fresh identities from one address complete handshakes one after
    another. Only betanet.quic_max_connections_per_ip of them are kept (the next dial fails, its Initial dropped
    and counted), so a peer from another address still finds room in the table (quic_max_connections = 6)."""
    settings = dataclasses.replace(QUIC, quic_max_connections=6, quic_max_connections_per_ip=2)
    b, b_links = await start_transport(nursery, settings=settings)
    addr = quic_address(b)
    for _ in range(2):
        a, _ = await start_transport(nursery, settings=QUIC)
        with trio.fail_after(WAIT_S):
            await a.dial(addr)
            await b_links.receive()
    for _ in range(4):  # the rest of the table, from the same address: refused
        a, _ = await start_transport(nursery, settings=dataclasses.replace(QUIC, dial_timeout_s=1.0))
        with trio.fail_after(WAIT_S), pytest.raises(DialError):
            await a.dial(addr)
    assert b._quic is not None
    (listener,) = b._quic._listeners
    assert len(listener._conns) == 2 and listener.admission.validated == {"127.0.0.1": 2}
    assert b.counters.quic_initials_dropped >= 4
    honest, _ = await start_transport(nursery, settings=QUIC)
    monkeypatch.setattr(  # the honest peer dials from 127.0.0.2
        quic_transport, "UdpSocket", lambda family, bind, peer: UdpSocket(family, ("127.0.0.2", 0), peer)
    )
    with trio.fail_after(WAIT_S):
        link = await honest.dial(addr)
        inbound = await b_links.receive()
        await link.send(b"room for me")
        assert await inbound.receive() == b"room for me"
    assert listener.admission.validated == {"127.0.0.1": 2, "127.0.0.2": 1}


async def test_a_handshake_completing_over_its_share_is_closed(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Handshakes from unvalidated addresses are counted apart from validated connections, so another client of
    the same address may take the last share while one is in handshake: that one is closed when it completes,
    counted, and never reaches the swarm."""
    caplog.set_level(logging.INFO, "village.betanet.quic")
    b, b_links = await start_transport(nursery, settings=dataclasses.replace(QUIC, quic_max_connections_per_ip=1))
    assert b._quic is not None
    (listener,) = b._quic._listeners
    admission = listener.admission
    opened = admission.opened

    def and_another_validates(key: object, host: str, *, validated: bool) -> None:
        opened(key, host, validated=validated)
        opened("another client", host, validated=True)  # ...validated while this one is in handshake

    admission.opened = and_another_validates  # type: ignore[method-assign]
    a, _ = await start_transport(nursery, settings=dataclasses.replace(QUIC, dial_timeout_s=2.0))
    with trio.fail_after(WAIT_S), pytest.raises(DialError):
        await a.dial(quic_address(b))
    assert b.counters.quic_connections_refused >= 1 and b.counters.links_opened == 0
    assert any("quic_max_connections_per_ip" in r.getMessage() for r in caplog.records)
    with pytest.raises(trio.WouldBlock):
        b_links.receive_nowait()
