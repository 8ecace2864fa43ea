"""Honest unicast in a mesh with hostile nodes (issue 13): flooders, replayers, handshake spammers and liars about
neighbours (:mod:`node.sim.adversary`).

    python bench/hostile_mesh.py [--n 200] [--hostile 0.1] [--loss 0.1] [--messages 200] [--seed 1]
                                [--kinds flooder,replayer,handshaker,liar] [--no-baseline]

A random geometric mesh of ``--n`` nodes (mean degree 8, as ``bench/mesh_sim.py``), ``--loss`` per frame; a
``--hostile`` share of the nodes (chosen at random) attack from ``ATTACK_START_S``, kinds in turn. After the warm-up,
``--messages`` private messages go between random honest pairs within the TTL horizon (7 hops), one every 0.5 s,
then the run drains. The same workload runs once more with no hostile node: the baseline.

One line per run: ``hostile_mesh.unicast.n200.hostile10.loss10: delivery X% (delivered/sent) ...``; the goal is
>= 95 % of honest unicast delivered under attack. The delivery counts messages received by their recipient.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.routing.settings import MeshSection
from node.sim import LinkModel, Simulation, random_geometric
from node.sim.adversary import KINDS, attach

WARMUP_S = 45.0
SEND_SPACING_S = 0.5
DRAIN_S = 160.0
ATTACK_START_S = 5.0
TTL_HORIZON = 7
MEAN_DEGREE = 8.0


def send(sim: Simulation, src: int, dst: int) -> None:
    sim.send_private(src, dst, f"m{src}>{dst}")


def run(
    n: int,
    hostile: float,
    loss: float,
    messages: int,
    seed: int,
    budget_s: float = 900.0,
    kinds: tuple[str, ...] = KINDS,
) -> str:
    topo = random_geometric(n, seed=seed, mean_degree=MEAN_DEGREE)
    rng = random.Random(seed)
    bad = sorted(rng.sample(range(n), round(n * hostile))) if hostile else []
    honest = [i for i in range(n) if i not in set(bad)]
    sim = Simulation(topo, LinkModel(loss=loss), MeshSection(), seed=seed)
    used = attach(sim, bad, seed=seed, start_s=ATTACK_START_S, kinds_used=kinds)
    for k in range(messages):
        src = rng.choice(honest)
        ds = topo.hop_distances(src)
        near = [j for j in honest if ds[j] is not None and 0 < ds[j] <= TTL_HORIZON]  # type: ignore[operator]
        dst = rng.choice(near)
        sim.schedule(WARMUP_S + k * SEND_SPACING_S, partial(send, sim, src, dst))
    end = WARMUP_S + messages * SEND_SPACING_S + DRAIN_S
    deadline = time.perf_counter() + budget_s
    while sim.now < end and time.perf_counter() < deadline:
        sim.run_until(min(end, sim.now + 1.0))
    r = sim.report()
    delivered = sum(1 for u in sim.unicasts if u.delivered_s is not None)
    sent = len(sim.unicasts)
    count = {k: sum(1 for v in used.values() if v == k) for k in sorted(set(used.values()))}
    cut = "" if sim.now >= end else f" [INCOMPLETE: wall budget hit at {sim.now:.0f} of {end:.0f} sim s]"
    return (
        f"hostile_mesh.unicast.n{n}.hostile{round(hostile * 100)}.loss{round(loss * 100)}: delivery "
        f"{100 * delivered / max(1, sent):.1f}% ({delivered}/{sent}; goal >= 95%), latency median "
        f"{r.unicast_latency_median_s or 0:.2f} s, {r.link.transmitted:,} frames on links, hostile {count or 'none'}, "
        f"{r.wall_s:.0f} wall s{cut}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--hostile", type=float, default=0.1, help="share of hostile nodes")
    ap.add_argument("--loss", type=float, default=0.1)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=900.0, help="wall-clock seconds per run before it stops")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run without hostile nodes")
    ap.add_argument("--kinds", default=",".join(KINDS), help="hostile kinds, comma-separated (in turn)")
    args = ap.parse_args()
    kinds = tuple(args.kinds.split(","))
    print(run(args.n, args.hostile, args.loss, args.messages, args.seed, args.budget_s, kinds), flush=True)
    if not args.no_baseline:
        print(run(args.n, 0.0, args.loss, args.messages, args.seed, args.budget_s), flush=True)


if __name__ == "__main__":
    main()
