"""BLE over Bumble virtual controllers: link throughput, fragments, reassembly, 3-hop delivery, airtime vs flooding.

    python bench/ble.py [--frames N] [--messages N]

Every figure is one summary line with a ratio against a baseline measured in the same run:
* ``ble.link_frames_per_s``: 200-byte frames through one BLE link (our BleLink.send → GATT write-without-
  response → the peer's BleLink.receive), pacing lifted; baseline: the same writes issued inside Bumble's
  asyncio loop (no trio bridge, no link), received the same way;
* ``ble.link_fragments_per_s``: a 10 KB frame cut into BitChat fragments at the link MTU, sent and reassembled
  on the far side, in fragments/s; baseline: link_frames_per_s;
* ``ble.reassembly_us_per_fragment``: CPU cost of decoding + reassembling one fragment (no radio); baseline:
  ``b"".join`` of the same chunks;
* ``ble.deliver_10KB_3_hops_s``: 4 Nodes on a line of virtual radios (the RSSI gate keeps it a line): seconds
  until 10 KB of private text (41 messages, BitChat caps one at 255 bytes) is delivered *and acknowledged*
  end to end, after a warm-up message set up the Noise session; baseline: the same on memory links (MTU 512);
* ``ble.airtime_bytes_per_delivered``: bytes written to the air by all nodes of a 2×3 grid per private message
  delivered corner to corner (acks included, idle announce traffic subtracted); baseline: the bytes BitChat's
  flooding rules would put on the same links for the same message and ack (every node relays a directed packet
  without a bound link to all links but the ingress). Ratio < 1 means less airtime than flooding.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nacl.signing
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.identity import Identity
from node.node import Node
from node.settings import Config, NodeSection
from node.transports.base import Link, Transport
from node.transports.ble.bumble_adapter import BumbleAdapter, BumbleWorld, open_bumble_world
from node.transports.ble.core import BleSettings
from node.transports.ble.transport import BleLink, BleTransport
from node.transports.memory import MemoryNetwork
from node.wire import (
    MessageType,
    Packet,
    Reassembler,
    decode_fragment_untrusted,
    decode_packet_untrusted,
    encode_packet,
    fragment_frame,
)

TIMEOUT_S = 300.0
BATCH = 200  # frames in flight at once: below the link's receive queue (256) and the radio event queue (1024)
SPACING_M = 3.0
RSSI_GATE_DBM = -72
SENDER = bytes(range(8))


def frame_of(size: int, seq: int) -> bytes:
    pkt = Packet(1, MessageType.MESSAGE, 7, 1_700_000_000_000 + seq, SENDER, payload=os.urandom(size - 30))
    return encode_packet(pkt, compress=False)


async def link_pair(world: BumbleWorld, nursery: trio.Nursery) -> tuple[BleLink, BleLink]:
    sinks: list[trio.MemoryReceiveChannel[Link]] = []
    unpaced = BleSettings(advertise=False, send_rate_per_s=1e9, send_burst=10**6)  # the stack, not our pacing
    for settings in (unpaced, BleSettings(scan=False)):
        send, recv = trio.open_memory_channel[Link](4)
        await nursery.start(BleTransport(BumbleAdapter(world), settings).run, send)
        sinks.append(recv)
    with trio.fail_after(30):
        a, b = await sinks[0].receive(), await sinks[1].receive()
    assert isinstance(a, BleLink) and isinstance(b, BleLink)
    return a, b


async def link_figures(n_frames: int) -> list[str]:
    lines = []
    async with open_bumble_world("bench") as world, trio.open_nursery() as nursery:
        a, b = await link_pair(world, nursery)
        frames = [frame_of(200, i) for i in range(n_frames)]

        # Baseline: the writes issued from inside the asyncio loop, straight into Bumble.
        adapter = a._adapter
        assert isinstance(adapter, BumbleAdapter)

        # Write-without-response has no flow control: a receiver that falls behind drops (and counts) frames.
        # Both runs therefore go in batches the receiving queues can hold, each batch received before the next.
        batches = [frames[i : i + BATCH] for i in range(0, len(frames), BATCH)]

        async def raw_writes(batch: list[bytes]) -> None:
            for f in batch:
                await adapter._send(a._conn_id, f)

        t0 = time.perf_counter()
        for batch in batches:
            await world.aio.call(raw_writes, batch)
            for _ in batch:
                await b.receive()
        base = n_frames / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for batch in batches:
            async with trio.open_nursery() as inner:

                async def send_all(batch: list[bytes] = batch) -> None:
                    for f in batch:
                        await a.send(f)

                inner.start_soon(send_all)
                for _ in batch:
                    await b.receive()
        ours = n_frames / (time.perf_counter() - t0)
        lines.append(
            f"ble.link_frames_per_s: {ours:,.0f} frames/s of 200 B (ratio vs writes issued inside Bumble's loop "
            f"{ours / base:.2f}; baseline {base:,.0f}/s)"
        )

        # Fragments: 10 KB frames at the link MTU, reassembled on the far side.
        big = Packet(1, MessageType.MESSAGE, 7, 1_700_000_000_000, SENDER, payload=os.urandom(10_000))
        wire = encode_packet(big, compress=False)
        reasm = Reassembler()
        rounds = max(1, n_frames // 25)
        sent = 0
        t0 = time.perf_counter()
        for r in range(rounds):
            pieces = fragment_frame(big, wire, a.mtu, os.urandom(8))
            done = trio.Event()

            async def receive_all(count: int = len(pieces), done: trio.Event = done, at: float = float(r)) -> None:
                for _ in range(count):
                    p = decode_packet_untrusted(await b.receive())
                    whole = reasm.add_untrusted(p.sender_id, decode_fragment_untrusted(p.payload), at)
                    if whole is not None:
                        assert whole == wire
                        done.set()

            async with trio.open_nursery() as inner:
                inner.start_soon(receive_all)
                for piece in pieces:
                    await a.send(piece)
            assert done.is_set()
            sent += len(pieces)
        frag_rate = sent / (time.perf_counter() - t0)
        lines.append(
            f"ble.link_fragments_per_s: {frag_rate:,.0f} fragments/s ({len(pieces)} per 10 KB frame at MTU {a.mtu}; "
            f"{frag_rate * len(pieces[0]) / 1024:,.0f} KiB/s; ratio vs 200 B frames/s {frag_rate / ours:.2f})"
        )
        nursery.cancel_scope.cancel()
    return lines


def reassembly_figure() -> str:
    big = Packet(1, MessageType.MESSAGE, 7, 1_700_000_000_000, SENDER, payload=os.urandom(10_000))
    wire = encode_packet(big, compress=False)
    pieces = fragment_frame(big, wire, 512, os.urandom(8))
    payloads = [decode_packet_untrusted(p).payload for p in pieces]
    chunks = [pl[13:] for pl in payloads]
    rounds = 300
    t0 = time.perf_counter()
    for i in range(rounds):
        reasm = Reassembler()
        for p in pieces:
            pkt = decode_packet_untrusted(p)
            reasm.add_untrusted(pkt.sender_id, decode_fragment_untrusted(pkt.payload), float(i))
    ours = (time.perf_counter() - t0) / (rounds * len(pieces)) * 1e6
    t0 = time.perf_counter()
    for _ in range(rounds * 20):
        b"".join(chunks)
    base = (time.perf_counter() - t0) / (rounds * 20 * len(pieces)) * 1e6
    return (
        f"ble.reassembly_us_per_fragment: {ours:.1f} us (decode + reassemble, {len(pieces)} fragments per 10 KB; "
        f"ratio vs bare join {ours / base:,.0f}x slower; join {base:.3f} us)"
    )


def make_node(root: Path, i: int, transports: Sequence[Transport]) -> Node:
    cfg = Config(data_dir=root / f"n{i}", node=NodeSection(nickname=f"n{i}"))
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1000 + i)
    ident = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    return Node(cfg, ident, transports=transports, control=False, persistent_inbox=False, rng=rng)


async def deliver_all(a: Node, d: Node, texts: list[str]) -> float:
    """Seconds from handing ``texts`` to ``a`` until ``d`` acknowledged every one."""
    with trio.fail_after(TIMEOUT_S):
        await a.wait_until(
            lambda: a.core is not None and a.core.paths.route(d.identity.peer_id, trio.current_time()) is not None
        )
        t0 = trio.current_time()
        ids = [a.send_private(d.identity.peer_id_hex, t) for t in texts]
        await a.wait_until(lambda: all(a.outgoing[m].state == "delivered" for m in ids))
        return trio.current_time() - t0


def ten_kb() -> list[str]:
    rng = random.Random(3)
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(10_240))
    return [text[i : i + 250] for i in range(0, len(text), 250)]


async def run_nodes(nodes: list[Node], nursery: trio.Nursery) -> None:
    for n in nodes:
        await nursery.start(n.run)


async def three_hops_figure(root: Path) -> str:
    texts = ten_kb()
    async with open_bumble_world("bench-hops") as world, trio.open_nursery() as nursery:
        nodes = [
            make_node(
                root / "ble",
                i,
                [
                    BleTransport(
                        BumbleAdapter(world, position=(i * SPACING_M, 0.0)), BleSettings(rssi_min_dbm=RSSI_GATE_DBM)
                    )
                ],
            )
            for i in range(4)
        ]
        await run_nodes(nodes, nursery)
        await deliver_all(nodes[0], nodes[3], ["warm-up"])  # the Noise session is set up outside the timing
        ble_s = await deliver_all(nodes[0], nodes[3], texts)
        for n in nodes:
            n.request_stop()
    net = MemoryNetwork(seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        ts = [net.transport(f"m{i}") for i in range(4)]
        nodes = [make_node(root / "mem", i, [ts[i]]) for i in range(4)]
        await run_nodes(nodes, nursery)
        for i in range(3):
            net.connect(ts[i], ts[i + 1], mtu=512)
        await deliver_all(nodes[0], nodes[3], ["warm-up"])
        mem_s = await deliver_all(nodes[0], nodes[3], texts)
        for n in nodes:
            n.request_stop()
        nursery.cancel_scope.cancel()
    return (
        f"ble.deliver_10KB_3_hops_s: {ble_s:.2f} s for {len(texts)} private messages (10 KB) delivered and acked "
        f"across 3 BLE hops (ratio vs memory links {ble_s / mem_s:.1f}; memory {mem_s:.2f} s)"
    )


def flood_transmissions(adjacency: dict[int, set[int]], origin: int, target: int) -> int:
    """Link sends when a directed packet floods under BitChat's rules: the origin sends on every link; every
    other node that hears it relays once to all links but the one it came in on; the recipient does not."""
    sends = len(adjacency[origin])
    seen = {origin}
    frontier = [origin]
    while frontier:
        nxt = []
        for u in frontier:
            for v in adjacency[u]:
                if v not in seen:
                    seen.add(v)
                    nxt.append(v)
                    if v != target:
                        sends += len(adjacency[v]) - 1
        frontier = nxt
    return sends


async def airtime_figure(root: Path, n_messages: int) -> str:
    grid = [(x, y) for y in range(2) for x in range(3)]  # 2 rows × 3 columns, 3 m apart: 4-neighbour links
    async with open_bumble_world("bench-air") as world, trio.open_nursery() as nursery:
        transports = [
            BleTransport(
                BumbleAdapter(world, position=(x * SPACING_M, y * SPACING_M)), BleSettings(rssi_min_dbm=RSSI_GATE_DBM)
            )
            for x, y in grid
        ]
        nodes = [make_node(root / "air", i, [t]) for i, t in enumerate(transports)]
        await run_nodes(nodes, nursery)
        a, f = nodes[0], nodes[-1]
        with trio.fail_after(TIMEOUT_S):
            await deliver_all(a, f, ["warm-up"])  # routes, sessions and links settled
            await trio.sleep(2.0)  # let the warm-up's acks and relays drain
        idle_window = 5.0
        before = sum(t.counters.bytes_out for t in transports)
        await trio.sleep(idle_window)
        idle_rate = (sum(t.counters.bytes_out for t in transports) - before) / idle_window
        before = sum(t.counters.bytes_out for t in transports)
        t0 = trio.current_time()
        texts = [f"message {i} " + "x" * 100 for i in range(n_messages)]
        await deliver_all(a, f, texts)
        await trio.sleep(1.0)  # acks' relays
        spent = sum(t.counters.bytes_out for t in transports) - before - idle_rate * (trio.current_time() - t0)
        ours = spent / n_messages

        # The same message and ack under flooding, on the links that formed.
        index = {n.identity.peer_id: i for i, n in enumerate(nodes)}
        adjacency: dict[int, set[int]] = {i: set() for i in range(len(nodes))}
        for i, n in enumerate(nodes):
            assert n.core is not None
            for info in n.core.peers:
                if info.peer_id in index and n.core.paths.route(info.peer_id, trio.current_time()) is not None:
                    route = n.core.paths.route(info.peer_id, trio.current_time())
                    if route is not None and route.hops == 1:
                        adjacency[i].add(index[info.peer_id])
                        adjacency[index[info.peer_id]].add(i)
        msg_frame = 256  # a padded 0x11 with a ~110-byte private message (BitChat pads 0x11 to 256)
        ack_frame = 256  # the delivered ack, padded the same way
        flood = (msg_frame + ack_frame) * flood_transmissions(adjacency, 0, len(nodes) - 1)
        links = sum(len(v) for v in adjacency.values()) // 2
        for n in nodes:
            n.request_stop()
    return (
        f"ble.airtime_bytes_per_delivered: {ours:,.0f} bytes on air per delivered private message incl. ack, 2x3 "
        f"grid, {links} links (ratio vs BitChat flooding {ours / flood:.2f}; flooding {flood:,} bytes)"
    )


async def main(args: argparse.Namespace) -> None:
    for line in await link_figures(args.frames):
        print(line, flush=True)
    print(reassembly_figure(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(await three_hops_figure(Path(tmp)), flush=True)
        print(await airtime_figure(Path(tmp), args.messages), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000, help="frames for the link figures")
    parser.add_argument("--messages", type=int, default=20, help="private messages for the airtime figure")
    trio.run(main, parser.parse_args())
