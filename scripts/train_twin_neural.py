#!/usr/bin/env python3
"""Train node/twin/data/neural.bin, the twin's small neural LM, with numpy (build time only; no torch).

Same corpus and sender split as scripts/build_twin_prior.py (chitchat 0-b senders minus the dev senders; never
c-f), the same tokenization, and the prior's vocabulary (its first ``--vocab`` ids). Adam, full softmax,
mini-batches in a fixed shuffled order (``--seed``), 2 % of messages held out for the validation perplexity.

    PYTHONPATH=. python scripts/train_twin_neural.py [--dim 160] [--context 6] [--vocab 4096] [--epochs 2.0]

Session 6's shipped model (813,216 parameters, sha256 4082c25a15f15835...) took 37 min wall on the shared 2-core
machine; two builds of a short run were byte-identical (one BLAS thread). Since session 7 the shipped tier is the
recurrent one (scripts/train_twin_rnn.py, which also trains this feed-forward shape with JAX: ``--arch ff``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

# BLAS splits its work by thread count, which changes float rounding: a fixed count keeps the build byte-identical.
# One thread: two builds can share the 2 cores without OpenBLAS's helper threads spinning against each other.
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import twin_data  # noqa: E402

from node.twin import neural  # noqa: E402
from node.twin.prior import GlobalPrior  # noqa: E402
from node.twin.tokens import message_tokens  # noqa: E402


def examples(msgs: list[list[int]], vn: int, unk: int, bos: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    ctx, tgt = [], []
    for m in msgs:
        h = [bos] * n + [t if t < vn else unk for t in m]
        for i in range(n, len(h)):
            ctx.append(h[i - n : i])
            tgt.append(h[i])
    return np.asarray(ctx, dtype=np.int64), np.asarray(tgt, dtype=np.int64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=160)
    ap.add_argument("--context", type=int, default=6, help="previous tokens the model sees")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--valid-every", type=int, default=500, help="steps between validation lines (the curve)")
    ap.add_argument("--out", type=Path, default=ROOT / "node" / "twin" / "data" / neural.NEURAL_FILE)
    args = ap.parse_args(argv)
    prior = GlobalPrior.load_packaged()
    vn, d, n = min(args.vocab, prior.v), args.dim, args.context
    senders = twin_data.prior_senders(twin_data.load_senders())
    msgs = [prior.ids(message_tokens(m)) for s in senders for m in s.messages]
    rng = np.random.default_rng(args.seed)
    held = rng.random(len(msgs)) < 0.02
    xtr, ytr = examples([m for m, h in zip(msgs, held, strict=True) if not h], vn, prior.unk, prior.bos, n)
    xva, yva = examples([m for m, h in zip(msgs, held, strict=True) if h], vn, prior.unk, prior.bos, n)
    print(f"train {len(ytr)} tokens, valid {len(yva)}, vocab {vn}, dim {d}", flush=True)
    e = (rng.standard_normal((vn, d)) * 0.05).astype(np.float32)
    w = (rng.standard_normal((n * d, d)) / math.sqrt(n * d)).astype(np.float32)
    b = np.zeros(d, np.float32)
    c = np.log(np.bincount(ytr, minlength=vn) + 1.0).astype(np.float32)
    params = [e, w, b, c]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    step = 0
    t0 = time.perf_counter()

    def valid() -> float:
        tot = 0.0
        for i in range(0, len(yva), 4096):
            x = e[xva[i : i + 4096]].reshape(-1, n * d)
            h = np.tanh(x @ w + b)
            z = h @ e.T + c
            z -= z.max(1, keepdims=True)
            lse = np.log(np.exp(z).sum(1))
            tot += float((lse - z[np.arange(len(z)), yva[i : i + 4096]]).sum())
        return tot / len(yva) / math.log(2)

    n_steps = int(args.epochs * len(ytr) / args.batch)
    order = rng.permutation(len(ytr))
    pos = 0
    for step in range(1, n_steps + 1):
        if pos + args.batch > len(order):
            order = rng.permutation(len(ytr))
            pos = 0
        idx = order[pos : pos + args.batch]
        pos += args.batch
        ctx, t = xtr[idx], ytr[idx]
        x = e[ctx].reshape(-1, n * d)
        h = np.tanh(x @ w + b)
        z = h @ e.T + c
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(t)), t] -= 1.0
        p /= len(t)
        gc = p.sum(0)
        ge = p.T @ h
        dh = p @ e
        da = dh * (1 - h * h)
        gw = x.T @ da
        gb = da.sum(0)
        dx = (da @ w.T).reshape(-1, d)
        np.add.at(ge, ctx.reshape(-1), dx)
        lr = args.lr * min(1.0, 2.0 * (1 - step / n_steps) + 0.05)
        for i, (prm, g) in enumerate(zip(params, (ge, gw, gb, gc), strict=True)):
            m1[i] = 0.9 * m1[i] + 0.1 * g
            m2[i] = 0.999 * m2[i] + 0.001 * g * g
            mh = m1[i] / (1 - 0.9**step)
            vh = m2[i] / (1 - 0.999**step)
            prm -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        if step % args.valid_every == 0 or step == n_steps:
            print(
                f"step {step}/{n_steps} valid {valid():.3f} bits/token ({time.perf_counter() - t0:.0f} s)", flush=True
            )
    n_params = e.size + w.size + b.size + c.size
    meta = {"params": int(n_params), "valid_bits": round(valid(), 4), "vocab": vn, "dim": d, "context": n}
    data = neural.pack(e, w, b, c, meta)
    args.out.write_bytes(data)
    print(f"neural: {n_params} params -> {args.out} {len(data)} bytes", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
