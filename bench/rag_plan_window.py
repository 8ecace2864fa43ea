"""Planning a large document's model calls: peak memory and the longest step under the model limiter, against
another source tree in the same run.

    python bench/rag_plan_window.py [--chunks N ...] [--baseline-tree /path/to/other/checkout]

For each variant and each N, a child process (PYTHONPATH = the variant's tree) loads the real tokenizer and model,
then does what ``RagService._embed`` does before its model calls for N ~1,000-character chunks (256 word pieces
each): our tree plans a window of ``embed_batch x PLAN_WINDOW_CALLS`` texts at a time, a tree without windows plans
all N at once. Per run: the growth of the child's peak RSS (``VmHWM``) over planning, and the longest single plan
step (what a query's embedding may wait behind). One line per figure, MiB = 2^20 bytes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time
from node.rag import embed as E
from node.rag.settings import RagSection

def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])

n = int(sys.argv[1])
s = RagSection()
e = E.Embedder(E.EmbedderSettings(intra_op_threads=s.embed_threads))
e.load()
e.plan(["warm up the tokenizer"] * 20, batch_size=s.embed_batch, batch_tokens=s.embed_batch_tokens)
texts = [" ".join(f"doc{i} stratum{j} basalt" for j in range(60))[:1000] for i in range(n)]
window = s.embed_batch * getattr(E, "PLAN_WINDOW_CALLS", 0) or n
base, longest = hwm_kib(), 0.0
for start in range(0, n, window):
    t = time.perf_counter()
    e.plan(texts[start : start + window], batch_size=s.embed_batch, batch_tokens=s.embed_batch_tokens)
    longest = max(longest, time.perf_counter() - t)
print(hwm_kib() - base, longest)
"""


def run(tree: Path, n: int) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    # cwd = the tree: `python -c` puts the working directory first on sys.path.
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(n)], cwd=tree, env=env, capture_output=True, text=True, check=True
    )
    kib, longest = r.stdout.split()
    return int(kib) / 1024, float(longest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--baseline-tree", type=Path)
    a = ap.parse_args()
    variants = [("ours", ROOT)] + ([("baseline", a.baseline_tree)] if a.baseline_tree else [])
    for n in a.chunks:
        got = {name: run(tree, n) for name, tree in variants}
        for name, (mib, longest) in got.items():
            print(f"plan {n} chunks, {name}: peak +{mib:.1f} MiB, longest step under the limiter {longest:.2f} s")
        if "baseline" in got:
            (om, ot), (bm, bt) = got["ours"], got["baseline"]
            print(f"plan {n} chunks, ours/baseline: peak growth {om / max(bm, 0.1):.2f}, longest step {ot / bt:.2f}")


if __name__ == "__main__":
    main()
