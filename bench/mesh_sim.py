"""Mesh routing at scale, in the simulator (node.sim): delivery, latency and transmissions, against naive flooding.

    python bench/mesh_sim.py [--quick] [--seed S] [--sizes 100,500,1000] [--losses 0,10,30]
                             [--messages M] [--broadcasts B] [--budget-s W] [--speed-budget-s W]
    python bench/mesh_sim.py --scale [--scale-sizes 100,1000,10000] [--scale-messages M] [--scale-budget-s W]

For each N (random geometric graph, BLE-like range, mean degree 8) and each loss (per frame, per direction):

* warm up ``WARMUP_S`` simulated seconds (announces spread; the path table fills);
* send ``--messages`` private messages between random pairs whose hop distance is within the TTL horizon (7;
  BitChat drops anything further, so pairs beyond it would measure the TTL, not the routing), one every
  ``SEND_SPACING_S``, and ``--broadcasts`` public messages from random nodes in between;
* run ``DRAIN_S`` more (a private message retries after 3, 6, 12, 24, 48 s, then every 60 s, for up to 20 attempts:
  undelivered messages still retrying when the run ends are counted apart from failed ones);
* once with ``mesh.routing = "path"`` (the default) and once with ``"flood"`` (naive TTL flooding), the baseline.

One summary line per figure: unicast delivery ratio, median / p95 latency (simulated s) and frames put on links
per delivered message (Noise handshake + encrypted frames, acks included), with the flooding run's figures and
the ratio; the same for broadcasts (fraction of nodes reached, frames per receiver); frames per simulated second
by packet type; and the speed factor (simulated s per wall-clock s) at N=1000.

A run that exceeds its wall-clock budget (``--budget-s``) stops where it is and says so: at some sizes the
traffic of the routing under test makes the simulation slower than real time, and that is itself a figure.

``MESH_SIM_DIAG=1`` in the environment: after each run, one line per undelivered private message (hop distance,
whether the sender heard the destination, its route, session and the pending message's attempts and probes).

``--scale`` (issue 17): the path routing alone at 10 % loss for each N of ``--scale-sizes`` (random geometric,
mean degree 8; up to 10,000 nodes), each within ``--scale-budget-s`` of wall time; speed and cost are counted in
this process's CPU seconds unless ``--scale-clock wall``. Nodes join over a window (``--scale-join-per-s``, 100 nodes
per simulated second by default: 10,000 nodes over 100 s; a link comes up once both its ends have joined), then the
warm-up runs ``--scale-warmup-s`` more; then ``--scale-messages`` private messages and the ``--scale-drain-s`` drain.
Two lines per N: ``.startup`` (joining and settling: frames and cost per node per simulated second, speed, RSS) and
``.steady`` (after it: unicast delivery, frames per node per simulated second, cost, speed, signature checks); then
one line comparing the per-node frame rate at the two largest N (goal: flat, <= 1.5x from 1,000 to 10,000) and the
largest N's speed (goal >= 1x real time), both judged on the steady state. A progress line goes to stderr every
``--scale-progress-s`` simulated seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.routing.settings import MeshSection
from node.sim import LinkModel, SimReport, Simulation, random_geometric
from node.sim.metrics import type_name

WARMUP_S = 45.0  # three announce rounds (15 ± 4 s)
SEND_SPACING_S = 0.5  # between two messages of the workload
DRAIN_S = 160.0  # after the last send (a message retries for longer: 3, 6, 12, 24, 48 s, then every 60 s)
TTL_HORIZON = 7  # hops a BitChat packet can travel
MEAN_DEGREE = 8.0  # BLE: Android keeps up to 8 links, iOS 6 outbound
STEP_S = 1.0  # simulated seconds between wall-clock budget checks
SPEED_PROBE_N = 1000
SCALE_LOSS = 0.1
SCALE_DRAIN_S = 60.0  # the scale runs' drain (a message's first retries are 3, 6, 12, 24 s after it)
# --scale: simulated s of warm-up after the join window. At N=1,000 (10 s window) the per-node frame rate still swings
# between 2.4 and 6.3 frames/s in 10 s windows 20-60 s after the last join (announce rounds and relay intervals still
# stretching) and is 0.9 at 90-130 s: the steady state is measured from here.
SCALE_WARMUP_S = 90.0
SCALE_JOIN_PER_S = 100.0  # --scale: nodes joining per simulated second (N=10,000 joins over 100 s, N=1,000 over 10 s)


@dataclass
class Run:
    n: int
    loss: float
    mode: str
    report: SimReport
    finished: bool
    planned_s: float
    horizon_fraction: float  # mean fraction of other nodes within TTL_HORIZON hops
    broadcast_in_horizon: float | None  # mean fraction of nodes within the horizon reached by a broadcast
    warmup_rates: dict[str, float]  # frames per simulated second by type during the warm-up
    steady_rates: dict[str, float]  # ... after it
    warmup_speed: float | None
    steady_speed: float | None
    warmup_end_s: float  # where the warm-up window ended (WARMUP_S unless the wall budget cut it short)
    verify_per_s: float | None = None  # signature checks asked for by all cores per simulated s after the warm-up
    verify_saved_s: float | None = None  # clock s the shared memo saved after the warm-up (hits x mean real check)


def _hops(adj: list[list[int]], source: int) -> list[int | None]:
    """Breadth-first hop counts from ``source`` over a prebuilt adjacency (Topology.hop_distances rebuilds it
    per call: too slow for hundreds of calls at 10,000 nodes)."""
    dist: list[int | None] = [None] * len(adj)
    dist[source] = 0
    frontier, d = [source], 0
    while frontier:
        d += 1
        nxt = []
        for u in frontier:
            for v in adj[u]:
                if dist[v] is None:
                    dist[v] = d
                    nxt.append(v)
        frontier = nxt
    return dist


def routing_available() -> bool:
    return "routing" in {f.name for f in dataclasses.fields(MeshSection)}


def settings_for(mode: str) -> MeshSection:
    return dataclasses.replace(MeshSection(), routing=mode) if routing_available() else MeshSection()


def _rates(before: dict[int, int], after: dict[int, int], seconds: float) -> dict[str, float]:
    if seconds <= 0:
        return {}
    return {type_name(t): (c - before.get(t, 0)) / seconds for t, c in sorted(after.items())}


def _action(sim: Simulation, kind: str, src: int, dst: int) -> Callable[[], None]:
    def act() -> None:
        if kind == "private":
            sim.send_private(src, dst, f"m{src}>{dst} at {sim.now:.1f}")
        else:
            sim.broadcast(src, f"public news from n{src} at {sim.now:.1f}")

    return act


def _diagnose(sim: Simulation, adj: list[list[int]]) -> None:
    """MESH_SIM_DIAG=1: one line per undelivered private message — what its sender knew of the destination."""
    now = sim.now
    for u in sim.unicasts:
        if u.delivered_s is not None or u.message_id is None:
            continue
        core, peer = sim.cores[u.src], sim.peer_ids[u.dst]
        p = core.delivery.pending.get(u.message_id)
        _, route = core.path_to(peer, now)
        print(
            f"  undelivered n{u.src}>n{u.dst} hops {_hops(adj, u.src)[u.dst]} sent {u.sent_s:.0f}: "
            f"heard {core.peers.get(peer) is not None}, reachable {core.delivery.reachable(peer, now)}, "
            f"route {route.source + '/' + str(route.hops) if route else None}, "
            f"session {core.delivery.sessions.session(peer) is not None}, "
            f"pending {(p.attempts, p.probes, p.sealed) if p else None}, failed {u.failed}",
            flush=True,
        )


def run_one(
    n: int,
    loss: float,
    mode: str,
    *,
    seed: int,
    messages: int,
    broadcasts: int,
    budget_s: float,
    drain_s: float = DRAIN_S,
    on_built: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    warmup_s: float = WARMUP_S,
    join_window_s: float = 0.0,
    progress_every_s: float = 0.0,
) -> Run:
    topo = random_geometric(n, seed=seed, mean_degree=MEAN_DEGREE)
    sim = Simulation(
        topo, LinkModel(loss=loss), settings_for(mode), seed=seed, wall_clock=clock, join_window_s=join_window_s
    )
    if on_built is not None:
        on_built()
    rng = random.Random(seed)
    adj = topo.neighbours()
    dist = [_hops(adj, i) for i in rng.sample(range(n), min(n, 50))]
    horizon = statistics.fmean(sum(1 for d in ds if d is not None and 0 < d <= TTL_HORIZON) / (n - 1) for ds in dist)

    # The workload is fixed before the run so that path and flood runs get the same one.
    plan: list[tuple[float, str, int, int]] = []
    every = max(1, messages // max(1, broadcasts)) if broadcasts else 0
    for k in range(messages):
        src = rng.randrange(n)
        near = [j for j, d in enumerate(_hops(adj, src)) if d is not None and 0 < d <= TTL_HORIZON]
        plan.append((warmup_s + k * SEND_SPACING_S, "private", src, rng.choice(near)))
        if every and k % every == 0 and sum(1 for p in plan if p[1] == "broadcast") < broadcasts:
            plan.append((warmup_s + (k + 0.5) * SEND_SPACING_S, "broadcast", rng.randrange(n), -1))
    for at, kind, src, dst in plan:
        sim.schedule(at, _action(sim, kind, src, dst))
    end_s = max(at for at, *_ in plan) + drain_s if plan else warmup_s + drain_s

    deadline = time.perf_counter() + budget_s
    finished = True
    marks: list[tuple[float, float, dict[int, int]]] = [(0.0, 0.0, {})]  # (sim s, wall s spent, frames)
    verifies: list[tuple[int, int, float]] = [(0, 0, 0.0)]  # signature checks asked for, memo hits, s in misses
    last = (0.0, 0.0, 0)  # (sim s, clock s, frames) at the last progress line
    for target in (warmup_s, end_s):
        while sim.now < target:
            if time.perf_counter() > deadline:
                finished = False
                break
            sim.run_until(min(target, sim.now + STEP_S))
            if progress_every_s and sim.now - last[0] >= progress_every_s:
                spent, frames = sim.report().wall_s, sum(sim.frames_by_type().values())
                print(
                    f"  progress n{n}: {sim.now:.0f} sim s, {spent:.0f} clock s, last {sim.now - last[0]:.0f} sim s: "
                    f"frames/node/sim s {(frames - last[2]) / n / (sim.now - last[0]):.1f}, cost per node per sim s "
                    f"{1e6 * (spent - last[1]) / n / (sim.now - last[0]):,.0f} us, RSS {_num(_rss_mb())} MB, "
                    f"load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
                last = (sim.now, spent, frames)
        marks.append((sim.now, sim.report().wall_s, sim.frames_by_type()))
        verifies.append((sim.verify.calls, sim.verify.hits, sim.verify.miss_s))
        if not finished:
            break
    report = sim.report()
    (t0, w0, f0), (t1, w1, f1) = marks[0], marks[1]
    warmup_rates, warmup_speed = _rates(f0, f1, t1 - t0), ((t1 - t0) / (w1 - w0) if w1 > w0 else None)
    steady_rates: dict[str, float] = {}
    steady_speed = None
    if len(marks) > 2:
        t2, w2, f2 = marks[2]
        steady_rates = _rates(f1, f2, t2 - t1)
        steady_speed = (t2 - t1) / (w2 - w1) if w2 > w1 else None
    verify_rate = shared_cost = None
    if len(marks) > 2 and marks[-1][0] > t1:
        (c1, h1, _), (c2, h2, _) = verifies[1], verifies[-1]
        calls, hits, miss_s = verifies[-1]
        verify_rate = (c2 - c1) / (marks[-1][0] - t1)
        # What the memo saved after the warm-up: its hits there, at the mean cost of a real check in this run.
        shared_cost = (h2 - h1) * miss_s / (calls - hits) if calls > hits else None

    if os.environ.get("MESH_SIM_DIAG"):
        _diagnose(sim, adj)
    in_horizon = []
    for b in sim.broadcasts:
        ds = _hops(adj, b.src)
        within = {j for j, d in enumerate(ds) if d is not None and 0 < d <= TTL_HORIZON}
        if within:
            in_horizon.append(len(within & set(b.reached)) / len(within))
    return Run(
        n,
        loss,
        mode,
        report,
        finished,
        end_s,
        horizon,
        statistics.fmean(in_horizon) if in_horizon else None,
        warmup_rates,
        steady_rates,
        warmup_speed,
        steady_speed,
        t1,
        verify_rate,
        shared_cost,
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} s"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.1f}"


def _speed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}x"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def _state(run: Run) -> str:
    r = run.report
    return "" if run.finished else f" [INCOMPLETE: wall budget hit at {r.sim_time_s:.0f} of {run.planned_s:.0f} sim s]"


def unicast_line(path: Run, flood: Run | None) -> str:
    r = path.report
    line = (
        f"mesh_sim.unicast.n{path.n}.loss{round(path.loss * 100)}: delivery {_pct(r.unicast_delivery_ratio)} "
        f"({r.unicast_delivered}/{r.unicast_sent}, refused {r.unicast_refused}, failed {r.unicast_failed}, "
        f"still retrying at the end {r.unicast_retrying}), latency median "
        f"{_s(r.unicast_latency_median_s)} p95 {_s(r.unicast_latency_p95_s)}, "
        f"{_num(r.unicast_frames_per_delivered)} frames/delivered [routing=path]{_state(path)}"
    )
    if flood is None:
        return line + " | flood baseline unavailable (MeshSection has no `routing`)"
    f = flood.report
    return line + (
        f" | flood: {_pct(f.unicast_delivery_ratio)}, median {_s(f.unicast_latency_median_s)}, "
        f"{_num(f.unicast_frames_per_delivered)} frames/delivered{_state(flood)} | frames ratio path/flood "
        f"{_ratio(r.unicast_frames_per_delivered, f.unicast_frames_per_delivered)}"
    )


def broadcast_line(path: Run, flood: Run | None) -> str:
    r = path.report
    line = (
        f"mesh_sim.broadcast.n{path.n}.loss{round(path.loss * 100)}: reached {_pct(r.broadcast_delivery_ratio)} of "
        f"nodes ({_pct(path.broadcast_in_horizon)} of those within {TTL_HORIZON} hops), latency median "
        f"{_s(r.broadcast_latency_median_s)} p95 {_s(r.broadcast_latency_p95_s)}, "
        f"{_num(r.broadcast_frames_per_receiver)} frames/receiver [routing=path]{_state(path)}"
    )
    if flood is None:
        return line + " | flood baseline unavailable"
    f = flood.report
    return line + (
        f" | flood: {_pct(f.broadcast_delivery_ratio)} ({_pct(flood.broadcast_in_horizon)} in horizon), "
        f"{_num(f.broadcast_frames_per_receiver)} frames/receiver | frames ratio path/flood "
        f"{_ratio(r.broadcast_frames_per_receiver, f.broadcast_frames_per_receiver)}"
    )


def rates_line(run: Run) -> str:
    def fmt(rates: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(rates.items(), key=lambda kv: -kv[1]) if v >= 0.5) or "n/a"

    return (
        f"mesh_sim.frames_per_sim_s.n{run.n}.loss{round(run.loss * 100)}.{run.mode}: "
        f"warm-up (0-{run.warmup_end_s:.0f} s) {fmt(run.warmup_rates)} | after {fmt(run.steady_rates)} "
        f"| speed {_speed(run.warmup_speed)} in the warm-up, {_speed(run.steady_speed)} after"
    )


def speed_line(run: Run) -> str:
    r = run.report
    return (
        f"mesh_sim.speed.n{run.n}: {_speed(r.speed_factor)} simulated/wall over {r.sim_time_s:.0f} sim s in "
        f"{r.wall_s:.0f} wall s (warm-up {_speed(run.warmup_speed)}, after {_speed(run.steady_speed)}; goal >= 10x) "
        f"[routing={run.mode}, loss {round(run.loss * 100)}%, {r.events:,} events, "
        f"{r.link.tail_dropped:,} frames tail-dropped]{_state(run)}"
    )


@dataclass
class ScaleRun:
    run: Run
    build_s: float  # wall seconds to make the topology and the N cores (not simulated time)
    clock: str = "wall"  # what the speed and cost figures count: "wall" seconds or this process's "cpu" seconds
    load: float = 0.0  # 1-minute load average when the run ended
    join_window_s: float = 0.0  # nodes joined at uniform times in [0, this)
    rss_mb: float | None = None  # this process's resident set when the run ended (the simulation still alive)


def _per_node(rates: dict[str, float], n: int) -> float | None:
    return sum(rates.values()) / n if rates else None


def _cost_us(wall_s: float, n: int, sim_s: float) -> float | None:
    return 1e6 * wall_s / (n * sim_s) if sim_s > 0 else None


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def scale_lines(s: ScaleRun) -> tuple[str, str]:
    """Two lines per N: the start-up (nodes joining, then the warm-up) and the steady state after it. The goals are
    judged on the steady state; the start-up is what a mesh of N nodes booting within the join window costs."""
    run, r = s.run, s.run.report
    warm_sim = run.warmup_end_s
    warm_wall = warm_sim / run.warmup_speed if run.warmup_speed else None
    after_sim = r.sim_time_s - warm_sim
    after_wall = after_sim / run.steady_speed if run.steady_speed else None
    cost_warm = _cost_us(warm_wall, run.n, warm_sim) if warm_wall is not None else None
    cost_after = _cost_us(after_wall, run.n, after_sim) if after_wall is not None else None
    own_after = own_speed = None
    if after_wall is not None and run.verify_saved_s is not None:
        own_after = _cost_us(after_wall + run.verify_saved_s, run.n, after_sim)
        own_speed = after_sim / (after_wall + run.verify_saved_s)
    name = f"mesh_sim.scale.n{run.n}.loss{round(run.loss * 100)}"
    tail = (
        f"{r.events:,} events, {r.sim_time_s:.0f} sim s in {r.wall_s:.0f} {s.clock} s, built in {s.build_s:.0f} s, "
        f"RSS {_num(s.rss_mb)} MB, load {s.load:.1f}{_state(run)}"
    )
    startup = (
        f"{name}.startup: nodes joining over {s.join_window_s:g} s then settling, 0-{warm_sim:.0f} sim s: "
        f"frames/node/sim s {_num(_per_node(run.warmup_rates, run.n))} | {s.clock} cost per node per sim s "
        f"{_num(cost_warm)} us | speed {_speed(run.warmup_speed)} real time ({s.clock} time) | {tail}"
    )
    steady = (
        f"{name}.steady: {warm_sim:.0f}-{r.sim_time_s:.0f} sim s: delivery {_pct(r.unicast_delivery_ratio)} "
        f"({r.unicast_delivered}/{r.unicast_sent} sent, still retrying at the end {r.unicast_retrying}), "
        f"frames/node/sim s {_num(_per_node(run.steady_rates, run.n))} | {s.clock} cost per node per sim s "
        f"{_num(cost_after)} us | speed {_speed(run.steady_speed)} real time ({s.clock} time) | signature checks "
        f"asked for per node per sim s {_num(run.verify_per_s / run.n if run.verify_per_s else None)}"
        f" (the simulator answers repeats of the same bytes and key from one shared memo; each real node checks "
        f"its own: with every check paid, {_num(own_after)} us per node per sim s, speed {_speed(own_speed)})"
        f"{_state(run)}"
    )
    return startup, steady


def flatness_line(runs: list[ScaleRun]) -> str:
    if len(runs) < 2:
        return "mesh_sim.scale.flatness: needs two sizes"
    a, b = runs[-2].run, runs[-1].run

    def ratio(x: float | None, y: float | None) -> str:
        return "n/a" if x is None or not y else f"{x / y:.2f}"

    after = ratio(_per_node(b.steady_rates, b.n), _per_node(a.steady_rates, a.n))
    warm = ratio(_per_node(b.warmup_rates, b.n), _per_node(a.warmup_rates, a.n))
    return (
        f"mesh_sim.scale.flatness: frames/node/sim s n{b.n}/n{a.n} = {after} in the steady state (goal <= 1.5), "
        f"{warm} in the start-up | n{b.n} speed in the steady state {_speed(b.steady_speed)} real time (goal >= 1x), "
        f"in the start-up {_speed(b.warmup_speed)}{_state(b)}"
    )


def run_scale(
    sizes: list[int],
    *,
    seed: int,
    messages: int,
    budget_s: float,
    clock: str = "cpu",
    warmup_s: float = SCALE_WARMUP_S,
    drain_s: float = SCALE_DRAIN_S,
    join_per_s: float = SCALE_JOIN_PER_S,
    progress_every_s: float = 0.0,
) -> list[ScaleRun]:
    out = []
    for n in sizes:
        start = time.perf_counter()
        built: list[float] = []

        def on_built(t0: float = start, built: list[float] = built) -> None:
            built.append(time.perf_counter() - t0)

        # Nodes join at join_per_s (10,000 nodes over 100 s at the default); the warm-up runs warmup_s past the
        # join window, so the steady state starts the same time after the last join at every N.
        window = n / join_per_s if join_per_s > 0 else 0.0
        run = run_one(
            n,
            SCALE_LOSS,
            "path",
            seed=seed,
            messages=messages,
            broadcasts=0,
            budget_s=budget_s,
            drain_s=drain_s,
            warmup_s=window + warmup_s,
            join_window_s=window,
            progress_every_s=progress_every_s,
            on_built=on_built,
            clock=time.process_time if clock == "cpu" else time.perf_counter,
        )
        out.append(ScaleRun(run, built[0] if built else 0.0, clock, os.getloadavg()[0], window, _rss_mb()))
        for line in scale_lines(out[-1]):
            print(line, flush=True)
    print(flatness_line(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N=100 only, and a shorter 1,000-node speed probe")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", default="100,500,1000", help="comma-separated N")
    ap.add_argument("--losses", default="0,10,30", help="comma-separated loss percentages")
    ap.add_argument("--messages", type=int, default=200, help="private messages per run")
    ap.add_argument("--broadcasts", type=int, default=10, help="public messages per run")
    ap.add_argument("--budget-s", type=float, default=900.0, help="wall-clock seconds per run before it stops")
    ap.add_argument(
        "--drain-s", type=float, default=DRAIN_S, help=f"simulated seconds after the last send (default {DRAIN_S:g})"
    )
    ap.add_argument("--no-flood", action="store_true", help="skip the flooding baseline (path routing only)")
    ap.add_argument("--speed-budget-s", type=float, default=300.0, help="wall-clock budget of the N=1000 probe")
    ap.add_argument("--scale", action="store_true", help="the scaling runs (issue 17) instead of the figures above")
    ap.add_argument("--scale-sizes", default="100,1000,10000", help="comma-separated N for --scale")
    ap.add_argument("--scale-messages", type=int, default=50, help="private messages per --scale run")
    ap.add_argument("--scale-budget-s", type=float, default=900.0, help="wall-clock seconds per --scale run")
    ap.add_argument(
        "--scale-warmup-s",
        type=float,
        default=SCALE_WARMUP_S,
        help=f"simulated warm-up of a --scale run after its join window (default {SCALE_WARMUP_S:g})",
    )
    ap.add_argument("--scale-drain-s", type=float, default=SCALE_DRAIN_S, help="simulated drain of a --scale run")
    ap.add_argument(
        "--scale-progress-s",
        type=float,
        default=10.0,
        help="a progress line on stderr every this many simulated s of a --scale run (0: none)",
    )
    ap.add_argument(
        "--scale-join-per-s",
        type=float,
        default=SCALE_JOIN_PER_S,
        help="nodes joining per simulated second in a --scale run (0: every node at once, links up within 1 s); the "
        "warm-up runs --scale-warmup-s past the join window",
    )
    ap.add_argument(
        "--scale-clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="count the simulator's cost in this process's CPU seconds (default: a shared machine's load does not "
        "show as simulator cost) or in wall-clock seconds",
    )
    args = ap.parse_args()
    if args.scale:
        sizes = [int(x) for x in args.scale_sizes.split(",")]
        run_scale(
            sizes,
            seed=args.seed,
            messages=args.scale_messages,
            budget_s=args.scale_budget_s,
            clock=args.scale_clock,
            warmup_s=args.scale_warmup_s,
            drain_s=args.scale_drain_s,
            join_per_s=args.scale_join_per_s,
            progress_every_s=args.scale_progress_s,
        )
        return
    sizes = [100] if args.quick else [int(x) for x in args.sizes.split(",")]
    losses = [float(x) / 100 for x in args.losses.split(",")]
    speed_budget = min(args.speed_budget_s, 120.0) if args.quick else args.speed_budget_s
    flood_ok = routing_available() and not args.no_flood
    if not routing_available():
        print("mesh_sim: MeshSection has no `routing` field: the flooding baseline is unavailable", flush=True)

    common = {"seed": args.seed, "messages": args.messages, "broadcasts": args.broadcasts, "drain_s": args.drain_s}
    speed_run: Run | None = None
    for n in sizes:
        for loss in losses:
            path = run_one(n, loss, "path", budget_s=args.budget_s, **common)
            flood = run_one(n, loss, "flood", budget_s=args.budget_s, **common) if flood_ok else None
            print(unicast_line(path, flood), flush=True)
            print(broadcast_line(path, flood), flush=True)
            print(rates_line(path), flush=True)
            if flood is not None:
                print(rates_line(flood), flush=True)
            if n == SPEED_PROBE_N and (speed_run is None or loss == 0.1):
                speed_run = path
    if speed_run is None:
        speed_run = run_one(SPEED_PROBE_N, 0.1, "path", budget_s=speed_budget, **common)
        print(rates_line(speed_run), flush=True)
    print(speed_line(speed_run), flush=True)


if __name__ == "__main__":
    main()
