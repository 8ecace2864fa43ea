"""MCP tool-call round trips: a real daemon's tools (via `village mcp` over stdio, and Streamable HTTP on
loopback) against a bare SDK ``MCPServer`` echo tool served the same two ways, measured in the same run.

    python bench/mcp_calls.py [--calls N] [--entities N]

Figures (one line each): p50/p99 of ``peers_list`` over stdio and HTTP with the ratio of p50s to the bare echo
(goal: within 1.5x), and ``search_nodes`` on a graph of ``--entities`` entities over stdio and HTTP, each against
the bare echo on the same transport (goal: p50 <= 20 ms), with the same search run in-process (no transport).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import trio
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
CONFIG = '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n\n[mcp]\nhttp_listen = "127.0.0.1:0"\n'
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
VILLAGE = [sys.executable, "-m", "node.cli"]


def echo_server() -> Any:
    from mcp.server import MCPServer

    server = MCPServer("bare-echo")

    @server.tool()
    def echo(text: str) -> str:
        """Say it back."""
        return text

    return server


async def serve_echo_http() -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, echo_server().streamable_http_app(), config, mode="asgi"))
        print(binds[0] + "/mcp", flush=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def paired(
    a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]], n: int, warmup: int = 20
) -> tuple[tuple[float, float], tuple[float, float]]:
    """p50/p99 of ``a`` and of ``b``, calls interleaved so both see the same machine load."""
    for _ in range(warmup):
        await a()
        await b()
    sa: list[float] = []
    sb: list[float] = []
    for _ in range(n):
        for call, samples in ((a, sa), (b, sb)):
            t0 = time.perf_counter()
            result = await call()
            samples.append(time.perf_counter() - t0)
            if getattr(result, "is_error", False):
                raise SystemExit(f"a benchmarked call failed: {result.content}")
    return percentiles(sa), percentiles(sb)


def http(url: str, token: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers)))


async def measure(args: argparse.Namespace, data_dir: Path, http_url: str, echo_url: str) -> None:
    token = (data_dir / "mcp" / "http.token").read_text().strip()
    n = args.calls
    results: dict[str, tuple[float, float]] = {}
    stdio_ours = StdioServerParameters(
        command=VILLAGE[0], args=[*VILLAGE[1:], "mcp", "--data-dir", str(data_dir)], env=ENV
    )
    stdio_echo = StdioServerParameters(command=sys.executable, args=[__file__, "--serve-echo-stdio"], env=ENV)
    async with http(http_url, token) as ours:  # the graph first: both transports search the same one
        batch = 500
        for start in range(0, args.entities, batch):
            ents = [
                {"name": f"entity-{i}", "entityType": "thing", "observations": [f"observation {i} a", f"note {i}"]}
                for i in range(start, min(args.entities, start + batch))
            ]
            r = await ours.call_tool("create_entities", {"entities": ents})
            if r.is_error:
                raise SystemExit(f"create_entities failed: {r.content}")
    async with Client(stdio_echo) as echo, Client(stdio_ours) as ours:
        results["stdio.echo"], results["stdio.peers_list"] = await paired(
            lambda: echo.call_tool("echo", {"text": "hi"}), lambda: ours.call_tool("peers_list", {}), n
        )
        results["stdio.echo2"], results["stdio.search_nodes"] = await paired(
            lambda: echo.call_tool("echo", {"text": "hi"}),
            lambda: ours.call_tool("search_nodes", {"query": "ENTITY-4242"}),
            n,
        )
    async with http(echo_url) as echo, http(http_url, token) as ours:
        results["http.echo"], results["http.peers_list"] = await paired(
            lambda: echo.call_tool("echo", {"text": "hi"}), lambda: ours.call_tool("peers_list", {}), n
        )
        results["http.echo2"], results["http.search_nodes"] = await paired(
            lambda: echo.call_tool("echo", {"text": "hi"}),
            lambda: ours.call_tool("search_nodes", {"query": "ENTITY-4242"}),
            n,
        )
    for transport in ("stdio", "http"):
        echo_p50, echo_p99 = results[f"{transport}.echo"]
        p50, p99 = results[f"{transport}.peers_list"]
        print(
            f"mcp.{transport}.peers_list: p50 {p50 * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms (bare MCPServer echo p50 "
            f"{echo_p50 * 1e3:.2f} ms p99 {echo_p99 * 1e3:.2f} ms; ratio of p50s {p50 / echo_p50:.2f}, goal <= 1.5)"
        )
    for transport in ("stdio", "http"):
        p50, p99 = results[f"{transport}.search_nodes"]
        echo_p50 = results[f"{transport}.echo2"][0]
        print(
            f"mcp.{transport}.search_nodes_{args.entities}: p50 {p50 * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms (goal p50 "
            f"<= 20 ms; bare echo p50 {echo_p50 * 1e3:.2f} ms, ratio of p50s {p50 / echo_p50:.2f})"
        )
    from node.mcp.graph import KnowledgeGraph
    from node.mcp.settings import McpSettings

    graph = KnowledgeGraph(data_dir / "mcp" / "memory.sqlite3", McpSettings())
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        graph.search_nodes("ENTITY-4242")
        samples.append(time.perf_counter() - t0)
    graph.close()
    p50, p99 = percentiles(samples)
    print(f"mcp.inprocess.search_nodes_{args.entities}: p50 {p50 * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms (no transport)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls per figure (default 300)")
    parser.add_argument("--entities", type=int, default=10_000, help="graph size for search_nodes (default 10000)")
    parser.add_argument("--serve-echo-stdio", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-echo-http", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo_stdio:
        trio.run(echo_server().run_stdio_async)
        return
    if args.serve_echo_http:
        trio.run(serve_echo_http)
        return
    with tempfile.TemporaryDirectory(prefix="vlg-bench-", dir="/tmp") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir(mode=0o700)
        (data_dir / "config.toml").write_text(CONFIG)
        subprocess.run([*VILLAGE, "init", "--data-dir", str(data_dir)], check=True, env=ENV, capture_output=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(Path(tmp) / "notify.sock"))
        notify.settimeout(60)
        env = {**ENV, "NOTIFY_SOCKET": str(Path(tmp) / "notify.sock"), "VILLAGE_DATA_DIR": str(data_dir)}
        daemon = subprocess.Popen([*VILLAGE, "run", "--log-level", "warning"], env=env)
        echo = subprocess.Popen(
            [sys.executable, __file__, "--serve-echo-http"], env=ENV, stdout=subprocess.PIPE, text=True
        )
        try:
            if notify.recv(64) != b"READY=1":
                raise SystemExit("the daemon did not get ready")
            assert echo.stdout is not None
            echo_url = echo.stdout.readline().strip()
            status = subprocess.run(
                [*VILLAGE, "mcp", "status", "--json", "--data-dir", str(data_dir)],
                env=ENV,
                capture_output=True,
                text=True,
                check=True,
            )
            http_url = json.loads(status.stdout)["http_url"]
            trio.run(measure, args, data_dir, http_url, echo_url)
        finally:
            for proc in (daemon, echo):
                proc.terminate()
                proc.wait(timeout=30)
            notify.close()


if __name__ == "__main__":
    main()
