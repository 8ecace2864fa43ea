"""The neural tier: a small feed-forward neural LM (Bengio et al. 2003, tied embeddings), int8 on disk.

``h = tanh([E[w-n]; ...; E[w-1]] W + b)`` (``n`` previous tokens, stored in the file),
``p(w | h) = softmax(h E^T + c)`` over the prior's
:data:`~node.twin.prior` ids below ``V_n`` (the most frequent tokens); rarer tokens share the ``<unk>`` class and
get ``p(<unk>) * p1(w) / Z`` (their share of the prior's unigram mass outside the neural vocabulary).

Pretrained globally at build time with numpy (``scripts/train_twin_neural.py``, same corpus as the prior) and
shipped as ``node/twin/data/neural.bin``: ``E`` and ``W`` int8 with one float32 scale per row (per-row absmax),
``b`` and ``c`` float32. At run time the weights are dequantized once to float32 (numpy has no fast int8
matmul; the int8 file is what keeps the package and memory-mapped size small).

On-device adaptation (:meth:`NeuralLM.adapt`) is one SGD step on ``c``, ``W`` and ``b`` (not the embeddings,
which stay global) against ``-log p(target)``; the adapted tensors are the user's state. It is the expensive
update the surprise gate protects. The output bias alone can also learn from every token cheaply
(:meth:`NeuralLM.adapt_bias`: the prediction already computed ``p``, so its step is one vector add).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from node.twin import blob
from node.twin.errors import PriorMissing, TwinStoreError

MAGIC = b"AVTN"
FORMAT_VERSION = 1
NEURAL_FILE = "neural.bin"
CONTEXT = 3  # previous tokens seen by a model file without a "context" entry
MAX_CONTEXT = 8
# A model file's payload (its arrays, int8 mostly) is at most this: the shipped GRU's is 1.48 MB (1.45 M params),
# and a model ~10x larger still fits. Read as float32 it is 4x this at most (the dequantized weights), and a file's
# shapes are all checked before anything is dequantized: a 10 KB hostile file declaring 64 MiB of int8 used to cost
# ~570 MiB before its refusal (tests/twin/test_hostile_models.py).
MAX_RAW_BYTES = 16 << 20
MAX_DIM = 1024  # a model's state/hidden size (the shipped GRU's is 256)
SPARSE_MIN_P = 1e-3  # adapt_batch: output rows below this probability (for every token) leave the gradient

F32 = np.ndarray[Any, np.dtype[np.float32]]
MAX_WEIGHT = 1e3  # bound on a model file's |weights| (the shipped ones stay below 13): products stay finite


def int8_shape(
    arrays: dict[str, np.ndarray[Any, Any]], name: str, shape: tuple[int | None, int | None]
) -> tuple[int, int]:
    """The shape of a model file's int8 matrix ``name`` (one float32 scale per row in ``name_scale``), its dtypes,
    shape (``None``: any) and scales checked, nothing allocated: a 1-D array beside a scale of its length would
    broadcast to a square (a 568-byte file asked for 67 MB)."""
    q, scale = arrays.get(name), arrays.get(name + "_scale")
    if q is None or scale is None or q.dtype != np.int8 or q.ndim != 2:
        raise TwinStoreError(f"corrupt neural model: {name} is not an int8 matrix with its scales")
    if any(want is not None and got != want for got, want in zip(q.shape, shape, strict=True)):
        raise TwinStoreError(f"neural model shapes disagree ({name})")
    if scale.dtype != np.float32 or scale.shape != (q.shape[0],) or not _bounded(scale, MAX_WEIGHT / 127.0):
        raise TwinStoreError(f"corrupt neural model: {name}_scale is not one bounded float32 per row")
    return int(q.shape[0]), int(q.shape[1])


def dequantize(arrays: dict[str, np.ndarray[Any, Any]], name: str, shape: tuple[int | None, int | None]) -> F32:
    """A model file's int8 matrix ``name`` as float32 (checked first by :func:`int8_shape`; one float32 array, the
    scales applied in place)."""
    int8_shape(arrays, name, shape)
    out: F32 = arrays[name].astype(np.float32)
    out *= arrays[name + "_scale"][:, None]
    return out


def model_dims(arrays: dict[str, np.ndarray[Any, Any]], prior_v: int, unk: int, bos: int) -> tuple[int, int]:
    """A model file's vocabulary and state size from its embeddings' shape, checked against the prior's vocabulary
    and MAX_DIM before anything is dequantized."""
    vn, d = int8_shape(arrays, "e", (None, None))
    if not 0 <= max(bos, unk) < vn <= prior_v:
        raise TwinStoreError("neural model shapes disagree (its vocabulary and the prior's)")
    if not 1 <= d <= MAX_DIM:
        raise TwinStoreError(f"neural model: a state size of {d} (1 to {MAX_DIM})")
    return vn, d


def float_vector(arrays: dict[str, np.ndarray[Any, Any]], name: str, n: int) -> F32:
    """A model file's float32 vector ``name`` of length ``n``, finite and bounded (a copy)."""
    v = arrays.get(name)
    if v is None or v.dtype != np.float32 or v.shape != (n,):
        raise TwinStoreError(f"neural model shapes disagree ({name})")
    if not _bounded(v):
        raise TwinStoreError(f"corrupt neural model: {name} is not finite and bounded")
    return v.copy()


def _bounded(v: np.ndarray[Any, Any], limit: float = MAX_WEIGHT) -> bool:
    return bool(np.abs(v).max(initial=0.0) <= limit)  # (NaN fails the comparison)


def quantize_rows(m: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], F32]:
    scale = np.maximum(np.abs(m).max(axis=1), 1e-8) / 127.0
    q = np.clip(np.rint(m / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def pack(
    e: np.ndarray[Any, Any],
    w: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    c: np.ndarray[Any, Any],
    meta: dict[str, Any],
) -> bytes:
    eq, es = quantize_rows(e)
    wq, ws = quantize_rows(w)
    arrays = {"e": eq, "e_scale": es, "w": wq, "w_scale": ws, "b": b.astype(np.float32), "c": c.astype(np.float32)}
    return blob.pack(MAGIC, FORMAT_VERSION, arrays, meta)


def bias_gradient(
    vn: int, unk: int, seen: Sequence[tuple[F32, int]], stacked: F32 | None = None, targets: Sequence[int] | None = None
) -> F32:
    """The output bias's gradient (either tier's): see :meth:`NeuralLM.bias_gradient`."""
    if stacked is not None:
        g: F32 = stacked.sum(axis=0, dtype=np.float32)
    else:
        g = seen[0][0].copy()
        for p, _ in seen[1:]:
            g += p
    for target in targets if targets is not None else [t for _, t in seen]:
        g[target if target < vn else unk] -= 1.0
    return g


def candidate_probs(
    p: np.ndarray[Any, Any], cand: np.ndarray[Any, Any], vn: int, unk: int, rare_share: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """A tier's distribution ``p`` over its ``vn`` words read at prior ids ``cand``: ids past its vocabulary share
    the ``<unk>`` class's mass by their prior share (both tiers, feed-forward and recurrent)."""
    inside = cand < vn
    pc = p[np.where(inside, cand, unk)].astype(np.float64)
    share = rare_share[np.minimum(cand, len(rare_share) - 1)]
    out: np.ndarray[Any, Any] = np.where(inside, pc, pc * share)
    return out


def likeliest_ids(p: np.ndarray[Any, Any], k: int, vn: int, unk: int, bos: int) -> np.ndarray[Any, Any]:
    """The ``k`` likeliest ids of ``p`` (unordered), ``<unk>`` and BOS left out."""
    k = max(1, min(k, vn - 1))
    idx = np.argpartition(-p, k)[:k].astype(np.int64)
    out: np.ndarray[Any, Any] = idx[(idx != unk) & (idx != bos)]
    return out


class NeuralLM:
    adapt_lr = 0.02  # the on-device SGD step (W/b and the output bias) tuned for this tier
    bias_lr = 0.02  # the always-on step on the output bias alone (TwinLM.bias_lr): this tier's one step

    def __init__(self, data: bytes, prior_p1: np.ndarray[Any, Any], unk: int, bos: int) -> None:
        arrays, meta = blob.unpack_untrusted(data, MAGIC, FORMAT_VERSION, max_bytes=MAX_RAW_BYTES)
        ctx = meta.get("context", CONTEXT)
        if isinstance(ctx, bool) or not isinstance(ctx, int) or not 1 <= ctx <= MAX_CONTEXT:
            raise TwinStoreError("neural model: bad context length")
        self.context = ctx
        try:
            self.params = int(meta.get("params", 0))
        except (TypeError, ValueError, OverflowError) as exc:
            raise TwinStoreError(f"corrupt neural model: params: {exc}") from exc
        # Every shape is checked before any array is dequantized (a hostile file costs its payload, no more).
        self.vn, self.d = model_dims(arrays, len(prior_p1), unk, bos)
        int8_shape(arrays, "w", (ctx * self.d, self.d))
        self.b0: F32 = float_vector(arrays, "b", self.d)
        self.c0: F32 = float_vector(arrays, "c", self.vn)
        self.e: F32 = dequantize(arrays, "e", (self.vn, self.d))
        self.w0: F32 = dequantize(arrays, "w", (ctx * self.d, self.d))
        self.unk, self.bos = unk, bos
        p1 = np.asarray(prior_p1, dtype=np.float64)
        out = p1[self.vn :].sum()
        self.rare_share = np.zeros(len(p1), dtype=np.float64)
        self.rare_share[self.vn :] = p1[self.vn :] / max(out, 1e-12)
        self.size_bytes = len(data)
        # Which model a user's adaptation belongs to: deltas learned on another model (a rebuilt or retrained
        # neural.bin, even one of the same shape) mean nothing on this one.
        self.model_id = hashlib.sha256(data).hexdigest()[:16]
        self.reset()

    def reset(self) -> None:
        """Back to the global weights (forget the user's adaptation)."""
        self.w = self.w0.copy()
        self.b = self.b0.copy()
        self.c = self.c0.copy()
        self.updates = 0
        self.last_p: F32 | None = None  # the distribution of the last forward pass
        self.last_x: F32 | None = None  # ... its input (the context's embeddings)
        self.last_h: F32 | None = None  # ... and its hidden layer
        self.out_row: F32 | None = None  # when set, the next forward pass writes its distribution here

    @classmethod
    def load_packaged(cls, prior_p1: np.ndarray[Any, Any], unk: int, bos: int) -> NeuralLM:
        try:
            data = resources.files("node.twin.data").joinpath(NEURAL_FILE).read_bytes()
        except (FileNotFoundError, ModuleNotFoundError, OSError) as exc:
            raise PriorMissing(f"the twin's neural model ({NEURAL_FILE}) is not installed") from exc
        return cls(data, prior_p1, unk, bos)

    @classmethod
    def load_file(cls, path: Path, prior_p1: np.ndarray[Any, Any], unk: int, bos: int) -> NeuralLM:
        return cls(path.read_bytes(), prior_p1, unk, bos)

    def _x(self, history: Sequence[int]) -> F32:
        n = self.context
        h = [self.bos] * n + [t if t < self.vn else self.unk for t in history[-n:]]
        return self.e[h[-n:]].reshape(-1)

    def _forward(self, history: Sequence[int]) -> tuple[F32, F32, F32]:
        x = self._x(history)
        h = np.tanh(x @ self.w + self.b)
        z = self.e @ h + self.c
        z[self.bos] = -np.inf  # BOS is context, never a prediction
        z = z - z.max()
        p = np.exp(z) if self.out_row is None else np.exp(z, out=self.out_row)
        p /= p.sum()
        self.last_x, self.last_h, self.last_p = x, h, p
        return x, h, p

    def probs(self, history: Sequence[int], cand: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """p(w | history) for prior ids ``cand`` (ids >= the prior's V are the caller's business)."""
        _, _, p = self._forward(history)
        return candidate_probs(p, cand, self.vn, self.unk, self.rare_share)

    def top_ids(self, history: Sequence[int], k: int) -> np.ndarray[Any, Any]:
        """The ``k`` likeliest next ids (one forward pass; ``<unk>`` and BOS left out, unordered)."""
        _, _, p = self._forward(history)
        return likeliest_ids(p, k, self.vn, self.unk, self.bos)

    def adapt_bias(self, seen: Sequence[tuple[F32, int]], lr: float) -> None:
        """The cheap update: one SGD step on the output bias ``c`` alone per (distribution, target) pair, from
        the distributions the predictions already computed (no forward pass; a vector add per token)."""
        if not seen:
            return
        self.c -= lr * self.bias_gradient(seen)

    def adapt_bias_rows(self, rows: F32, targets: Sequence[int], lr: float) -> None:
        """:meth:`adapt_bias` from the distributions laid out as the rows of one block (the predictions wrote
        them there): one reduction over contiguous memory instead of a vector add per token."""
        if len(targets):
            g = self.bias_gradient([], rows, targets)
            g *= lr  # (in place: the same float32 products as c -= lr * g, without a temporary)
            self.c -= g

    def bias_gradient(
        self, seen: Sequence[tuple[F32, int]], stacked: F32 | None = None, targets: Sequence[int] | None = None
    ) -> F32:
        """``sum(p - onehot(target))`` over ``seen``: the distributions summed by in-place vector adds (or in one
        reduction when the caller already ``stacked`` them), then one subtraction per target. The same sum as
        adding each token's ``p - onehot`` in turn, up to float32 rounding order."""
        return bias_gradient(self.vn, self.unk, seen, stacked, targets)

    def adapt(self, history: Sequence[int], target: int, lr: float, *, bias: bool = True) -> float:
        """One SGD step on (c, W, b) towards ``target`` (W and b only when not ``bias``); returns the
        surprisal (bits) before the step."""
        x, h, p = self._forward(history)
        t = target if target < self.vn else self.unk
        bits = -math.log2(max(float(p[t]), 1e-12))
        dz = p
        dz[t] -= 1.0
        dh = dz @ self.e
        da = dh * (1.0 - h * h)
        if bias:
            self.c -= lr * dz
        self.w -= lr * np.outer(x, da)
        self.b -= lr * da
        self.updates += 1
        return bits

    def adapt_batch(self, steps: Sequence[tuple[F32, F32, F32, int, float]], lr: float, *, bias: bool = False) -> int:
        """One mini-batch SGD step on (W, b) (and ``c`` when ``bias``) from forward passes the predictions
        already computed: ``(x, h, p, target, weight)`` per token, the gradient summed with each token's weight.

        The cheap form of :meth:`adapt`: no second forward pass, one matrix-matrix product for the whole batch
        instead of a matrix-vector product per token, and the hidden layer's gradient ``(p - onehot) E`` taken
        over the output rows that matter, the targets and every word some token gave ``p > SPARSE_MIN_P``
        (~100-250 of the 4,096; the rest of ``p``, ~14 % of its mass, moved ~3.5 % of that gradient, median
        over a tuning sender's tokens). The gradient is taken at the weights the predictions saw (the message's
        start), as for the bias step. Returns how many tokens it learned from."""
        if not steps:
            return 0
        x = np.stack([s[0] for s in steps])
        h = np.stack([s[1] for s in steps])
        p = np.stack([s[2] for s in steps])  # a copy: the callers' distributions stay as they were
        wgt = np.asarray([s[4] for s in steps], dtype=np.float32)
        targets = np.asarray([t if t < self.vn else self.unk for _, _, _, t, _ in steps], dtype=np.int64)
        keep = np.union1d(np.flatnonzero((p > SPARSE_MIN_P).any(axis=0)), targets)
        dz = p[:, keep]
        dz[np.arange(len(steps)), np.searchsorted(keep, targets)] -= 1.0
        dz *= wgt[:, None]
        da = (dz @ self.e[keep]) * (1.0 - h * h)
        if bias:
            gc = wgt @ p
            np.add.at(gc, targets, -wgt)
            self.c -= lr * gc
        self.w -= (lr * x).T @ da
        self.b -= lr * da.sum(axis=0)
        self.updates += len(steps)
        return len(steps)

    def state(self) -> dict[str, F32]:
        """The user's adaptation, as deltas from the global weights."""
        return {"nn_c": self.c - self.c0, "nn_w": self.w - self.w0, "nn_b": self.b - self.b0}

    def load_state(self, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
        try:
            c, w, b = arrays["nn_c"], arrays["nn_w"], arrays["nn_b"]
        except KeyError:
            return
        if c.shape != self.c0.shape or w.shape != self.w0.shape or b.shape != self.b0.shape:
            raise TwinStoreError("neural adaptation does not match the shipped model")
        with np.errstate(over="ignore", invalid="ignore"):
            c32, w32, b32 = ((base + d).astype(np.float32) for base, d in ((self.c0, c), (self.w0, w), (self.b0, b)))
        # Finite deltas can still overflow float32 (1e300): weights that are not finite would make every
        # prediction NaN and the next save unreadable.
        if not (np.isfinite(c32).all() and np.isfinite(w32).all() and np.isfinite(b32).all()):
            raise TwinStoreError("neural adaptation: weights out of range")
        self.c, self.w, self.b = c32, w32, b32
