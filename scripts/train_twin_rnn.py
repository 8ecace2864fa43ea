#!/usr/bin/env python3
"""Train the twin's recurrent neural tier (a GRU LM, tied embeddings) with JAX on CPU (build time only).

Corpus and split as scripts/train_twin_neural.py: chitchat 0-b senders minus the dev senders and minus every
conversation a report sender takes part in (bench/twin_data.py), never c-f; the prior's vocabulary (its first
``--vocab`` ids, the rest ``<unk>``); 2 % of messages held out (``--seed``) for the validation perplexity.

Every message is the input ``<s> w1 .. wn`` and the targets ``w1 .. wn </s>``. A sender's messages follow each
other in time order; ``--context message`` resets the hidden state at every message (the model sees only the
message being typed), ``--context sender`` carries it across the sender's consecutive messages (the user's own
previous messages as context; reset between senders). Training runs ``--lanes`` contiguous slices of the corpus
side by side, ``--bptt`` tokens per step, the state carried from step to step (truncated back-propagation).
Validation: each held-out message after its sender's previous message (context only, not scored).

``--arch ff`` trains the feed-forward tier of train_twin_neural.py (6 tokens inside the message) on the same
data, for a comparison at equal budgets.

    PYTHONPATH=. python scripts/train_twin_rnn.py --arch gru --context sender --dim 256 --epochs 5 --out F

Needs the ``build`` extra (jax); node/ never imports jax: the shipped file is int8 (node/twin/rnn.py).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from pathlib import Path

# One XLA thread per build: two builds can share the 2 cores, and the reductions keep one order.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import twin_data  # noqa: E402

from node.twin import neural, rnn  # noqa: E402
from node.twin.prior import GlobalPrior  # noqa: E402
from node.twin.tokens import message_tokens  # noqa: E402


def streams(
    senders: list[twin_data.Sender], prior: GlobalPrior, vn: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """inp, tgt, msg_start, sender_start, held (per position) over all senders' messages in order."""
    inp, tgt, mstart, sstart, held = [], [], [], [], []
    rng = np.random.default_rng(seed)
    for s in senders:
        hs = rng.random(len(s.messages)) < 0.02
        for j, (m, h) in enumerate(zip(s.messages, hs, strict=True)):
            ids = [t if t < vn else prior.unk for t in prior.ids(message_tokens(m))]
            x = [prior.bos, *ids[:-1]]
            inp += x
            tgt += ids
            mstart += [1] + [0] * (len(x) - 1)
            sstart += [1 if j == 0 else 0] + [0] * (len(x) - 1)
            held += [int(h)] * len(x)
    return tuple(np.asarray(a, dtype=np.int32) for a in (inp, tgt, mstart, sstart, held))  # type: ignore[return-value]


def valid_stream(inp, tgt, mstart, sstart, held, per_message):  # type: ignore[no-untyped-def]
    """Each held-out message after its sender's previous message (that one unscored; the state reset between
    them when ``per_message``)."""
    starts = np.flatnonzero(mstart)
    ends = np.append(starts[1:], len(inp))
    pieces, masks, resets = [], [], []
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        if not held[a]:
            continue
        lo = starts[k - 1] if k > 0 and not sstart[a] else a
        pieces.append(np.arange(lo, b))
        masks.append((np.arange(lo, b) >= a).astype(np.int32))
        r = np.zeros(b - lo, np.int32)
        r[0] = 1
        r[a - lo] = 1 if per_message else r[a - lo]
        resets.append(r)
    idx = np.concatenate(pieces)
    return inp[idx], tgt[idx], np.concatenate(resets), np.concatenate(masks)


def lanes(a: np.ndarray, n: int, t: int) -> np.ndarray:
    per = len(a) // n // t * t
    return a[: per * n].reshape(n, per)


def gru_init(rng: np.random.Generator, vn: int, d: int, c0: np.ndarray) -> dict[str, np.ndarray]:
    s = 1 / math.sqrt(d)
    return {
        "e": (rng.standard_normal((vn, d)) * 0.05).astype(np.float32),
        "wx": (rng.standard_normal((d, 3 * d)) * s).astype(np.float32),
        "wh": (rng.standard_normal((d, 3 * d)) * s).astype(np.float32),
        "bx": np.zeros(3 * d, np.float32),
        "bh": np.zeros(3 * d, np.float32),
        "c": c0.astype(np.float32),
    }


def gru_cell(p, h, x):  # type: ignore[no-untyped-def]
    d = h.shape[-1]
    gx = x @ p["wx"] + p["bx"]
    gh = h @ p["wh"] + p["bh"]
    z = jax.nn.sigmoid(gx[..., :d] + gh[..., :d])
    r = jax.nn.sigmoid(gx[..., d : 2 * d] + gh[..., d : 2 * d])
    n = jnp.tanh(gx[..., 2 * d :] + r * gh[..., 2 * d :])
    return (1 - z) * n + z * h


def gru_loss(p, h0, inp, tgt, reset, mask):  # type: ignore[no-untyped-def]
    """inp/tgt/reset/mask: (lanes, T); h0: (lanes, d). Returns (summed nats over mask, last h)."""
    x = p["e"][inp]  # (B, T, d)

    def step(h, xs):  # type: ignore[no-untyped-def]
        xt, rt = xs
        h = jnp.where(rt[:, None] > 0, 0.0, h)
        h = gru_cell(p, h, xt)
        return h, h

    hl, hs = jax.lax.scan(step, h0, (jnp.swapaxes(x, 0, 1), jnp.swapaxes(reset, 0, 1)))
    hs = jnp.swapaxes(hs, 0, 1)  # (B, T, d)
    z = hs @ p["e"].T + p["c"]
    lse = jax.nn.logsumexp(z, axis=-1)
    zt = jnp.take_along_axis(z, tgt[..., None], axis=-1)[..., 0]
    return ((lse - zt) * mask).sum(), hl


def ff_init(rng: np.random.Generator, vn: int, d: int, n: int, c0: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "e": (rng.standard_normal((vn, d)) * 0.05).astype(np.float32),
        "w": (rng.standard_normal((n * d, d)) / math.sqrt(n * d)).astype(np.float32),
        "b": np.zeros(d, np.float32),
        "c": c0.astype(np.float32),
    }


def ff_contexts(inp: np.ndarray, mstart: np.ndarray, n: int, bos: int) -> np.ndarray:
    """The n previous tokens inside the message (BOS before its start) for every position: (N, n)."""
    out = np.full((len(inp), n), bos, np.int32)
    since = np.zeros(len(inp), np.int64)  # position within its message
    starts = np.flatnonzero(mstart)
    since = np.arange(len(inp)) - starts[np.searchsorted(starts, np.arange(len(inp)), side="right") - 1]
    for k in range(n):  # column n-1-k holds the token k back (the current input is k = 0)
        ok = since >= k
        src = np.arange(len(inp)) - k
        out[ok, n - 1 - k] = inp[src[ok]]
    return out


def ff_loss(p, ctx, tgt, mask):  # type: ignore[no-untyped-def]
    x = p["e"][ctx].reshape(ctx.shape[0], -1)
    h = jnp.tanh(x @ p["w"] + p["b"])
    z = h @ p["e"].T + p["c"]
    lse = jax.nn.logsumexp(z, axis=-1)
    zt = jnp.take_along_axis(z, tgt[:, None], axis=-1)[:, 0]
    return ((lse - zt) * mask).sum()


def adam(params, grads, m1, m2, step, lr):  # type: ignore[no-untyped-def]
    m1 = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m1, grads)
    m2 = jax.tree.map(lambda m, g: 0.999 * m + 0.001 * g * g, m2, grads)
    c1, c2 = 1 - 0.9**step, 1 - 0.999**step
    params = jax.tree.map(lambda p, a, b: p - lr * (a / c1) / (jnp.sqrt(b / c2) + 1e-8), params, m1, m2)
    return params, m1, m2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("gru", "ff"), default="gru")
    ap.add_argument("--context", choices=("message", "sender"), default="sender")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--ff-context", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--epochs", type=float, default=5.0)
    ap.add_argument("--lanes", type=int, default=64)
    ap.add_argument("--bptt", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (per token)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--valid-every", type=int, default=200)
    ap.add_argument("--prior", type=Path, default=None, help="prior file for the vocabulary (default: packaged)")
    ap.add_argument("--out", type=Path, default=None, help="write the shipped int8 file (gru) here")
    args = ap.parse_args(argv)
    prior = GlobalPrior.load_file(args.prior) if args.prior else GlobalPrior.load_packaged()
    vn, d = min(args.vocab, prior.v), args.dim
    senders = twin_data.prior_senders(twin_data.load_senders())
    inp, tgt, mstart, sstart, held = streams(senders, prior, vn, args.seed)
    train_mask = (1 - held).astype(np.float32)
    vin, vtgt, vreset, vmask = valid_stream(inp, tgt, mstart, sstart, held, args.context == "message")
    reset = mstart if args.context == "message" else sstart
    n_train, n_valid = int(train_mask.sum()), int(vmask.sum())
    print(f"{args.arch}/{args.context}: train {n_train} tokens, valid {n_valid}, vocab {vn}, dim {d}", flush=True)
    rng = np.random.default_rng(args.seed)
    c0 = np.log(np.bincount(tgt[train_mask > 0], minlength=vn) + 1.0)
    params = gru_init(rng, vn, d, c0) if args.arch == "gru" else ff_init(rng, vn, d, args.ff_context, c0)
    params = jax.tree.map(jnp.asarray, params)
    m1 = jax.tree.map(jnp.zeros_like, params)
    m2 = jax.tree.map(jnp.zeros_like, params)
    n_params = sum(int(v.size) for v in params.values())

    if args.arch == "gru":
        B, T = args.lanes, args.bptt
        L = {k: lanes(a, B, T) for k, a in (("i", inp), ("t", tgt), ("r", reset), ("m", train_mask))}
        steps_per_epoch = L["i"].shape[1] // T
        VT = 64
        vpad = (-len(vin)) % (B * VT)
        V = {
            k: np.concatenate([a, np.full(vpad, fill, a.dtype)]).reshape(B, -1)
            for k, a, fill in (("i", vin, 0), ("t", vtgt, 0), ("r", vreset, 1), ("m", vmask.astype(np.float32), 0))
        }

        @jax.jit
        def train_step(params, m1, m2, h, i, t, r, m, step, lr):  # type: ignore[no-untyped-def]
            (loss, hl), g = jax.value_and_grad(gru_loss, has_aux=True)(params, h, i, t, r, m)
            ntok = jnp.maximum(m.sum(), 1.0)
            g = jax.tree.map(lambda x: x / ntok, g)
            gn = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g)))
            g = jax.tree.map(lambda x: x * jnp.minimum(1.0, args.clip / (gn + 1e-6)), g)
            params, m1, m2 = adam(params, g, m1, m2, step, lr)
            return params, m1, m2, jax.lax.stop_gradient(hl), loss

        @jax.jit
        def valid_chunk(params, h, i, t, r, m):  # type: ignore[no-untyped-def]
            return gru_loss(params, h, i, t, r, m)

        def valid() -> float:
            h = jnp.zeros((B, d), jnp.float32)
            tot = 0.0
            for k in range(0, V["i"].shape[1], VT):
                s = slice(k, k + VT)
                loss, h = valid_chunk(params, h, V["i"][:, s], V["t"][:, s], V["r"][:, s], V["m"][:, s])
                tot += float(loss)
            return tot / n_valid / math.log(2)
    else:
        ctx = ff_contexts(inp, mstart, args.ff_context, prior.bos)
        tr = np.flatnonzero(train_mask > 0)
        va = np.flatnonzero(held > 0)
        B = 512
        steps_per_epoch = len(tr) // B

        @jax.jit
        def ff_step(params, m1, m2, c, t, step, lr):  # type: ignore[no-untyped-def]
            loss, g = jax.value_and_grad(ff_loss)(params, c, t, jnp.ones(t.shape, jnp.float32))
            g = jax.tree.map(lambda x: x / t.shape[0], g)
            params, m1, m2 = adam(params, g, m1, m2, step, lr)
            return params, m1, m2, loss

        ff_valid = jax.jit(ff_loss)

        def valid() -> float:
            tot = 0.0
            for k in range(0, len(va), 4096):
                j = va[k : k + 4096]
                tot += float(ff_valid(params, ctx[j], tgt[j], jnp.ones(len(j), jnp.float32)))
            return tot / len(va) / math.log(2)

    n_steps = int(args.epochs * steps_per_epoch)
    print(f"{n_params} params, {n_steps} steps ({steps_per_epoch} per epoch)", flush=True)
    t0 = time.perf_counter()
    h = jnp.zeros((args.lanes, d), jnp.float32)
    order = rng.permutation(len(tr)) if args.arch == "ff" else None
    pos = 0
    for step in range(1, n_steps + 1):
        lr = args.lr * min(1.0, 2.0 * (1 - step / n_steps) + 0.05)
        if args.arch == "gru":
            k = (step - 1) % steps_per_epoch
            if k == 0:
                h = jnp.zeros((B, d), jnp.float32)
            s = slice(k * T, (k + 1) * T)
            params, m1, m2, h, _ = train_step(
                params, m1, m2, h, L["i"][:, s], L["t"][:, s], L["r"][:, s], L["m"][:, s], step, lr
            )
        else:
            assert order is not None
            if pos + B > len(order):
                order, pos = rng.permutation(len(tr)), 0
            j = tr[order[pos : pos + B]]
            pos += B
            params, m1, m2, _ = ff_step(params, m1, m2, ctx[j], tgt[j], step, lr)
        if step % args.valid_every == 0 or step == n_steps:
            took = time.perf_counter() - t0
            print(f"step {step}/{n_steps} valid {valid():.3f} bits/token ({took:.0f} s)", flush=True)
    if args.out and args.arch == "ff":
        w = {k: np.asarray(v) for k, v in params.items()}
        meta = {"params": n_params, "valid_bits": round(valid(), 4), "vocab": vn, "dim": d, "context": args.ff_context}
        data = neural.pack(w["e"], w["w"], w["b"], w["c"], meta)
        args.out.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()[:16]
        print(f"ff: {n_params} params -> {args.out} {len(data)} bytes sha256 {sha}", flush=True)
    if args.out and args.arch == "gru":
        weights = {k: np.asarray(v) for k, v in params.items()}
        meta = {"params": n_params, "valid_bits": round(valid(), 4), "vocab": vn, "dim": d, "context": args.context}
        data = rnn.pack(weights, meta)
        args.out.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()[:16]
        print(f"rnn: {n_params} params -> {args.out} {len(data)} bytes sha256 {sha}", flush=True)
        bits = int8_valid_bits(data, prior, vin, vtgt, vreset, vmask)
        print(f"int8 numpy run time: valid {bits:.3f} bits/token", flush=True)
    return 0


def int8_valid_bits(data, prior, vin, vtgt, vreset, vmask) -> float:  # type: ignore[no-untyped-def]
    """The shipped file's validation bits through the run-time forward (node/twin/rnn.py)."""
    lm = rnn.RecurrentLM(data, prior.p1, prior.unk, prior.bos)
    tot, n, hist = 0.0, 0, []
    for i, t, r, m in zip(vin.tolist(), vtgt.tolist(), vreset.tolist(), vmask.tolist(), strict=True):
        if i == prior.bos:  # a message starts: the previous one ends (its state carried unless reset)
            if hist:
                lm.end_message([*hist, prior.eos])
            hist = []
            if r:
                lm.s_msg[:] = 0.0
                lm._toks, lm._states = [], []
        else:
            hist.append(i)
        if m:
            p = lm.probs(hist, np.asarray([t]))[0]
            tot += -math.log2(max(float(p), 1e-12))
            n += 1
    return tot / max(n, 1)


if __name__ == "__main__":
    raise SystemExit(main())
