"""BetaNet throughput and latency between two processes on loopback, against bare baselines in the same run.

    python bench/betanet.py [--bulk-mb N] [--quic-bulk-mb N] [--small N] [--only KIND ...] [--profile DIR]

Five kinds of connection are measured, one after another. For each, a server child process listens and
answers, and a client child process dials it and measures, printing its results to this (parent) process,
which prints the summary. Every connection carries the same u32 length-prefixed frames on one stream.

* ``tcp``: a bare trio TCP stream, no security or multiplexing (the baseline for BetaNet over TCP);
* ``betanet``: our BetanetTransport and BetanetLink on TCP + Noise + yamux (what nodes run today);
* ``betanet_quic``: our BetanetTransport and BetanetLink over QUIC (``/udp/0/quic-v1``): our event-driven QUIC
  transport (node/transports/betanet/quic_transport.py) under py-libp2p's host, TLS 1.3 with the peer-ID certificate;
* ``quic_libp2p``: py-libp2p's own QUIC transport (``/udp/0/quic-v1``, TLS 1.3), frames through our BetanetLink;
* ``quic_bare``: bare aioquic driven from trio (bench/quic_baseline.py): the issue's baseline.

Figures per kind (one line each): ``.bulk`` MB/s of 60 KB frames (the last one acknowledged; 200 MB over TCP,
50 MB over QUIC, which is 10-50x slower);
``.small_msgs`` 200-byte request / 1-byte reply round trips per second; ``.connect_first_msg`` ms from dial
to the first reply on a fresh connection (median of 5). Then the issue's goals: bulk ratio against bare
aioquic (>= 0.7) and connect + first message (< 50 ms).

Clients run in their own processes so that one kind cannot slow another (importing py-libp2p patches
aioquic's stream sender) and so that a hang or a crash in one costs a clear line, not the run. Every step
has a timeout. A figure that fails prints the reason instead of a number.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from node.transports.base import Link

LENGTH = struct.Struct(">I")
BULK_FRAME = 60_000
SMALL_FRAME = 200
CONNECT_TRIALS = 5
KINDS = ("tcp", "betanet", "betanet_quic", "quic_libp2p", "quic_bare")
SERVER_START_TIMEOUT_S = 30  # server child prints its address within this
CONNECT_TIMEOUT_S = 30  # all connect trials of one kind
FIGURE_TIMEOUT_S = 120  # bulk, and small messages, each
SHUTDOWN_TIMEOUT_S = 10  # client closes its connection and host
CLIENT_TIMEOUT_S = CONNECT_TIMEOUT_S + 2 * FIGURE_TIMEOUT_S + SHUTDOWN_TIMEOUT_S + 30  # the whole client child
TERMINATE_GRACE_S = 5  # after SIGINT, before SIGKILL

Send = Callable[[bytes], Awaitable[None]]
Receive = Callable[[], Awaitable[bytes]]
Dial = Callable[[], Awaitable[tuple[Send, Receive]]]


# ---------------------------------------------------------------- framing shared by the bare TCP peers
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


# ---------------------------------------------------------------- servers (child processes)
def announce(addr: str) -> None:
    print(addr, flush=True)


async def echo_link(link: Link) -> None:
    try:
        while True:
            frame = await link.receive()
            if frame[:1] == b"?":  # a frame that wants a reply
                await link.send(b"!")
    except Exception:  # noqa: BLE001 - the client hung up
        return


async def serve_tcp() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        buf = bytearray()
        try:
            while True:
                frame = await read_frame(stream, buf)
                if frame[:1] == b"?":
                    await stream.send_all(LENGTH.pack(1) + b"!")
        except (EOFError, trio.BrokenResourceError):
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    announce(f"127.0.0.1:{listeners[0].socket.getsockname()[1]}")
    await trio.serve_listeners(echo, listeners)


async def serve_betanet(listen: str = "/ip4/127.0.0.1/tcp/0") -> None:
    from node.transports.base import Link
    from node.transports.betanet.transport import BetanetTransport

    t = BetanetTransport(identity(), betanet_settings(listen))
    send, links = trio.open_memory_channel[Link](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, send)
        announce(t.listen_addresses()[0])
        async for link in links:
            nursery.start_soon(echo_link, link)


async def serve_quic_libp2p() -> None:
    from libp2p.abc import INetStream

    from node.transports.betanet.transport import MESH_PROTOCOL

    async with quic_host() as (host, nursery):

        async def on_stream(stream: INetStream) -> None:
            link = quic_link(stream, "in")
            nursery.start_soon(echo_link, link)
            await link.pump()

        host.set_stream_handler(MESH_PROTOCOL, on_stream)
        announce(str(host.get_addrs()[0]))
        await trio.sleep_forever()


async def serve_quic_bare() -> None:
    import quic_baseline

    await quic_baseline.serve(lambda port: announce(f"127.0.0.1:{port}"))


async def serve_betanet_quic() -> None:
    await serve_betanet(QUIC_LISTEN)


SERVERS = {
    "tcp": serve_tcp,
    "betanet": serve_betanet,
    "betanet_quic": serve_betanet_quic,
    "quic_libp2p": serve_quic_libp2p,
    "quic_bare": serve_quic_bare,
}


async def run_server(kind: str) -> None:
    """Serve until SIGINT or SIGTERM, then shut down normally (so shutdown errors show, and a profiler ends)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(SERVERS[kind])
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


# ---------------------------------------------------------------- libp2p pieces (imported lazily: see the docstring)
def identity() -> Any:
    from node.identity import Identity

    return Identity.generate()


QUIC_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"


def betanet_settings(listen: str = "/ip4/127.0.0.1/tcp/0") -> Any:
    from node.transports.betanet.settings import BetanetSection

    return BetanetSection(listen=(listen,), mdns=False, max_frame_bytes=1 << 20, dht=False, relay="off")


def quic_link(stream: Any, direction: str) -> Any:
    """Our BetanetLink (framing, bounded receive queue) over a py-libp2p QUIC stream."""
    from node.transports.betanet.counters import BetanetCounters
    from node.transports.betanet.link import BetanetLink

    settings = betanet_settings()
    return BetanetLink(
        stream, f"quic:{direction}", "/p2p/bench", 1 << 20, None, BetanetCounters(), settings.stall_timeout_s
    )


@asynccontextmanager
async def quic_host() -> AsyncIterator[tuple[Any, trio.Nursery]]:
    """A py-libp2p host listening on QUIC only (TLS 1.3 is QUIC's own security; no mDNS)."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.transport.quic.config import QUICTransportConfig

    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1")]
    # py-libp2p resets a QUIC stream whose read waits STREAM_READ_TIMEOUT (30 s) for data, so a link that only
    # sends (the bulk figure's client, or any quiet mesh link) dies after 30 s. Use our own stall timeout.
    config = QUICTransportConfig(STREAM_READ_TIMEOUT=betanet_settings().stall_timeout_s)
    host = new_host(key_pair=create_new_key_pair(), listen_addrs=listen, enable_mDNS=False, connection_config=config)
    async with host.run(listen_addrs=listen), trio.open_nursery() as nursery:
        yield host, nursery
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- client dialers: set up untimed, dial timed
@asynccontextmanager
async def dial_tcp(addr: str) -> AsyncIterator[Dial]:
    host, port = addr.rsplit(":", 1)
    streams: list[trio.SocketStream] = []

    async def dial() -> tuple[Send, Receive]:
        stream = await trio.open_tcp_stream(host, int(port))
        streams.append(stream)
        buf = bytearray()

        async def send(f: bytes) -> None:
            await stream.send_all(LENGTH.pack(len(f)) + f)

        async def receive() -> bytes:
            return await read_frame(stream, buf)

        return send, receive

    try:
        yield dial
    finally:
        for stream in streams:
            await stream.aclose()


@asynccontextmanager
async def dial_betanet(addr: str, listen: str = "/ip4/127.0.0.1/tcp/0") -> AsyncIterator[Dial]:
    from node.transports.base import Link
    from node.transports.betanet.transport import BetanetTransport

    t = BetanetTransport(identity(), betanet_settings(listen))
    sink, _inbound = trio.open_memory_channel[Link](8)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, sink)

        async def dial() -> tuple[Send, Receive]:
            link = await t.dial(addr)
            return link.send, link.receive

        yield dial
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def dial_quic_libp2p(addr: str) -> AsyncIterator[Dial]:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from node.transports.betanet.transport import MESH_PROTOCOL

    async with quic_host() as (host, nursery):

        async def dial() -> tuple[Send, Receive]:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            host.get_peerstore().add_addrs(info.peer_id, info.addrs, 600)
            # dial_addr, not host.connect: the latter waits a fixed 250 ms (see node/transports/betanet)
            await host.get_network().dial_addr(info.addrs[0], info.peer_id)
            link = quic_link(await host.new_stream(info.peer_id, [MESH_PROTOCOL]), "out")
            nursery.start_soon(link.pump)
            return link.send, link.receive

        yield dial


@asynccontextmanager
async def dial_quic_bare(addr: str) -> AsyncIterator[Dial]:
    import quic_baseline

    host, port = addr.rsplit(":", 1)
    async with trio.open_nursery() as nursery:

        async def dial() -> tuple[Send, Receive]:
            got: list[quic_baseline.Client] = []

            async def hold(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                async with quic_baseline.open_client(host, int(port)) as client:
                    got.append(client)
                    task_status.started()
                    await trio.sleep_forever()

            await nursery.start(hold)
            return got[0].send, got[0].receive

        yield dial
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def dial_betanet_quic(addr: str) -> AsyncIterator[Dial]:
    async with dial_betanet(addr, QUIC_LISTEN) as dial:
        yield dial


DIALERS = {
    "tcp": dial_tcp,
    "betanet": dial_betanet,
    "betanet_quic": dial_betanet_quic,
    "quic_libp2p": dial_quic_libp2p,
    "quic_bare": dial_quic_bare,
}


# ---------------------------------------------------------------- measurements (client child process)
async def bulk(send: Send, receive: Receive, total_bytes: int) -> float:
    frame = b"." * BULK_FRAME
    count = total_bytes // BULK_FRAME
    start = time.perf_counter()
    for _ in range(count - 1):
        await send(frame)
    await send(b"?" + frame[1:])
    await receive()
    return count * BULK_FRAME / (time.perf_counter() - start) / 1e6


async def small(send: Send, receive: Receive, n: int) -> float:
    frame = b"?" + b"s" * (SMALL_FRAME - 1)
    start = time.perf_counter()
    for _ in range(n):
        await send(frame)
        await receive()
    return n / (time.perf_counter() - start)


def report(figure: str, value: Any = None, error: str | None = None) -> None:
    print(json.dumps({"figure": figure, "value": value, "error": error}), flush=True)


def one_line(exc: BaseException) -> str:
    """An exception as one line, with the innermost frame it came from (py-libp2p errors need the where)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        path = tb.tb_frame.f_code.co_filename
        short = path.split("site-packages/", 1)[-1] if "site-packages/" in path else Path(path).name
        where = f" (in {short} {tb.tb_frame.f_code.co_name})"
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    because = f"; from {one_line(cause)}" if cause is not None else ""
    return f"{type(exc).__name__}: {text}{where}{because}"


async def run_client(kind: str, addr: str, bulk_mb: int, n_small: int) -> None:
    open_dialer = DIALERS[kind]
    try:
        latencies = []
        with trio.fail_after(CONNECT_TIMEOUT_S):
            for _ in range(CONNECT_TRIALS):
                async with open_dialer(addr) as dial:
                    start = time.perf_counter()
                    send, receive = await dial()
                    await send(b"?hello")
                    await receive()
                    latencies.append((time.perf_counter() - start) * 1000)
        report("connect_first_msg", latencies)
    except trio.TooSlowError:
        report("connect_first_msg", error=f"timed out after {CONNECT_TIMEOUT_S} s")
    except Exception as exc:  # noqa: BLE001 - a bench reports any failure as that figure's error and goes on
        report("connect_first_msg", error=one_line(exc))

    body_done = False
    try:
        with trio.move_on_after(CONNECT_TIMEOUT_S + 2 * FIGURE_TIMEOUT_S + SHUTDOWN_TIMEOUT_S) as whole:
            async with open_dialer(addr) as dial:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    send, receive = await dial()
                for figure, measure, arg in (("bulk", bulk, bulk_mb * 1_000_000), ("small_msgs", small, n_small)):
                    try:
                        with trio.fail_after(FIGURE_TIMEOUT_S):
                            report(figure, await measure(send, receive, arg))
                    except trio.TooSlowError:
                        report(figure, error=f"timed out after {FIGURE_TIMEOUT_S} s")
                        break  # the connection is in an unknown state
                    except Exception as exc:  # noqa: BLE001 - a bench reports any failure as that figure's error and goes on
                        report(figure, error=one_line(exc))
                        break
                body_done = True
        if whole.cancelled_caught:
            report("shutdown", error=f"closing the connection did not finish within {SHUTDOWN_TIMEOUT_S} s")
        else:
            report("shutdown", "clean")
    except Exception as exc:  # noqa: BLE001 - a bench reports any failure as that figure's error and goes on
        if not body_done:
            report("bulk", error=one_line(exc))
        report("shutdown", error=one_line(exc))


# ---------------------------------------------------------------- parent: orchestrate, summarise
@dataclass
class Results:
    kind: str
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    server_error: str | None = None

    def get(self, figure: str) -> Any:
        return self.values.get(figure)

    def why(self, figure: str) -> str:
        return self.errors.get(figure) or self.server_error or "no result"


def tail_reason(path: Path) -> str | None:
    """The last exception line a child wrote to stderr, if any."""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception", "Group"))]
    return errors[-1] if errors else (lines[-1] if lines else None)


async def read_lines(stream: trio.abc.ReceiveStream, on_line: Callable[[str], None]) -> None:
    buf = b""
    while chunk := await stream.receive_some(65536):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            on_line(line.decode(errors="replace"))


async def stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)  # the child shuts down normally (see run_server)
        with trio.move_on_after(TERMINATE_GRACE_S):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


def child_command(role: str, kind: str, profile: Path | None) -> list[str]:
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "pyinstrument", "-r", "text", "-o", str(profile / f"{kind}.{role}.txt")]
    return [*cmd, __file__, f"--{role}", kind]


async def measure_kind(kind: str, bulk_mb: int, n_small: int, tmp: Path, profile: Path | None) -> Results:
    """Start the server child, run the client child against it, collect its figures; both end by the end."""
    res = Results(kind)
    server_err, client_err = tmp / f"{kind}.server.err", tmp / f"{kind}.client.err"
    with server_err.open("wb") as s_err, client_err.open("wb") as c_err:
        server = await trio.lowlevel.open_process(
            child_command("serve", kind, profile), stdout=subprocess.PIPE, stderr=s_err
        )
        try:
            assert server.stdout is not None
            addr = ""
            with trio.move_on_after(SERVER_START_TIMEOUT_S):
                addr = (await server.stdout.receive_some(4096)).decode().strip()
            if not addr:
                res.server_error = f"server did not start: {tail_reason(server_err) or 'no output'}"
                return res
            client = await trio.lowlevel.open_process(
                [*child_command("client", kind, profile), addr, "--bulk-mb", str(bulk_mb), "--small", str(n_small)],
                stdout=subprocess.PIPE,
                stderr=c_err,
            )

            def on_line(line: str) -> None:
                try:
                    r = json.loads(line)
                except ValueError:
                    return
                if r["error"] is not None:
                    res.errors[r["figure"]] = r["error"]
                else:
                    res.values[r["figure"]] = r["value"]

            try:
                assert client.stdout is not None
                with trio.move_on_after(CLIENT_TIMEOUT_S) as scope:
                    await read_lines(client.stdout, on_line)
                    await client.wait()
                if scope.cancelled_caught:
                    res.errors.setdefault("shutdown", f"client process still running after {CLIENT_TIMEOUT_S} s")
                elif client.returncode != 0 and "shutdown" not in res.values:
                    res.errors.setdefault("shutdown", f"client exited {client.returncode}: {tail_reason(client_err)}")
            finally:
                await stop(client)
        finally:
            await stop(server)
    if server.returncode not in (0, -signal.SIGINT, -signal.SIGKILL, 1) or "Traceback" in server_err.read_text(
        errors="replace"
    ):
        res.errors.setdefault("server", f"server logged: {tail_reason(server_err)}")
    return res


NAMES = {
    "tcp": "bare TCP",
    "betanet": "BetaNet TCP",
    "betanet_quic": "BetaNet QUIC (ours)",
    "quic_libp2p": "libp2p QUIC",
    "quic_bare": "bare aioquic",
}
# each kind's ratio is against this one
BASELINE = {"betanet": "tcp", "betanet_quic": "quic_bare", "quic_libp2p": "quic_bare"}
BULK_GOAL_RATIO = 0.7  # issue 3: BetaNet bulk >= 0.7 of bare aioquic
CONNECT_GOAL_MS = 50  # issue 3: connect + first message under 50 ms on loopback


def figure_value(res: Results | None, figure: str) -> float | None:
    """One number per figure: connect times are summarised by their median."""
    value = res.get(figure) if res is not None else None
    if value is None:
        return None
    return float(statistics.median(value)) if figure == "connect_first_msg" else float(value)


def figure_text(figure: str, value: float) -> str:
    if figure == "bulk":
        return f"{value:.1f} MB/s"
    if figure == "small_msgs":
        return f"{value:,.0f} msgs/s request/response"
    return f"{value:.1f} ms median of {CONNECT_TRIALS}"


def summarise(results: dict[str, Results]) -> list[str]:
    lines = []
    for kind, res in results.items():
        base_kind = BASELINE.get(kind)
        for figure in ("bulk", "small_msgs", "connect_first_msg"):
            value = figure_value(res, figure)
            if value is None:
                lines.append(f"{kind}.{figure}: failed: {res.why(figure)}")
                continue
            text = figure_text(figure, value)
            base = figure_value(results.get(base_kind or ""), figure)
            if base is not None:
                ratio = f"{value / base:.1f}x" if figure == "connect_first_msg" else f"{value / base:.3f}"
                unit = {"bulk": "MB/s", "small_msgs": "msgs/s", "connect_first_msg": "ms"}[figure]
                name = NAMES[base_kind or ""]
                text += f" (ratio vs {name} {ratio}; {name} {base:,.1f} {unit})"
            lines.append(f"{kind}.{figure}: {text}")
        trouble = res.errors.get("shutdown") or res.errors.get("server")
        if kind in ("betanet_quic", "quic_libp2p") or trouble:
            lines.append(f"{kind}.shutdown: {'failed: ' + trouble if trouble else 'clean'}")

    bare = results.get("quic_bare")
    for kind in ("betanet", "betanet_quic", "quic_libp2p"):
        if kind not in results:
            continue
        name = f"goal.bulk_{kind}_vs_bare_aioquic"
        value, base = figure_value(results[kind], "bulk"), figure_value(bare, "bulk")
        if value is None:
            lines.append(f"{name}: no ratio: {results[kind].why('bulk')}")
        elif base is None:
            lines.append(f"{name}: no ratio: bare aioquic {bare.why('bulk') if bare else 'not measured (--only)'}")
        else:
            verdict = "met" if value / base >= BULK_GOAL_RATIO else "MISSED"
            lines.append(f"{name}: {value / base:.2f} (goal >= {BULK_GOAL_RATIO}: {verdict})")
    for kind in ("betanet", "betanet_quic", "quic_libp2p", "quic_bare"):
        if kind not in results:
            continue
        name = f"goal.connect_first_msg_{kind}"
        ms = figure_value(results[kind], "connect_first_msg")
        if ms is None:
            lines.append(f"{name}: no figure: {results[kind].why('connect_first_msg')}")
        else:
            lines.append(
                f"{name}: {ms:.1f} ms (goal < {CONNECT_GOAL_MS} ms: {'met' if ms < CONNECT_GOAL_MS else 'MISSED'})"
            )
    return lines


async def measure(kinds: list[str], bulk_mb: int, quic_bulk_mb: int, n_small: int, profile: Path | None) -> list[str]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="aivillage-bench-") as tmp:
        for kind in kinds:
            mb = quic_bulk_mb if "quic" in kind else bulk_mb
            results[kind] = await measure_kind(kind, mb, n_small, Path(tmp), profile)
    return summarise(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-mb", type=int, default=200, help="megabytes sent in the bulk figure over TCP")
    parser.add_argument("--quic-bulk-mb", type=int, default=50, help="megabytes sent in the bulk figure over QUIC")
    parser.add_argument("--small", type=int, default=2000, help="request/response round trips")
    parser.add_argument("--only", choices=KINDS, action="append", help="measure only this kind (repeatable)")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="run every child under pyinstrument; text reports go to DIR"
    )
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("addr", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # quic_baseline
    if args.serve:
        trio.run(run_server, args.serve)
    elif args.client:
        trio.run(run_client, args.client, args.addr, args.bulk_mb, args.small)
    else:
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        kinds = args.only or list(KINDS)
        for line in trio.run(measure, kinds, args.bulk_mb, args.quic_bulk_mb, args.small, args.profile):
            print(line, flush=True)


if __name__ == "__main__":
    main()
