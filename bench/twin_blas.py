"""The twin's learner with numpy's BLAS pool left at its default against capped at one thread, under contention.

Each trial is a fresh process that loads the shipped prior and neural tier into a ``TwinEngine``, caps the BLAS
pool as the daemon does (``node.twin.threads.limit_blas_threads``, i.e. ``[twin] blas_threads = 1``) or leaves
it at its default, then observes the first ``--messages`` messages of one tuning sender (UUID 0-b; needs the
``twin`` extra) and reports the wall and CPU time per message. ``--hogs`` busy-looping processes run meanwhile
(the contention of a busy device); trials alternate default / capped so both see the same load.

    python bench/twin_blas.py [--messages 150] [--trials 3] [--hogs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import json, sys, time
sys.path.insert(0, {bench!r})
import twin_data
from node.twin.engine import Event, TwinEngine
from node.twin import rnn
from node.twin.prior import GlobalPrior
from node.twin.threads import blas_threads, limit_blas_threads
cap = int(sys.argv[1])
limit_blas_threads(cap)
prior = GlobalPrior.load_packaged()
eng = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos))
sender = twin_data.dev_senders(twin_data.load_senders())[0]
msgs = sender.split()[0][: int(sys.argv[2])]
w0, c0 = time.perf_counter(), time.process_time()
for m in msgs:
    eng.observe(Event("message", m, None, 0))
print(json.dumps({{"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0, "n": len(msgs),
                  "threads": blas_threads()}}))
"""


def _hog() -> None:
    while True:
        pass


def trial(cap: int, messages: int) -> dict[str, float]:
    code = WORKER.format(bench=str(ROOT / "bench"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(cap), str(messages)], capture_output=True, text=True, env=env, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=150)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--hogs", type=int, default=2)
    args = ap.parse_args(argv)
    hogs = [multiprocessing.get_context("spawn").Process(target=_hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    runs: dict[int, list[dict[str, float]]] = {0: [], 1: []}
    try:
        for _ in range(args.trials):
            for cap in (0, 1):
                runs[cap].append(trial(cap, args.messages))
    finally:
        for h in hogs:
            h.terminate()
            h.join()
    load = os.getloadavg()[0]
    med = {cap: {k: statistics.median(r[k] / r["n"] for r in rs) for k in ("wall", "cpu")} for cap, rs in runs.items()}
    for cap, name in ((0, "default"), (1, "capped_1")):
        print(
            f"twin_blas.{name}: {1000 * med[cap]['wall']:.2f} ms wall, {1000 * med[cap]['cpu']:.2f} ms CPU per "
            f"message (BLAS threads {runs[cap][0]['threads']}, median of {args.trials})"
        )
    print(
        f"twin_blas.ratio: capped / default = {med[1]['wall'] / med[0]['wall']:.2f} wall, "
        f"{med[1]['cpu'] / med[0]['cpu']:.2f} CPU ({args.hogs} busy processes on {os.cpu_count()} cores, "
        f"load average {load:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
