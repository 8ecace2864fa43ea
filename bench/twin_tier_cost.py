#!/usr/bin/env python3
"""CPU cost of two neural tier files in the twin, alternated in one process (a ratio, not a wall time).

For each of ``--rounds`` rounds and each file: a fresh TwinLM learns a tuning sender's first ``--messages``
messages (predict every token, learn; the shipped gate), then ``suggest`` on 2/3 of each of the next 50 messages.
CPU time (``time.process_time``) per message learned and per suggestion, median over rounds; the loaded tier's
float32 arrays in bytes.

    PYTHONPATH=. python bench/twin_tier_cost.py --a node/twin/data/neural.bin --b NEW.bin [--prior-b P]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # CPU time of one thread, as the twin's service runs (before numpy)

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import twin_data

from node.twin import rnn
from node.twin.gate import MessageGate
from node.twin.model import TwinLM
from node.twin.prior import GlobalPrior


def tier_bytes(nn: rnn.NeuralTier) -> int:
    return sum(v.nbytes for v in vars(nn).values() if isinstance(v, np.ndarray))


def run(prior: GlobalPrior, data: bytes, msgs: tuple[str, ...], n: int) -> tuple[float, float, int]:
    nn = rnn.load_neural(data, prior.p1, prior.unk, prior.bos)
    lm = TwinLM(prior, neural=nn)
    gate = MessageGate(0.5, score="edgec")
    t0 = time.process_time()
    for m in msgs[:n]:
        lm.observe(m, gate=gate)
    learn = (time.process_time() - t0) / n
    lat = []
    for m in msgs[n : n + 50]:
        t1 = time.process_time()
        lm.suggest(m[: len(m) * 2 // 3])
        lat.append(time.process_time() - t1)
    return learn, statistics.median(lat), tier_bytes(nn)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--prior-a", type=Path, default=None)
    ap.add_argument("--prior-b", type=Path, default=None)
    ap.add_argument("--sender", default="0243")
    ap.add_argument("--messages", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    senders = twin_data.load_senders()
    msgs = next(s for u, s in sorted(senders.items()) if u.startswith(args.sender)).messages
    pa = GlobalPrior.load_file(args.prior_a) if args.prior_a else GlobalPrior.load_packaged()
    pb = GlobalPrior.load_file(args.prior_b) if args.prior_b else GlobalPrior.load_packaged()
    res: dict[str, list[tuple[float, float, int]]] = {"a": [], "b": []}
    for _ in range(args.rounds):
        res["a"].append(run(pa, args.a.read_bytes(), msgs, args.messages))
        res["b"].append(run(pb, args.b.read_bytes(), msgs, args.messages))
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), v[0][2]) for k, v in res.items()}
    (la, sa, ba), (lb, sb, bb) = med["a"], med["b"]
    print(f"tier_cost.learn: a {la * 1e6:.0f} µs, b {lb * 1e6:.0f} µs CPU per message (b/a {lb / la:.2f}x)")
    print(f"tier_cost.suggest: a {sa * 1e3:.2f} ms, b {sb * 1e3:.2f} ms CPU p50 (b/a {sb / sa:.2f}x)")
    print(f"tier_cost.loaded: a {ba / 2**20:.1f} MiB, b {bb / 2**20:.1f} MiB of float32 arrays")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
