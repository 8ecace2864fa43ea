"""BetaNet over real loopback TCP: Link conformance, Noise enforced, identity binding, oversize frames."""

from __future__ import annotations

import dataclasses
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from node.clock import Clock
from node.errors import ConfigError
from node.identity import Identity
from node.node import Node
from node.settings import Config, NodeSection
from node.transports.base import Link, LinkClosed
from node.transports.betanet.link import BetanetLink
from node.transports.betanet.settings import BetanetSection
from node.transports.betanet.transport import MESH_PROTOCOL, BetanetTransport, DialError
from node.wire import Announce, MessageType, Packet, encode_announce, encode_packet, sign_packet
from tests.test_cli import VILLAGE
from tests.transports.conformance import LinkConformance

# mDNS off: tests multicast only inside network namespaces they create (tests/test_netns.py).
LOOPBACK = BetanetSection(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, max_frame_bytes=65_536, dial_timeout_s=5.0)
WAIT_S = 20.0


async def start_transport(
    nursery: trio.Nursery, ident: Identity | None = None, settings: BetanetSection = LOOPBACK
) -> tuple[BetanetTransport, trio.MemoryReceiveChannel[Link]]:
    t = BetanetTransport(ident or Identity.generate(), settings)
    send, recv = trio.open_memory_channel[Link](16)
    await nursery.start(t.run, send)
    return t, recv


class TestBetanetLinkConformance(LinkConformance):
    @pytest.fixture
    async def link_pair(self, nursery: trio.Nursery) -> AsyncIterator[tuple[Link, Link]]:
        a, _ = await start_transport(nursery)
        b, b_links = await start_transport(nursery)
        with trio.fail_after(WAIT_S):
            out = await a.dial(b.listen_addresses()[0])
            inbound = await b_links.receive()
        yield out, inbound


async def test_identity_is_the_nodes_ed25519_key(nursery: trio.Nursery) -> None:
    ident = Identity.generate()
    t, _ = await start_transport(nursery, ident)
    expected = ID.from_pubkey(create_new_key_pair(bytes(ident.signing_key)).public_key)
    assert t.peer_id == str(expected)
    addr = t.listen_addresses()[0]
    assert addr.startswith("/ip4/127.0.0.1/tcp/") and addr.endswith(f"/p2p/{expected}")
    b, _b_links = await start_transport(nursery)
    with trio.fail_after(WAIT_S):
        link = await b.dial(addr)
    assert link.authenticated_signing_key == ident.signing_public


async def test_plaintext_only_peer_is_refused(nursery: trio.Nursery) -> None:
    ours, our_links = await start_transport(nursery)
    kp = create_new_key_pair()
    plaintext = new_host(
        key_pair=kp, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)}, muxer_opt=create_yamux_muxer_option()
    )
    async with plaintext.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(ours.listen_addresses()[0]))
        with trio.fail_after(WAIT_S), pytest.raises(Exception):  # noqa: B017 - libp2p's error types vary
            await plaintext.connect(info)
            await plaintext.new_stream(info.peer_id, [MESH_PROTOCOL])
        # ...and we cannot be talked into plaintext either: dialling the plaintext host fails.
        with trio.fail_after(WAIT_S), pytest.raises(DialError):
            await ours.dial(str(plaintext.get_addrs()[0]))
    assert ours.counters.links_opened == 0
    with pytest.raises(trio.WouldBlock):
        our_links.receive_nowait()


async def test_dial_errors_are_clear(nursery: trio.Nursery) -> None:
    t, _ = await start_transport(nursery)
    with pytest.raises(DialError, match="not a multiaddr ending in /p2p"):
        await t.dial("/ip4/127.0.0.1/tcp/1")
    with pytest.raises(DialError, match="this node itself"):
        await t.dial(t.listen_addresses()[0])
    nobody = str(ID.from_pubkey(create_new_key_pair().public_key))
    with trio.fail_after(WAIT_S), pytest.raises(DialError, match=r"failed|timed out"):
        await t.dial(f"/ip4/127.0.0.1/tcp/9/p2p/{nobody}")
    assert t.counters.dial_failures == 1


async def test_oversize_frame_closes_the_link_and_is_counted(nursery: trio.Nursery) -> None:
    a, _ = await start_transport(nursery)
    b, b_links = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, max_frame_bytes=1024))
    with trio.fail_after(WAIT_S):
        out = await a.dial(b.listen_addresses()[0])
        inbound = await b_links.receive()
        await out.send(b"fine")
        assert await inbound.receive() == b"fine"
        assert isinstance(out, BetanetLink)
        await out._stream.write(struct.pack(">I", 10_000_000) + b"x" * 100)  # a lying length prefix
        with pytest.raises(Exception, match="closed"):
            await inbound.receive()
    assert b.counters.oversize_frames == 1


@pytest.mark.parametrize("listen", ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"], ids=["tcp", "quic"])
async def test_mismatched_binding_is_rejected(nursery: trio.Nursery, listen: str) -> None:
    """A peer authenticated (Noise over TCP, TLS 1.3 with the libp2p peer-ID certificate over QUIC) as key X
    cannot announce itself as identity Y over that link."""
    d = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    node_ident = Identity.generate()
    settings = dataclasses.replace(LOOPBACK, listen=(listen,))
    node_transport = BetanetTransport(node_ident, settings)
    node = Node(
        Config(data_dir=d, node=NodeSection(nickname="a"), betanet=settings),
        node_ident,
        transports=[node_transport],
        clock=Clock(),
        control=False,
    )
    await nursery.start(node.run)
    liar_ident, victim = Identity.generate(), Identity.generate()
    liar, _ = await start_transport(nursery, liar_ident, settings)
    assert node.core is not None
    counters = node.core.counters

    def announce_of(who: Identity) -> bytes:
        ann = Announce(nickname="x", noise_public_key=who.noise_public, signing_public_key=who.signing_public)
        pkt = Packet(
            version=1,
            type=MessageType.ANNOUNCE,
            ttl=7,
            timestamp_ms=node.clock.wall_ms(),
            sender_id=who.peer_id,
            payload=encode_announce(ann),
        )
        return encode_packet(sign_packet(pkt, who.signing_key))

    with trio.fail_after(WAIT_S):
        link = await liar.dial(node_transport.listen_addresses()[0])
        assert listen.split("/")[3] in link.remote_address  # tcp or udp: the transport under test
        await link.send(announce_of(victim))  # validly signed by the victim, but Noise says it is the liar
        await node.wait_until(lambda: counters.binding_mismatch == 1)
        assert node.core.peers.get(victim.peer_id) is None
        await link.send(announce_of(liar_ident))  # the truth is accepted
        await node.wait_until(lambda: node.core.peers.get(liar_ident.peer_id) is not None)  # type: ignore[union-attr]
    node.request_stop()


def test_bad_listen_addresses_are_clear_errors() -> None:
    """Refused by the [betanet] section itself, so `village config check` finds them before a start."""
    with pytest.raises(ConfigError, match=r"betanet\.listen: not a valid multiaddr"):
        dataclasses.replace(LOOPBACK, listen=("not a multiaddr",))
    for bootstrap in ("/ip4/127.0.0.1/tcp/4001", "nonsense"):  # no /p2p/<id>, not a multiaddr
        with pytest.raises(ConfigError, match=r"betanet\.bootstrap: .* is not a multiaddr ending in /p2p/"):
            dataclasses.replace(LOOPBACK, bootstrap=(bootstrap,))


async def test_unreachable_bootstrap_is_logged_counted_and_retried(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = str(ID.from_pubkey(create_new_key_pair().public_key))
    dead = f"/ip4/127.0.0.1/tcp/9/p2p/{nobody}"  # nothing listens on port 9 (discard)
    settings = dataclasses.replace(LOOPBACK, bootstrap=(dead,), reconnect_initial_s=0.1, reconnect_max_s=0.2)
    t, _ = await start_transport(nursery, settings=settings)
    with trio.fail_after(WAIT_S):
        await t.wait_counters(lambda c: c.dial_failures >= 3)  # backoff keeps retrying; the node keeps running
    assert any(f"bootstrap {dead}" in r.getMessage() and "retrying in" in r.getMessage() for r in caplog.records)
    assert t.listen_addresses()  # still serving


async def test_stalled_peer_is_closed_and_counted(nursery: trio.Nursery) -> None:
    """A Noise-speaking peer opens the mesh stream, then neither reads nor writes: both our reader (nothing
    arrives) and our writer (yamux's window fills) give up after stall_timeout_s."""
    ours, our_links = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, stall_timeout_s=1.0))
    staller = BetanetTransport(Identity.generate(), LOOPBACK)
    host = staller._make_host([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(ours.listen_addresses()[0]))
        await host.get_network().dial_addr(info.addrs[0], info.peer_id)
        stream = await host.new_stream(info.peer_id, [MESH_PROTOCOL])  # ...and then silence
        with trio.fail_after(WAIT_S):
            link = await our_links.receive()
            with pytest.raises(LinkClosed):  # reader side: nothing arrives
                await link.receive()
        assert ours.counters.stalled == 1
        # Writer side: a fresh stream whose peer never reads; our sends block, then the link is closed.
        stream2 = await host.new_stream(info.peer_id, [MESH_PROTOCOL])
        with trio.fail_after(WAIT_S):
            link2 = await our_links.receive()
            with pytest.raises(LinkClosed):
                for _ in range(1000):
                    await link2.send(b"z" * 60_000)
        assert ours.counters.stalled >= 2
        await stream.reset()
        await stream2.reset()


async def test_dialling_a_peer_without_the_mesh_protocol_reports_its_refusal_and_hangs_up(
    nursery: trio.Nursery,
) -> None:
    """A libp2p host that speaks Noise and yamux but not /aivillage/mesh/1.0.0: the error says the peer refused
    the protocol (not "failed to open a stream"), and the connection the dial made is closed again."""
    ours, _ = await start_transport(nursery)
    kp = create_new_key_pair()
    other = new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)},
        muxer_opt=create_yamux_muxer_option(),
    )
    async with other.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        addr = f"{other.get_addrs()[0]}"
        addr = addr if "/p2p/" in addr else f"{addr}/p2p/{other.get_id()}"
        with (
            trio.fail_after(WAIT_S),
            pytest.raises(DialError, match=r"refused /aivillage/mesh/1\.0\.0: protocol not supported"),
        ):
            await ours.dial(addr)
        assert ours.host is not None
        assert not ours.host.get_network().get_connections(other.get_id())
    assert ours.counters.dial_failures == 1 and ours.counters.links_opened == 0


async def test_mesh_streams_beyond_the_per_connection_limit_are_reset_and_counted(nursery: trio.Nursery) -> None:
    """betanet.max_mesh_streams_per_connection = 2: a peer opening five mesh streams on one connection gets two
    links; the other three streams are reset and counted, and the two links keep working."""
    ours, links = await start_transport(
        nursery, settings=dataclasses.replace(LOOPBACK, max_mesh_streams_per_connection=2)
    )
    kp = create_new_key_pair()
    other = new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)},
        muxer_opt=create_yamux_muxer_option(),
    )
    async with other.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(ours.listen_addresses()[0]))
        with trio.fail_after(WAIT_S):
            await other.connect(info)
            opened = []
            for _ in range(5):
                try:
                    opened.append(await other.new_stream(info.peer_id, [MESH_PROTOCOL]))
                except Exception:  # noqa: BLE001 - libp2p raises assorted errors for a refused stream; refusals are counted below
                    continue
            await ours.wait_counters(lambda c: c.mesh_streams_refused == 3)
            assert ours.counters.links_opened == 2
            first, second = await links.receive(), await links.receive()
            for n, stream in enumerate(opened[:2]):
                await stream.write(struct.pack(">I", 6) + b"hello%d" % n)
            assert {await first.receive(), await second.receive()} == {b"hello0", b"hello1"}
    assert ours.counters.mesh_streams_refused == 3


async def test_village_connect_reports_the_refusal(nursery: trio.Nursery) -> None:
    """`village connect` (a real CLI process, through the control socket) to a libp2p peer without the mesh
    protocol exits 1 naming the refusal, and the node keeps no connection to that peer."""
    d = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    transport = BetanetTransport(Identity.generate(), LOOPBACK)
    node = Node(Config(data_dir=d, betanet=LOOPBACK), Identity.generate(), transports=[transport])
    await nursery.start(node.run)
    kp = create_new_key_pair()
    other = new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)},
        muxer_opt=create_yamux_muxer_option(),
    )
    async with other.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        addr = f"{other.get_addrs()[0]}"
        addr = addr if "/p2p/" in addr else f"{addr}/p2p/{other.get_id()}"
        with trio.fail_after(WAIT_S):
            r = await trio.run_process(
                [*VILLAGE, "connect", addr, "--socket", str(node.config.socket_path)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert r.returncode == 1
        assert b"refused /aivillage/mesh/1.0.0: protocol not supported" in r.stderr, r.stderr
        assert b"failed to open a stream" not in r.stderr
        assert transport.host is not None and not transport.host.get_network().get_connections(other.get_id())
    nursery.cancel_scope.cancel()
