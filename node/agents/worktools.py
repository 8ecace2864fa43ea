"""The tools behind Oracle, Banker, Merchant, Strategist and Ensemble, over a running node.

* ``metrics.series``: :class:`NodeMetrics`, the node's own time series, sampled every ``agents.metrics_interval_s``
  by the agents service (and once more when read): queued private messages, reachable peers, routes, the relay
  total, the battery; delivery outcomes and latencies from the outbox. Times are wall-clock seconds, so the series
  survive a restart: kept in ``<data dir>/agents/series.json`` (0600, written atomically every
  :data:`SAVE_EVERY_SAMPLES` samples and at stop; read leniently and bounded at start).
* ``ledger.read``: :func:`node.agents.ledger.build_ledger` over the inbox and outbox stores and the budgets.
* ``market.offers`` / ``market.offer`` / ``market.accept``: :class:`node.agents.market.OfferBook`, signed with the
  node's Ed25519 key, kept in ``<data dir>/agents/offers.json`` (0600).
* ``agents.route`` / ``agents.dispatch`` / ``tools.available``: the King's router, running one agent (never
  Ensemble itself: no recursion), and the tools this node's agents can call.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.agents.errors import AgentError
from node.agents.forecast import MAX_SAMPLES, Series
from node.agents.ledger import Budgets, build_ledger
from node.agents.market import OfferBook, accept, make_offer, offer_from_json
from node.agents.tools import Tools
from node.privatefile import PrivateFileRefused, read_private_file, write_private_file_atomically

if TYPE_CHECKING:
    from node.agents.king import King
    from node.node import Node

log = logging.getLogger("village.agents")
METRICS = ("outbox_pending", "peers", "routes", "relayed_total", "battery_percent")
MAX_LEDGER_ROWS = 10_000  # inbox/outbox rows the ledger reads at most
MAX_LATENCIES = 500
NOT_DISPATCHABLE = frozenset({"Ensemble"})
SAVE_EVERY_SAMPLES = 10  # five minutes at the default interval: at most that much is lost by a crash
MAX_SERIES_FILE_BYTES = 2_000_000  # 5 metrics x 2,880 samples take ~0.4 MB; a larger file is not ours
MAX_OFFERS_FILE_BYTES = 2_000_000  # 256 offers of ~1 kB each; a larger file is not ours
FUTURE_SLACK_S = 300.0  # samples stamped later than now + this (a clock set back) are dropped at load


def _write_private(path: Path, data: Any) -> None:
    """Atomic 0600 write (:func:`node.privatefile.write_private_file_atomically`: a fresh O_EXCL|O_NOFOLLOW temp
    file, so a planted or symlinked temp file is never written through)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file_atomically(path, json.dumps(data).encode())


def _read_private(path: Path, max_bytes: int) -> Any:
    """The JSON in ``path`` (None if there is none), read without following a symlink and bounded. ValueError for a
    file that is too large, not ours, not private (:class:`PrivateFileRefused`) or not JSON."""
    try:
        body = read_private_file(path, max_bytes + 1)
    except PrivateFileRefused as exc:
        raise ValueError(str(exc)) from None
    if body is None:
        return None
    if len(body) > max_bytes:
        raise ValueError("too large")
    return json.loads(body)


def _move_aside(path: Path) -> None:
    try:
        os.replace(path, path.with_name(path.name + ".bad"))
    except OSError as exc:
        log.warning("could not move %s aside: %s", path, exc)


def _finite(x: object) -> bool:
    if not isinstance(x, int | float) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer beyond a float's range (10**400)
        return False


class NodeMetrics:
    def __init__(self, path: Path | None = None) -> None:
        self.series: dict[str, Series] = {m: Series() for m in METRICS}
        self.path = path
        self.skipped = 0  # samples (or a whole file) dropped at load
        self.unsaved = 0

    def load(self, now_s: float) -> None:
        """The series saved by the previous run. Never fails: an unreadable, oversized, symlinked or non-private
        (group or others may access it) file is moved aside to ``series.json.bad``; unknown metrics, non-finite
        values, samples out of order or in the future are skipped and counted; at most :data:`MAX_SAMPLES` per
        metric are kept (the newest)."""
        if self.path is None:
            return
        try:
            data = _read_private(self.path, MAX_SERIES_FILE_BYTES)
            if data is None:
                return
            rows = data["series"]
            if not isinstance(rows, dict):
                raise ValueError("series is not a mapping")
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            self.skipped += 1
            _move_aside(self.path)
            return
        for m, samples in rows.items():
            if m not in self.series or not isinstance(samples, list):
                self.skipped += 1
                continue
            s = self.series[m]
            for row in samples[-MAX_SAMPLES:]:
                ok = (
                    isinstance(row, list)
                    and len(row) == 2
                    and all(_finite(x) for x in row)
                    and row[0] <= now_s + FUTURE_SLACK_S
                    and (not s.samples or row[0] >= s.samples[-1][0])
                )
                if ok:
                    s.add(float(row[0]), float(row[1]))
                else:
                    self.skipped += 1

    def snapshot(self) -> dict[str, Any]:
        """The series as plain data, taken on the thread that samples (the trio thread): a worker thread must never
        iterate the live deques, which the ``metrics.series`` tool may append to meanwhile."""
        self.unsaved = 0
        return {"version": 1, "series": {m: [list(x) for x in s.samples] for m, s in self.series.items()}}

    def write(self, snapshot: Mapping[str, Any]) -> None:
        """Blocking (file I/O): call in a worker thread with a :meth:`snapshot`."""
        if self.path is not None:
            _write_private(self.path, snapshot)

    def save(self) -> None:
        """Blocking; only where nothing samples concurrently (tests, a stopped service)."""
        self.write(self.snapshot())

    def sample(self, node: Node, battery_percent: float | None) -> None:
        now = node.clock.wall_ms() / 1000
        st = node.status()
        self.series["outbox_pending"].add(now, st["outbox"].get("pending", 0))
        self.series["peers"].add(now, st["peers"])
        self.series["routes"].add(now, st["routes"])
        self.series["relayed_total"].add(now, st["counters"].get("relayed", 0))
        if battery_percent is not None:
            self.series["battery_percent"].add(now, battery_percent)
        self.unsaved += 1

    def view(self, node: Node, interval_s: float) -> dict[str, Any]:
        outbox = node.outbox
        counts = outbox.counts() if outbox is not None else {}
        delivered = outbox.list(state="delivered", limit=MAX_LATENCIES) if outbox is not None else []
        return {
            "interval_s": interval_s,
            "series": {m: [[round(t, 3), v] for t, v in s.samples] for m, s in self.series.items()},
            "delivery": {k: counts.get(k, 0) for k in ("delivered", "failed", "pending")},
            "latencies_s": [max(0.0, (e.updated_at_ms - e.created_at_ms) / 1000) for e in delivered],
        }


async def read_battery(node: Node) -> float | None:
    from node.transports.ble import power

    state = await trio.to_thread.run_sync(power.battery_from_sysfs, power.SYSFS_POWER_SUPPLY)
    return None if state is None or state.percent is None else float(state.percent)


async def sample_forever(node: Node, metrics: NodeMetrics, interval_s: float, limiter: trio.CapacityLimiter) -> None:
    while True:
        try:
            metrics.sample(node, await read_battery(node))
            if metrics.unsaved >= SAVE_EVERY_SAMPLES:
                await trio.to_thread.run_sync(metrics.write, metrics.snapshot(), limiter=limiter)
        except Exception as exc:  # noqa: BLE001 - broad: a full disk, a bug: sampling goes on, the daemon runs
            log.warning("could not sample or save the metric series: %r", exc)
        await trio.sleep(interval_s)


class OfferFile:
    """``offers.json``: read leniently and bounded (a bad row is skipped and counted; an unreadable, oversized,
    symlinked or non-private file is moved aside to ``offers.json.bad``, so the node still starts), written
    atomically (0600, a fresh temp file, temp file and directory fsynced)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.skipped = 0

    def load(self, book: OfferBook, now_ms: int) -> None:
        if self.path is None:
            return
        try:
            rows = _read_private(self.path, MAX_OFFERS_FILE_BYTES)
        except (OSError, ValueError, RecursionError):
            self.skipped += 1
            _move_aside(self.path)
            return
        for row in rows if isinstance(rows, list) else []:
            try:
                if not isinstance(row, dict) or not book.add(offer_from_json(row), now_ms):
                    self.skipped += 1
            except (AgentError, OverflowError):
                self.skipped += 1

    def save(self, book: OfferBook) -> None:
        if self.path is not None:
            _write_private(self.path, [o.to_json() for o in book.all()])


def add_work_tools(
    t: Tools,
    node: Node,
    *,
    metrics: NodeMetrics,
    interval_s: float,
    budgets: Budgets,
    book: OfferBook,
    offers: OfferFile,
    king: Callable[[], Awaitable[King]],
    available: Callable[[], list[str]],
    db_limiter: trio.CapacityLimiter,
) -> None:
    key = node.identity.signing_key
    me = bytes(key.verify_key).hex()

    async def series(_: Mapping[str, Any]) -> Any:
        metrics.sample(node, await read_battery(node))
        return metrics.view(node, interval_s)

    async def ledger(_: Mapping[str, Any]) -> Any:
        inbox = node.inbox.list(limit=MAX_LEDGER_ROWS) if node.inbox is not None else []
        outbox = node.outbox.list(limit=MAX_LEDGER_ROWS) if node.outbox is not None else []
        names = {p["peer_id"]: p["nickname"] or "" for p in node.peers_view()}
        accounts = build_ledger(
            [m.to_json() | {"sender": m.sender} for m in inbox], [e.to_json() for e in outbox], budgets, names
        )
        return {
            "accounts": [a.to_json() for a in accounts],
            "budgets": {
                "stored_bytes_per_peer": budgets.stored_bytes_per_peer,
                "queued_per_peer": budgets.queued_per_peer,
            },
            "relayed_total": node.status()["counters"].get("relayed", 0),
        }

    async def offers_list(_: Mapping[str, Any]) -> Any:
        from node.agents.market import verify

        names = {p["peer_id"]: p["nickname"] or "" for p in node.peers_view()}
        return {"me": me, "names": names, "offers": [o.to_json() | {"valid": verify(o)} for o in book.all()]}

    async def offer(args: Mapping[str, Any]) -> Any:
        peer = args.get("peer")
        to = b""
        if isinstance(peer, str) and peer:
            to = node.resolve_peer(peer, allow_unknown=True)
        o = make_offer(
            key,
            give=str(args.get("give")),
            give_amount=_int(args, "give_amount"),
            want=str(args.get("want")),
            want_amount=_int(args, "want_amount"),
            now_ms=node.clock.wall_ms(),
            ttl_s=float(args.get("ttl_s", 86_400.0)),
            to=to,
        )
        book.add(o, node.clock.wall_ms())
        await trio.to_thread.run_sync(offers.save, book, limiter=db_limiter)
        return o.to_json()

    async def take(args: Mapping[str, Any]) -> Any:
        o = book.get(str(args.get("id", "")))
        taken = accept(o, key, node.identity.peer_id, node.clock.wall_ms())
        book.offers[o.id] = taken
        await trio.to_thread.run_sync(offers.save, book, limiter=db_limiter)
        return taken.to_json()

    async def route(args: Mapping[str, Any]) -> Any:
        text = args.get("text")
        if not isinstance(text, str) or not text.strip():
            raise AgentError("text must be a non-empty string")
        return [[c.agent, round(c.score, 4)] for c in await (await king()).route(text)]

    async def dispatch(args: Mapping[str, Any]) -> Any:
        agent, request = args.get("agent"), args.get("request")
        if not isinstance(agent, str) or not isinstance(request, str):
            raise AgentError("agent and request must be strings")
        k = await king()  # the King's modules (numpy: the router) are loaded by now
        from node.agents.king import active_runner

        spec = k.roster.get(agent)
        if spec.name in NOT_DISPATCHABLE:
            raise AgentError(f"{spec.name} cannot be dispatched to by another agent")
        # The sub-agent runs with the calling request's runner (a narrowed caller's stays narrowed), never the
        # King's full one.
        r = await k.ask(request, agent=spec.name, runner=active_runner())
        step = r["steps"][0]
        return {"agent": spec.name, "text": step["text"], "ok": step["ok"], "sources": step["sources"], "id": r["id"]}

    async def tools_available(_: Mapping[str, Any]) -> Any:
        return available()

    for name, fn in (
        ("metrics.series", series),
        ("ledger.read", ledger),
        ("market.offers", offers_list),
        ("market.offer", offer),
        ("market.accept", take),
        ("agents.route", route),
        ("agents.dispatch", dispatch),
        ("tools.available", tools_available),
    ):
        t.add(name, fn)


def _int(args: Mapping[str, Any], key: str) -> int:
    v = args.get(key)
    if type(v) is not int:
        raise AgentError(f"{key} must be an integer")
    return v
