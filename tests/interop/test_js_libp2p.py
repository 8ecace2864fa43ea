"""BetaNet against an independent libp2p: js-libp2p (from the npm registry) dials the node over TCP (Noise,
yamux) and QUIC, pings, identifies, opens the mesh protocol both ways and enters the node's DHT routing table;
the node dials it back over both. Skipped (with npm's reason) only when the npm registry cannot be reached."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from pathlib import Path

import trio
from libp2p.peer.id import ID

from node.transports.betanet.counters import BetanetCounters
from node.transports.betanet.link import BetanetLink
from node.transports.betanet.transport import MESH_PROTOCOL
from tests.interop.jspeer import js_peer
from tests.transports.test_betanet import LOOPBACK, start_transport
from tests.transports.test_betanet_quic import spoofed_initials

BOTH = dataclasses.replace(LOOPBACK, listen=("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"))
WAIT_S = 30.0


def identified_at_least(n: int) -> Callable[[BetanetCounters], bool]:
    return lambda c: c.identified >= n


def framed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


async def test_js_libp2p_dials_the_node_over_tcp_and_quic(nursery: trio.Nursery, tmp_path: Path) -> None:
    node, links = await start_transport(nursery, settings=dataclasses.replace(BOTH, dht_mode="server"))
    tcp = next(a for a in node.listen_addresses() if "/tcp/" in a)
    quic = next(a for a in node.listen_addresses() if "/quic-v1" in a)
    async with js_peer(tmp_path / "js.log") as js:
        for n, addr in enumerate((tcp, quic), start=1):
            with trio.fail_after(WAIT_S):
                conn = await js.call("dial", addr=addr)
                assert conn["remote"] == node.peer_id
                await js.call("ping", cid=conn["cid"])
                ident = await js.call("identify", cid=conn["cid"])
                assert ident["peer"] == node.peer_id
                assert {MESH_PROTOCOL, "/ipfs/kad/1.0.0", "/ipfs/ping/1.0.0"} <= set(ident["protocols"])
                # Our host identified the js peer once on this connection (js-libp2p accepts one inbound
                # identify stream per connection: a second one used to abort ours), and routes to it.
                await node.wait_counters(identified_at_least(n))
                (opened,) = (await js.call("open", cid=conn["cid"]))["streams"]
                link = await links.receive()
                assert isinstance(link, BetanetLink)
                assert link.remote_address.endswith(f"/p2p/{js.peer_id}")
                assert ("/quic-v1/" in link.remote_address) == (addr == quic)
                await link.send(b"from the node")
                got = await js.call("read_frame", sid=opened["sid"])
                assert bytes.fromhex(got["hex"]) == b"from the node"
                await js.call("write", sid=opened["sid"], hex=framed(b"from js").hex())
                assert await link.receive() == b"from js"
                await js.call("hangup", cid=conn["cid"])
                await link.wait_closed()
        assert node.routing is not None
        assert node.routing.dht.routing_table.peer_in_table(ID.from_base58(js.peer_id))
        assert node.counters.dht_routing_added >= 1 and node.counters.identify_skipped == 0


async def test_the_node_dials_js_libp2p_over_tcp_and_quic(nursery: trio.Nursery, tmp_path: Path) -> None:
    node, _ = await start_transport(nursery, settings=BOTH)
    async with js_peer(tmp_path / "js.log") as js:
        for addr in (js.tcp_addr(), js.quic_addr()):
            with trio.fail_after(WAIT_S):
                link = await node.dial(addr)
                stream = await js.wait_event("stream")
                assert stream["remote"] == node.peer_id
                assert ("/quic-v1" in stream["addr"]) == ("/quic-v1" in addr)
                await link.send(b"ping from the node")
                got = await js.call("read_frame", sid=stream["sid"])
                assert bytes.fromhex(got["hex"]) == b"ping from the node"
                await js.call("write", sid=stream["sid"], hex=framed(b"pong from js").hex())
                assert await link.receive() == b"pong from js"
                await node.wait_counters(lambda c: c.dht_routing_added >= 1)
                await link.aclose()
                assert node.host is not None
                await node.host.disconnect(ID.from_base58(js.peer_id))
        assert node.routing is not None
        assert node.routing.dht.routing_table.peer_in_table(ID.from_base58(js.peer_id))


async def test_a_fast_js_sender_over_quic_is_slowed_down_not_reset(nursery: trio.Nursery, tmp_path: Path) -> None:
    """js-libp2p (quinn) sends 12 MB of frames over QUIC while the node does not read: flow-control credit is
    granted only as the node reads, so the sender waits at the window (256 KiB here) instead of the stream being
    reset at a buffer bound; when the node reads, every frame arrives and the stream is still open."""
    window = 256 * 1024
    node, links = await start_transport(nursery, settings=dataclasses.replace(BOTH, quic_stream_window_bytes=window))
    quic = next(a for a in node.listen_addresses() if "/quic-v1" in a)
    frame_bytes, count = 60_000, 200
    async with js_peer(tmp_path / "js.log") as js:
        with trio.fail_after(WAIT_S):
            conn = await js.call("dial", addr=quic)
            (opened,) = (await js.call("open", cid=conn["cid"]))["streams"]
            link = await links.receive()  # ...not read yet
            assert node._quic is not None
            (qconn,) = node._quic._listeners[0]._conns.values()
            done: list[dict[str, object]] = []

            async def bulk() -> None:
                done.append(await js.call("bulk", sid=opened["sid"], size=frame_bytes, count=count, timeout_s=WAIT_S))

            nursery.start_soon(bulk)
            await qconn.wait_until(lambda: qconn.unread_bytes >= window // 2)
            assert qconn.unread_high_water <= window  # (js-libp2p buffers writes: its bulk call may be done)
        with trio.fail_after(WAIT_S * 2):
            for _ in range(count):
                assert len(await link.receive()) == frame_bytes
            await qconn.wait_until(lambda: bool(done))
    assert done[0]["status"] == "open" and qconn.unread_high_water <= window
    assert qconn.streams_over_limit == 0 and node.counters.quic_streams_over_limit == 0


async def test_js_libp2p_answers_a_quic_retry(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Under handshake pressure (spoofed Initials hold half of betanet.quic_max_handshakes) the node answers a
    new address with a stateless Retry; js-libp2p's QUIC (quinn) comes back with the token and connects."""
    node, _ = await start_transport(
        nursery, settings=dataclasses.replace(BOTH, quic_max_handshakes=8, quic_max_handshakes_per_ip=8)
    )
    quic = next(a for a in node.listen_addresses() if "/quic-v1" in a)
    port = int(quic.split("/udp/")[1].split("/")[0])
    socks = spoofed_initials(("127.0.0.1", port), "127.0.0.2", 4)
    try:
        async with js_peer(tmp_path / "js.log") as js:
            with trio.fail_after(WAIT_S):
                conn = await js.call("dial", addr=quic)
                await js.call("ping", cid=conn["cid"])
        assert node.counters.quic_retries == 1
    finally:
        for s in socks:
            s.close()
