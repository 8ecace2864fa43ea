"""BetaNet throughput and latency between two processes on loopback, against a bare baseline in the same run.

    python bench/betanet.py [--bulk-mb N] [--small N]

A child process runs a BetanetTransport that echoes nothing and counts what it receives; the parent dials it
and measures. The baseline is a bare trio TCP stream between the same two processes with the same u32
length-prefix framing and no security or multiplexing, so each ratio is the price of libp2p + Noise + yamux.

Figures (one line each):
* betanet.bulk: MB/s of 60 KB frames (the receiver acknowledges the last one);
* betanet.small_msgs: 200-byte frames per second, one at a time with a 1-byte reply (request/response);
* betanet.connect_first_msg: ms from dial to the first reply on a fresh connection (median of 5).
"""

from __future__ import annotations

import argparse
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.config import BetanetSection
from node.identity import Identity
from node.transports.base import Link
from node.transports.betanet.transport import BetanetTransport

LENGTH = struct.Struct(">I")
BULK_FRAME = 60_000
SMALL_FRAME = 200
SETTINGS = BetanetSection(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, max_frame_bytes=1 << 20)


# ---------------------------------------------------------------- child: the receiving side
async def serve_betanet() -> None:
    t = BetanetTransport(Identity.generate(), SETTINGS)
    send, links = trio.open_memory_channel[Link](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, send)
        print(t.listen_addresses()[0], flush=True)
        async for link in links:
            nursery.start_soon(echo_betanet, link)


async def echo_betanet(link: Link) -> None:
    try:
        while True:
            frame = await link.receive()
            if frame[:1] == b"?":  # a frame that wants a reply
                await link.send(b"!")
    except Exception:  # the parent hung up
        return


async def serve_tcp() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(echo_tcp, listeners)


async def read_frame(stream: trio.SocketStream, buf: bytearray) -> bytes:
    while len(buf) < 4 or len(buf) < 4 + LENGTH.unpack_from(buf)[0]:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    n = LENGTH.unpack_from(buf)[0]
    frame = bytes(buf[4 : 4 + n])
    del buf[: 4 + n]
    return frame


async def echo_tcp(stream: trio.SocketStream) -> None:
    buf = bytearray()
    try:
        while True:
            frame = await read_frame(stream, buf)
            if frame[:1] == b"?":
                await stream.send_all(LENGTH.pack(1) + b"!")
    except (EOFError, trio.BrokenResourceError):
        return


# ---------------------------------------------------------------- parent: the measuring side
class Betanet:
    def __init__(self, addr: str, transport: BetanetTransport) -> None:
        self.addr, self.t = addr, transport

    async def open(self) -> Link:
        return await self.t.dial(self.addr)


async def bulk(send: object, recv: object, total_bytes: int) -> float:
    frame = b"." * BULK_FRAME
    count = total_bytes // BULK_FRAME
    start = time.perf_counter()
    for _ in range(count - 1):
        await send(frame)  # type: ignore[operator]
    await send(b"?" + frame[1:])  # type: ignore[operator]
    await recv()  # type: ignore[operator]
    return count * BULK_FRAME / (time.perf_counter() - start) / 1e6


async def small(send: object, recv: object, n: int) -> float:
    frame = b"?" + b"s" * (SMALL_FRAME - 1)
    start = time.perf_counter()
    for _ in range(n):
        await send(frame)  # type: ignore[operator]
        await recv()  # type: ignore[operator]
    return n / (time.perf_counter() - start)


async def measure(bulk_mb: int, n_small: int) -> list[str]:
    lines = []
    child_b = await trio.lowlevel.open_process([sys.executable, __file__, "--serve", "betanet"], stdout=subprocess.PIPE)
    child_t = await trio.lowlevel.open_process([sys.executable, __file__, "--serve", "tcp"], stdout=subprocess.PIPE)
    try:
        assert child_b.stdout is not None and child_t.stdout is not None
        addr = (await child_b.stdout.receive_some(4096)).decode().strip()
        port = int((await child_t.stdout.receive_some(4096)).decode().strip())
        async with trio.open_nursery() as nursery:
            t = BetanetTransport(Identity.generate(), SETTINGS)
            sink, _links = trio.open_memory_channel[Link](64)
            await nursery.start(t.run, sink)

            # connect + first message, fresh connection each time (a new client identity each time)
            b_lat, t_lat = [], []
            for _ in range(5):
                async with trio.open_nursery() as inner:
                    c = BetanetTransport(Identity.generate(), SETTINGS)
                    await inner.start(c.run, trio.open_memory_channel[Link](8)[0])
                    start = time.perf_counter()
                    link = await c.dial(addr)
                    await link.send(b"?hello")
                    await link.receive()
                    b_lat.append((time.perf_counter() - start) * 1000)
                    inner.cancel_scope.cancel()
                start = time.perf_counter()
                s = await trio.open_tcp_stream("127.0.0.1", port)
                await s.send_all(LENGTH.pack(6) + b"?hello")
                await read_frame(s, bytearray())
                t_lat.append((time.perf_counter() - start) * 1000)
                await s.aclose()

            link = await t.dial(addr)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            tbuf = bytearray()

            async def tcp_send(f: bytes) -> None:
                await stream.send_all(LENGTH.pack(len(f)) + f)

            async def tcp_recv() -> bytes:
                return await read_frame(stream, tbuf)

            b_bulk = await bulk(link.send, link.receive, bulk_mb * 1_000_000)
            t_bulk = await bulk(tcp_send, tcp_recv, bulk_mb * 1_000_000)
            b_small = await small(link.send, link.receive, n_small)
            t_small = await small(tcp_send, tcp_recv, n_small)
            nursery.cancel_scope.cancel()
        bl, tl = statistics.median(b_lat), statistics.median(t_lat)
        lines.append(
            f"betanet.bulk: {b_bulk:.1f} MB/s (ratio vs bare TCP {b_bulk / t_bulk:.3f}; bare {t_bulk:.0f} MB/s)"
        )
        lines.append(
            f"betanet.small_msgs: {b_small:,.0f} msgs/s request/response (ratio vs bare TCP "
            f"{b_small / t_small:.3f}; bare {t_small:,.0f}/s)"
        )
        lines.append(
            f"betanet.connect_first_msg: {bl:.1f} ms median of 5 (ratio vs bare TCP {bl / tl:.1f}x; bare {tl:.2f} ms)"
        )
    finally:
        for child in (child_b, child_t):
            child.kill()
            await child.wait()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-mb", type=int, default=200, help="megabytes sent in the bulk figure")
    parser.add_argument("--small", type=int, default=2000, help="request/response round trips")
    parser.add_argument("--serve", choices=["betanet", "tcp"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "betanet":
        trio.run(serve_betanet)
    elif args.serve == "tcp":
        trio.run(serve_tcp)
    else:
        for line in trio.run(measure, args.bulk_mb, args.small):
            print(line, flush=True)


if __name__ == "__main__":
    main()
