"""The anchor gateway's authenticated ``POST /v1/messages`` against a bare hypercorn route, in the same run.

    python bench/gateway.py [--seconds S] [--connections C] [--rounds R] [--no-mailbox] [--breakdown N]

(``BENCH_GATEWAY_REDIS=threads``: the server makes its hot Redis calls with redis-py in worker threads (``[anchor]
redis_client = "threads"``) instead of on trio sockets (the default, "native"), for an A/B of that client alone;
``BENCH_GATEWAY_GC_FREEZE=0``: the server does not freeze its start-up heap (``[node] gc_freeze = false``), for an
A/B of that alone;
``BENCH_GATEWAY_PROFILE=FILE``: the server's main thread under cProfile, in thread CPU time;
``BENCH_GATEWAY_STEPS=1``: the server times every event-loop step by task and prints the busiest tasks' longest
steps.)

A server process runs both: the real gateway (``anchor.run.run_anchor``: a Node without transports, PostgreSQL
and Redis from ``scripts/services up`` in a scratch database) and, on another port of the same hypercorn trio
worker, a bare ASGI route that reads the JSON body and answers 202 with a JSON body of the same shape. This
process is the client: C keep-alive HTTP/1.1 connections (h11 over trio sockets), each sending the next request
when the last answer arrived, for S seconds per target, alternating bare/gateway R times (best round of each).

Each gateway request does what a real one does: per-IP and per-key token buckets (two Redis EVALs), the JWT
check, the key's revocation state (one Redis GET: the key cache; PostgreSQL only on a miss), an audit row (one
INSERT, committed), and the enqueue (one Redis EVAL: XADD + status record). The queue's consumer runs in the
same server process meanwhile (XREADGROUP, ``node.broadcast``, status + XACK + XDEL per message), so its CPU
counts against the gateway. As the daemon does once ready, the server freezes its start-up heap (``[node]
gc_freeze``, node/heap.py). Printed: req/s and p50/p99 latency of both, and the ratios; then how long after each
gateway round its last accepted message took to reach the node (it waits for its audit row in PostgreSQL); then the
server's full garbage collections during each target's rounds (each one pauses every request in flight), and how
the slowest 1 % of each target's reported round bunch together (a burst: all connections stalled at once).
At the end, ``bench/mailbox.py``'s deposit/fetch lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h11
import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anchor.services_settings import SETTINGS_FILE, load_settings
from tools.services import DEFAULT_DIR

BODY = json.dumps({"text": "benchmark broadcast"}).encode()
NO_LIMITS: dict[str, Any] = {"ip_rate_per_s": 1e6, "ip_burst": 1_000_000, "key_rate_per_s": 1e6, "key_burst": 1_000_000}
QUEUE_MAX = 10_000_000  # the bench measures the request path, not the backlog bound


# ---------------------------------------------------------------- server process
async def _bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: read the body, parse it, answer 202 with JSON (what the gateway's route does minus the work)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = json.loads(body)["text"]
    out = json.dumps({"id": secrets.token_hex(16), "to": None, "state": "sent", "n": len(text)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": out})


def gc_freeze() -> bool:
    """Whether the server freezes its start-up heap as the daemon does (``BENCH_GATEWAY_GC_FREEZE=0``: not)."""
    return os.environ.get("BENCH_GATEWAY_GC_FREEZE", "1") != "0"


def watch_full_collections(pauses: list[tuple[float, float]], max_kept: int = 10_000) -> None:
    """Record (start, seconds) of every full (generation 2) garbage collection of this process, on the
    ``time.perf_counter`` clock (CLOCK_MONOTONIC on Linux, so the client can place them in its rounds)."""
    import gc

    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        elif len(pauses) < max_kept:
            pauses.append((started[0], time.perf_counter() - started[0]))

    gc.callbacks.append(callback)


class StepTimes(trio.abc.Instrument):
    """A trio instrument (``BENCH_GATEWAY_STEPS=1``): per task (its coroutine's name) the number of steps, their
    total and the longest, in perf_counter seconds — which task holds the event loop, and for how long at once."""

    def __init__(self) -> None:
        self.by_task: dict[str, list[float]] = {}
        self._t0 = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._t0 = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.perf_counter() - self._t0
        name = getattr(task.coro, "__qualname__", task.name)
        if (entry := self.by_task.get(name)) is None:
            entry = self.by_task[name] = [0, 0.0, 0.0]
        entry[0] += 1
        entry[1] += took
        entry[2] = max(entry[2], took)


def redis_client() -> str:
    """The gateway's Redis client for an A/B run: BENCH_GATEWAY_REDIS=threads or native (the default)."""
    return "threads" if os.environ.get("BENCH_GATEWAY_REDIS") == "threads" else "native"


async def serve(settings_path: str, steps: StepTimes | None = None) -> None:
    from anchor.gateway.server import serve_http
    from anchor.run import run_anchor
    from anchor.settings import AnchorSection
    from anchor.stores.postgres import PostgresStore
    from node.identity import create_identity
    from node.node import Node
    from node.settings import Config

    data_dir = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    section = AnchorSection(
        services_settings=settings_path,
        gateway_listen="127.0.0.1:0",
        queue_max=QUEUE_MAX,
        redis_client=redis_client(),
        **NO_LIMITS,
    )
    cfg = Config(data_dir=data_dir, anchor=section)
    node = Node(cfg, create_identity(data_dir), control=False, persistent_inbox=False)
    dsn = load_settings(Path(settings_path)).postgres.dsn
    async with PostgresStore(dsn) as pg:
        _key, secret = await pg.create_api_key("bench", "user", ["messages:send", "node:read"])
    stop = trio.Event()
    pauses: list[tuple[float, float]] = []
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(run_anchor, node)
        bare = await nursery.start(serve_http, _bare_app, "127.0.0.1:0", stop)
        frozen = 0
        # What the daemon does once ready (node.daemon, node/heap.py); getattr: the script also runs on older trees.
        if getattr(cfg.node, "gc_freeze", False) and gc_freeze():
            from node.heap import freeze_startup_heap

            frozen = freeze_startup_heap()
        watch_full_collections(pauses)
        print(json.dumps({"gateway": gateway[0], "bare": bare[0], "secret": secret}), flush=True)
        await trio.lowlevel.wait_readable(sys.stdin.fileno())  # the client closes our stdin when done
        stop.set()
        node.request_stop()
    report = {"frozen": frozen, "full_collections": pauses, "steps": steps.by_task if steps is not None else {}}
    print(json.dumps(report), flush=True)


# ---------------------------------------------------------------- client
@dataclasses.dataclass
class Result:
    requests: int
    seconds: float
    latencies_s: list[float]
    statuses: dict[int, int]
    last_body: bytes = b""  # the body of the last answer (the gateway's: the last accepted message's ID)
    starts_s: list[float] = dataclasses.field(default_factory=list)  # when each request was sent (perf_counter)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct_ms(self, q: float) -> float:
        lat = sorted(self.latencies_s)
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]


async def _worker(host: str, port: int, headers: list[tuple[str, str]], deadline: float, result: Result) -> None:
    stream = await trio.open_tcp_stream(host, port)
    conn = h11.Connection(h11.CLIENT)
    request_headers = [
        ("Host", f"{host}:{port}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(BODY))),
        *headers,
    ]
    async with stream:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            out = conn.send(h11.Request(method="POST", target="/v1/messages", headers=request_headers))
            out += conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage())
            await stream.send_all(out)
            status = 0
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65_536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            result.last_body = body
            result.latencies_s.append(time.perf_counter() - t0)
            result.starts_s.append(t0)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.requests += 1
            conn.start_next_cycle()


async def load(url: str, headers: list[tuple[str, str]], seconds: float, connections: int) -> Result:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    result = Result(0, seconds, [], {})
    deadline = time.perf_counter() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(_worker, host, int(port), headers, deadline, result)
    return result


async def delivery_lag_s(url: str, auth: list[tuple[str, str]], last_body: bytes) -> float:
    """Seconds from now until the last accepted message has left the queue (handed to the node): a message reaches
    the node only once the audit drain committed its audit row, so a drain slower than the 202s shows here."""
    import httpx

    message_id = json.loads(last_body)["id"]
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, headers=dict(auth)) as client:
        with trio.fail_after(120):
            while True:  # polled, as a client would; bounded
                r = await client.get(f"/v1/messages/{message_id}")
                if r.json()["state"] != "queued":
                    return time.perf_counter() - t0
                await trio.sleep(0.05)  # coarse: each poll is a request the server's CPU figures count


async def token(url: str, secret: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/v1/auth/token", headers={"X-API-Key": secret})
        r.raise_for_status()
        return str(r.json()["access_token"])


def cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads, ended ones too) so far; with ``tid``, of that one
    thread (the server's main thread, ``tid == pid``, runs trio: the request path, the queue consumer, the drain's
    Python; the rest of the process's CPU is its worker threads: the blocking Redis/PostgreSQL calls)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    urls: dict[str, str],
    seconds: float,
    connections: int,
    rounds: int,
    pids: dict[str, int] | None = None,
    windows: list[tuple[str, float, float]] | None = None,
    tails: dict[str, list[tuple[float, float]]] | None = None,
) -> list[str]:
    """The figures' lines; ``windows`` gets (target, start, end) of every measured round (perf_counter), ``tails``
    the (start, latency) of the slowest 1 % of each target's reported (best) round."""
    auth = [("Authorization", f"Bearer {await token(urls['gateway'], urls['secret'])}")]
    await load(urls["bare"], [], 0.5, connections)  # warm-up: connections, caches, pools
    await load(urls["gateway"], auth, 0.5, connections)
    best: dict[str, Result] = {}
    # CPU per request of the server process (and of its main thread alone) and of Redis, summed over every round:
    # unlike req/s it hardly depends on what else runs on the machine. The gateway's background work (the audit
    # drain, the queue consumer) counts while it happens inside the measured window, and in "until delivered" also
    # what it still had to do when the load stopped (a consumer slower than the requests leaves a backlog).
    cpu: dict[tuple[str, str], float] = {}
    owed: dict[str, float] = {}  # CPU after a gateway round until its last accepted message reached the node
    served: dict[str, int] = {}
    lags: list[float] = []
    for _ in range(rounds):
        for name, headers in (("bare", []), ("gateway", auth)):
            probes: dict[str, tuple[int, int | None]] = {proc: (pid, None) for proc, pid in (pids or {}).items()}
            if "server" in probes:
                probes["server main thread"] = (probes["server"][0], probes["server"][0])
            before = {proc: cpu_s(*probe) for proc, probe in probes.items()}
            t0 = time.perf_counter()
            r = await load(urls[name], headers, seconds, connections)
            if windows is not None:
                windows.append((name, t0, time.perf_counter()))
            after = {proc: cpu_s(*probe) for proc, probe in probes.items()}
            for proc in probes:
                cpu[name, proc] = cpu.get((name, proc), 0.0) + after[proc] - before[proc]
            served[name] = served.get(name, 0) + r.requests
            if set(r.statuses) != {202}:
                raise SystemExit(f"{name}: unexpected statuses {r.statuses}")
            if name == "gateway":
                lags.append(await delivery_lag_s(urls["gateway"], headers, r.last_body))
                # The work still owed when the load stopped (the drain and the consumer catching up, so that every
                # accepted message reached the node) counts too, in the "until delivered" figure.
                for proc, probe in probes.items():
                    owed[proc] = owed.get(proc, 0.0) + cpu_s(*probe) - after[proc]
            if name not in best or r.rate > best[name].rate:
                best[name] = r
    g, b = best["gateway"], best["bare"]
    if tails is not None:
        for name, r in best.items():
            cut = sorted(r.latencies_s)[min(len(r.latencies_s) - 1, int(0.99 * len(r.latencies_s)))]
            tails[name] = sorted((t, lat) for t, lat in zip(r.starts_s, r.latencies_s, strict=True) if lat >= cut)
    cpu_lines = []
    for proc in sorted({proc for _name, proc in cpu}, key=lambda p: (p != "server", p)):
        per = {name: 1e6 * cpu[name, proc] / max(1, served[name]) for name in ("gateway", "bare")}
        until = 1e6 * (cpu["gateway", proc] + owed.get(proc, 0.0)) / max(1, served["gateway"])
        cpu_lines.append(
            f"{proc} CPU per request: gateway {per['gateway']:,.0f} us ({until:,.0f} us until delivered), "
            f"bare {per['bare']:,.0f} us"
            + (f" (bare/gateway until delivered {per['bare'] / until:.2f}x)" if proc == "server" and until else "")
        )
    return [
        f"gateway POST /v1/messages (authenticated, audited, {connections} connections): {g.rate:,.0f} req/s, "
        f"p50 {g.pct_ms(0.5):.1f} ms, p99 {g.pct_ms(0.99):.1f} ms",
        f"bare hypercorn route (same body, same server process): {b.rate:,.0f} req/s, "
        f"p50 {b.pct_ms(0.5):.1f} ms, p99 {b.pct_ms(0.99):.1f} ms",
        f"gateway vs bare: throughput {g.rate / b.rate:.2f}x, p99 latency {g.pct_ms(0.99) / b.pct_ms(0.99):.1f}x",
        *cpu_lines,
        f"gateway delivery: the last accepted message reached the node {1000 * max(lags):.0f} ms after the load "
        "stopped (worst round; delivery waits for its audit row in PostgreSQL)",
        "gateway Redis client: "
        + (
            "redis-py in worker threads (BENCH_GATEWAY_REDIS=threads)"
            if redis_client() == "threads"
            else "NativeRedis on trio sockets for the hot calls ([anchor] redis_client = 'native', the default)"
        ),
    ]


def gc_line(report: dict[str, Any], windows: list[tuple[str, float, float]]) -> str:
    """The server's full garbage collections that fell in each target's measured rounds."""
    counts = {"gateway": [0, 0.0, 0.0], "bare": [0, 0.0, 0.0]}  # count, longest, total (seconds)
    for start, pause in report.get("full_collections", []):
        for name, t0, t1 in windows:
            if t0 <= start <= t1:
                c = counts[name]
                c[0], c[1], c[2] = c[0] + 1, max(c[1], pause), c[2] + pause
    parts = [
        f"{name} {int(c[0])} (longest {1000 * c[1]:.1f} ms, total {1000 * c[2]:.0f} ms)" for name, c in counts.items()
    ]
    frozen = int(report.get("frozen", 0))
    state = (
        f"start-up heap frozen: {frozen:,} objects"
        if frozen
        else "start-up heap NOT frozen (BENCH_GATEWAY_GC_FREEZE=0)"
    )
    return f"server full garbage collections in the measured rounds: {', '.join(parts)}; {state}"


BURST_S = 0.05  # slow requests sent within this long of the previous one belong to the same burst


def tail_line(report: dict[str, Any], tails: dict[str, list[tuple[float, float]]]) -> str:
    """How the slowest 1 % of each target's reported round bunch together: bursts (requests sent within BURST_S of
    each other: every connection stalled at once — a collection, a cache expiry, the process descheduled) and how
    many overlapped a full garbage collection of the server."""
    pauses = report.get("full_collections", [])
    parts = []
    for name in ("gateway", "bare"):
        slow = tails.get(name, [])
        bursts: list[int] = []
        last = -1.0
        for start, _lat in slow:
            if bursts and start - last <= BURST_S:
                bursts[-1] += 1
            else:
                bursts.append(1)
            last = start
        in_gc = sum(1 for s, lat in slow if any(p0 <= s + lat and s <= p0 + p for p0, p in pauses))
        parts.append(
            f"{name} {len(slow)} requests in {len(bursts)} bursts (largest {max(bursts, default=0)}), "
            f"{in_gc} overlapping a full collection"
        )
    return "slowest 1 % of the reported rounds: " + "; ".join(parts)


def steps_lines(report: dict[str, Any], top: int = 6) -> list[str]:
    """The busiest tasks of the server's event loop over the whole run (``BENCH_GATEWAY_STEPS=1``)."""
    steps = report.get("steps") or {}
    busiest = sorted(steps.items(), key=lambda kv: -kv[1][1])[:top]
    return [
        f"server event-loop steps: {name}: {int(n):,} steps, mean {1000 * total / max(1, n):.2f} ms, "
        f"longest {1000 * longest:.1f} ms"
        for name, (n, total, longest) in busiest
    ]


async def breakdown(settings_path: str, n: int) -> list[str]:
    """Each piece of a gateway request alone, sequentially (``--breakdown``): what one request costs where.
    Stores are reached directly (no gateway); Redis and PostgreSQL from ``scripts/services up``."""
    from anchor.audit_drain import audit_stream
    from anchor.gateway.auth import TokenIssuer
    from anchor.stores.postgres import PostgresStore
    from anchor.stores.redis_store import AuditRecord, RedisStore
    from node.identity import create_identity
    from node.node import Node
    from node.settings import Config

    services = load_settings(Path(settings_path))
    issuer = TokenIssuer(secrets.token_bytes(32), issuer="bench", ttl_s=900)
    lines: list[str] = []

    def line(what: str, seconds: float, per: int = n) -> None:
        us = 1e6 * seconds / per
        lines.append(
            f"breakdown: {what}: {us:,.1f} us per request"
            if us < 10
            else f"breakdown: {what}: {us:,.0f} us per request"
        )

    now = time.time()
    tokens = [
        issuer.issue(key_id=f"k_{i}", role="user", scopes=frozenset({"messages:send"}), now_s=now).access_token
        for i in range(n)
    ]
    t0 = time.perf_counter()
    for t in tokens:
        issuer.verify(t, now_s=time.time())
    line("JWT (HS256) check, first time (old: every request)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    for t in tokens:
        issuer.verify(t, now_s=time.time())
    line("JWT check of a remembered token (new)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n):
        data = json.loads(BODY)
        json.dumps({"id": secrets.token_hex(16), "to": None, "state": "queued", "n": len(data["text"])}).encode()
    line("body parse + answer encode (json)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n):
        await trio.to_thread.run_sync(lambda: None)
    line("a bare worker-thread hop (trio.to_thread)", time.perf_counter() - t0)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-gw-bd-"))
    node = Node(Config(data_dir=data_dir), create_identity(data_dir), control=False, persistent_inbox=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        t0 = time.perf_counter()
        for _ in range(n):
            node.broadcast("benchmark broadcast")
        line("node.broadcast (the queue consumer's Ed25519 signature and mesh work)", time.perf_counter() - t0)
        node.request_stop()
    async with RedisStore(services.redis.url) as redis, PostgresStore(services.postgres.dsn) as pg:
        stream = audit_stream("bench", "bench_breakdown_" + secrets.token_hex(4))
        t0 = time.perf_counter()
        for _ in range(n):
            await redis.take_token("bench:bd", 1e6, 1_000_000)
        line("one token-bucket EVAL (old: two per request)", time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(n):
            await redis.session_get("bench-bd")
        line("one key-cache GET (old: one per request)", time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(n):
            await pg.audit("key:bench", "bench.breakdown", "*", {"bytes": 19, "id": str(i)})
        line("one audit INSERT, committed (old: one per request)", time.perf_counter() - t0)
        await redis.session_set("apikey:k_bench", {"revoked": False}, 60)
        plain = RedisStore(services.redis.url, native=False)  # redis-py in a worker thread per call (before gwthru)
        for label, store in (("redis-py, a worker-thread hop per call", plain), ("NativeRedis on trio sockets", redis)):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                record = AuditRecord(f"bd:{i}:{secrets.token_hex(4)}", "key:bench", "bench.breakdown", "*", "{}")
                await store.send_audited(
                    audit_stream=stream,
                    stream="bench-bd",
                    status_key=f"bench-bd:{label[:5]}:{i}",
                    status={"state": "queued"},
                    payload=BODY,
                    record=record,
                    max_audit_backlog=10 * n,
                    max_backlog=10 * n,
                    ttl_s=60,
                    key_cache="apikey:k_bench",
                    ip_buckets=(("ip:bench-bd", 1e6, 1_000_000),),
                    key_bucket=("key:bench-bd", 1e6, 1_000_000),
                )
            line(f"the one-step EVAL of POST /v1/messages ({label}), wall", time.perf_counter() - t0)
            line(f"the one-step EVAL of POST /v1/messages ({label}), CPU of this process", time.process_time() - c0)
        await plain.aclose()
        from anchor.audit_drain import AuditDrain

        drain = AuditDrain(redis, pg, "bench", batch=256)
        await redis.audit_ensure_group(stream, "audit-drain")
        drain.stream = stream
        t0 = time.perf_counter()
        while await drain.drain_once():
            pass
        line("the audit drain, per record (batches of 256: read, INSERT, XACK+XDEL)", time.perf_counter() - t0)
        await redis._call(lambda: redis._client.delete("aiv:q:bench-bd", f"aiv:{stream}"))
        await pg._call(lambda conn: conn.execute("DELETE FROM audit_log WHERE action = 'bench.breakdown'"))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per measured run (default 5)")
    ap.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating bare/gateway rounds; best of each (default 2)")
    ap.add_argument("--no-mailbox", action="store_true", help="skip bench/mailbox.py's figures")
    ap.add_argument("--breakdown", type=int, metavar="N", help="only the per-request cost of each piece, N times")
    ap.add_argument("--serve", metavar="SETTINGS", help=argparse.SUPPRESS)  # the server process
    args = ap.parse_args()
    if args.serve:
        profile = os.environ.get("BENCH_GATEWAY_PROFILE")  # a file: the server's main thread under cProfile
        if profile:
            import cProfile

            # CPU time of the main thread (not wall time: waits for the worker threads and the socket are not
            # counted, so the figures are where its CPU goes, whatever else runs on the machine).
            profiler = cProfile.Profile(time.thread_time)
            profiler.runctx("trio.run(serve, args.serve)", globals(), {"args": args, "trio": trio})
            profiler.dump_stats(profile)
        elif os.environ.get("BENCH_GATEWAY_STEPS") == "1":
            steps = StepTimes()
            trio.run(serve, args.serve, steps, instruments=[steps])
        else:
            trio.run(serve, args.serve)
        return

    if args.breakdown:
        for line in trio.run(breakdown, str(DEFAULT_DIR / SETTINGS_FILE), args.breakdown):
            print(line, flush=True)
        return
    settings = load_settings(DEFAULT_DIR / SETTINGS_FILE)
    db = "bench_gateway_" + secrets.token_hex(4)
    admin = settings.postgres.dsn_for("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    tmp = Path(tempfile.mkdtemp(prefix="bench-gw-settings-"))
    try:
        raw = dataclasses.asdict(settings)
        raw["postgres"]["dbname"] = db
        settings_file = tmp / "services.json"
        settings_file.write_text(json.dumps(raw))
        os.chmod(settings_file, 0o600)
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(settings_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None and server.stdin is not None
            urls = json.loads(server.stdout.readline())
            pids = {"server": server.pid}
            redis_pid = DEFAULT_DIR / "redis" / "redis.pid"
            if redis_pid.exists():
                pids["redis"] = int(redis_pid.read_text().split()[0])
            windows: list[tuple[str, float, float]] = []
            tails: dict[str, list[tuple[float, float]]] = {}
            lines = trio.run(measure, urls, args.seconds, args.connections, args.rounds, pids, windows, tails)
        finally:
            if server.stdin:
                server.stdin.close()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        assert server.stdout is not None
        report = json.loads(server.stdout.readline() or "{}")
        lines += [gc_line(report, windows), tail_line(report, tails), *steps_lines(report)]
        for line in lines:
            print(line, flush=True)
    finally:
        settings_file.unlink(missing_ok=True)
        tmp.rmdir()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    if not args.no_mailbox:
        # bench/mailbox.py by path: as plain `mailbox` it would be the standard library's module.
        spec = importlib.util.spec_from_file_location("bench_mailbox", Path(__file__).with_name("mailbox.py"))
        assert spec is not None and spec.loader is not None
        mailbox_bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mailbox_bench)
        for line in mailbox_bench.run():
            print(line, flush=True)


if __name__ == "__main__":
    main()
