"""The recurrent neural tier: a GRU language model with tied embeddings, int8 on disk, numpy at run time.

``s_t = GRU(s_{t-1}, E[w_t])`` over the message being typed, ``<s>`` first; the state before a message is the
state after the user's previous message (the twin sees its user's sent messages in order: :meth:`end_message`),
so the user's own last message is context, as in training (``scripts/train_twin_rnn.py --context sender``).
``p(w | s) = softmax(E o + c)`` with ``o = s + s A + a``: ``A`` (d x d) and ``a`` are the on-device adapter, zero
in the shipped model. Vocabulary, ``<unk>`` share and BOS as in :mod:`node.twin.neural` (the feed-forward tier,
which the same interface keeps loadable: :func:`load_neural` reads either file).

Pretrained globally at build time with JAX (the ``build`` extra; never imported here) and shipped as
``node/twin/data/neural.bin``: ``E``, ``Wx``, ``Wh`` int8 with one float32 scale per row, biases float32,
dequantized once at load.

Carrying the state: a suggestion or a prediction continues the states of the current message's prefix it
already computed (one GRU step per new token, never the whole history again); :meth:`end_message` makes the
learned message's last state the next message's start.

On-device adaptation: the adapter ``(A, a)`` and the output bias ``c``, one SGD step per batch from the forward
passes the predictions computed (:meth:`RecurrentLM.adapt_batch`), like the feed-forward tier's W/b step; the
GRU and the embeddings stay global.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from node.twin import blob, neural
from node.twin.errors import PriorMissing, TwinStoreError
from node.twin.neural import candidate_probs, likeliest_ids
from node.twin.tokens import MAX_MESSAGE_TOKENS

MAGIC = b"AVTR"
FORMAT_VERSION = 1
MAX_STEPS = MAX_MESSAGE_TOKENS + 1  # states kept for one message's prefix (a longer history keeps its tail)
# Bound on the adapter, max|A| * d + max|a| (a bound on |o - s| for a state in [-1, 1]): learned adapters stay
# near 0.2 (500 hostile messages); a damaged one (3e38) overflows ``o`` into NaN predictions. Beyond it a saved
# adaptation is refused, and one learned beyond it is dropped (the tier starts again from the shipped model).
MAX_ADAPTER = 1e3
# Bounds on the output bias c (the always-on step, bias_lr 0.1): one message moves an element of c by at most
# MAX_BIAS_STEP logits (a 128-token message repeating one word moved it by 12.8 before; on the 8 tuning senders
# the largest per-message move is 0.475, so the clip never binds on real text) and c stays within MAX_BIAS_DRIFT
# of the shipped c0 (tuning senders drift at most 3.4 after ~440 messages; e^16 is a 9-million-fold change of
# one word's odds). A stored c beyond the drift bound is not one learning could reach: on load the neural
# adaptation starts again from the shipped model, with a reason (:attr:`RecurrentLM.dropped`).
MAX_BIAS_STEP = 1.0
MAX_BIAS_DRIFT = 16.0
BIAS_DRIFT_SLACK = 1e-3  # float32 rounding of c0 ± the bound and of the saved delta (an ulp near |c| ~ 30 is 2e-6)

F32 = neural.F32


def pack(params: dict[str, np.ndarray[Any, Any]], meta: dict[str, Any]) -> bytes:
    """``params``: e (V, d), wx and wh (d, 3d), bx and bh (3d,), c (V,), as the trainer writes them."""
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for name in ("e", "wx", "wh"):
        q, s = neural.quantize_rows(np.asarray(params[name], dtype=np.float32))
        arrays[name], arrays[name + "_scale"] = q, s
    for name in ("bx", "bh", "c"):
        arrays[name] = np.asarray(params[name], dtype=np.float32)
    return blob.pack(MAGIC, FORMAT_VERSION, arrays, meta)


def _sigmoid(x: F32) -> F32:
    out: F32 = 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow warning for large |x|
    return out


class RecurrentLM:
    # The on-device SGD step (adapter and output bias): the adapter's input is the GRU state (|s| up to sqrt(d)),
    # so the feed-forward tier's 0.02 overshoots (tuning senders: 5.988 bits at 0.02, 5.845 at 0.006, 5.811 at
    # 0.002; frozen 5.853). The longer-trained GRU (session 8) wants a smaller step: tuning senders, shipped gate,
    # 5.685 bits/token at 0.004, 5.653 at 0.002, 5.649 at 0.001, 5.652 at 0.0005 (measured on its 2-epoch build).
    adapt_lr = 0.001
    # The output bias's own step (the always-on step on ``c`` alone, TwinLM.bias_lr): c's gradient does not grow
    # with the state, and at the adapter's 0.002 it learned almost nothing (session 7, gate5). Tuning senders,
    # shipped gate: 5.812 bits/token at 0.002, 5.807 at 0.02, 5.802 at 0.05, 5.798 at 0.1, 5.800 at 0.2
    # (10 confirmation dev senders: 6.045 at 0.002, 6.024 at 0.1).
    bias_lr = 0.1

    def __init__(self, data: bytes, prior_p1: np.ndarray[Any, Any], unk: int, bos: int) -> None:
        arrays, meta = blob.unpack_untrusted(data, MAGIC, FORMAT_VERSION, max_bytes=neural.MAX_RAW_BYTES)
        try:
            self.params = int(meta.get("params", 0))
        except (TypeError, ValueError, OverflowError) as exc:
            raise TwinStoreError(f"corrupt neural model: params: {exc}") from exc
        # Every array's dtype and shape is checked before any is dequantized (a hostile file costs its payload, no
        # more), every weight finite and bounded.
        self.vn, self.d = neural.model_dims(arrays, len(prior_p1), unk, bos)
        for name in ("wx", "wh"):
            neural.int8_shape(arrays, name, (self.d, 3 * self.d))
        self.bx: F32 = neural.float_vector(arrays, "bx", 3 * self.d)
        self.bh: F32 = neural.float_vector(arrays, "bh", 3 * self.d)
        self.c0: F32 = neural.float_vector(arrays, "c", self.vn)
        self.e: F32 = neural.dequantize(arrays, "e", (self.vn, self.d))
        self.wx: F32 = neural.dequantize(arrays, "wx", (self.d, 3 * self.d))
        self.wh: F32 = neural.dequantize(arrays, "wh", (self.d, 3 * self.d))
        self.unk, self.bos = unk, bos
        p1 = np.asarray(prior_p1, dtype=np.float64)
        out = p1[self.vn :].sum()
        self.rare_share = np.zeros(len(p1), dtype=np.float64)
        self.rare_share[self.vn :] = p1[self.vn :] / max(out, 1e-12)
        self.size_bytes = len(data)
        self.model_id = hashlib.sha256(data).hexdigest()[:16]
        self.reset()

    def reset(self) -> None:
        """Back to the global weights and an empty context (forget the user's adaptation)."""
        self.a_w: F32 = np.zeros((self.d, self.d), np.float32)
        self.a_b: F32 = np.zeros(self.d, np.float32)
        self.c = self.c0.copy()
        self._c_drift = 0.0  # an upper bound on max|c - c0| (exact after each clip to the drift bound)
        self.s_msg: F32 = np.zeros(self.d, np.float32)  # the state a message starts from
        self._toks: list[int] = []  # the current message's tokens whose states are kept
        self._states: list[F32] = []  # _states[i]: after <s> and _toks[:i]
        self.updates = 0
        self.last_p: F32 | None = None
        self.last_x: F32 | None = None  # the last forward pass's GRU state ...
        self.last_h: F32 | None = None  # ... and its adapted output vector
        self.out_row: F32 | None = None
        self.dropped: str | None = None  # why the adaptation was dropped while running (the engine reports it)

    def _drop_adaptation(self, why: str) -> None:
        """Back to the shipped adapter and output bias (the context state stays: the GRU is global)."""
        self.a_w = np.zeros((self.d, self.d), np.float32)
        self.a_b = np.zeros(self.d, np.float32)
        self.c = self.c0.copy()
        self._c_drift = 0.0
        self.dropped = why

    def adaptation_ok(self) -> bool:
        """Finite, and the adapter within :data:`MAX_ADAPTER` (NaN fails every comparison)."""
        size = float(np.abs(self.a_w).max(initial=0.0)) * self.d + float(np.abs(self.a_b).max(initial=0.0))
        return size <= MAX_ADAPTER and bool(np.isfinite(self.c).all())

    def _check_adaptation(self) -> None:
        if not self.adaptation_ok():
            self._drop_adaptation("the learned adaptation grew out of range; it starts again from the shipped model")

    @property
    def w(self) -> F32:
        """The weights the gated step adapts (the adapter ``A``), named as the feed-forward tier's ``W``."""
        return self.a_w

    # ------------------------------------------------------------ the GRU
    def _step(self, s: F32, tok: int) -> F32:
        d = self.d
        gx = self.e[tok] @ self.wx + self.bx
        gh = s @ self.wh + self.bh
        z = _sigmoid(gx[:d] + gh[:d])
        r = _sigmoid(gx[d : 2 * d] + gh[d : 2 * d])
        n = np.tanh(gx[2 * d :] + r * gh[2 * d :])
        out: F32 = (1.0 - z) * n + z * s
        return out

    def _ids(self, history: Sequence[int]) -> list[int]:
        vn, unk = self.vn, self.unk
        return [t if t < vn else unk for t in history[-(MAX_STEPS - 1) :]]

    def _state(self, history: Sequence[int]) -> F32:
        """The state after ``<s>`` and ``history`` (the current message's tokens), from the states kept."""
        h = self._ids(history)
        toks = self._toks
        n = len(toks)
        if h[:n] != toks:
            n = 0
            while n < min(len(h), len(toks)) and h[n] == toks[n]:
                n += 1
            del toks[n:]
            del self._states[n + 1 :]
        if not self._states:
            self._states.append(self._step(self.s_msg, self.bos))
        for t in h[n:]:
            self._states.append(self._step(self._states[-1], t))
            toks.append(t)
        return self._states[len(h)]

    def end_message(self, ids: Sequence[int]) -> None:
        """The user's message ``ids`` (its tokens, ``</s>`` last) was learned: its last state starts the next."""
        self.s_msg = self._state(list(ids[:-1])).copy()
        self._toks, self._states = [], []

    # ------------------------------------------------------------ predictions
    def _output(self, s: F32) -> tuple[F32, F32, float]:
        o = s + s @ self.a_w + self.a_b
        z = self.e @ o + self.c
        z[self.bos] = -np.inf
        z = z - z.max()
        p = np.exp(z) if self.out_row is None else np.exp(z, out=self.out_row)
        return o, p, float(p.sum())

    def _forward(self, history: Sequence[int]) -> tuple[F32, F32, F32]:
        s = self._state(history)
        with np.errstate(over="ignore", invalid="ignore"):
            o, p, total = self._output(s)
        if not (math.isfinite(total) and total > 0):  # NaN or inf anywhere: a damaged adaptation, never learned from
            self._drop_adaptation("its predictions were not finite numbers; it starts again from the shipped model")
            o, p, total = self._output(s)  # (finite: the shipped weights are bounded when loaded, |s| <= 1)
        p /= total
        self.last_x, self.last_h, self.last_p = s, o, p
        return s, o, p

    def probs(self, history: Sequence[int], cand: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """p(w | the user's previous messages, this message's ``history``) for prior ids ``cand``."""
        _, _, p = self._forward(history)
        return candidate_probs(p, cand, self.vn, self.unk, self.rare_share)

    def top_ids(self, history: Sequence[int], k: int) -> np.ndarray[Any, Any]:
        _, _, p = self._forward(history)
        return likeliest_ids(p, k, self.vn, self.unk, self.bos)

    # ------------------------------------------------------------ learning
    def adapt_bias(self, seen: Sequence[tuple[F32, int]], lr: float) -> None:
        """The cheap update on ``c`` alone, as :meth:`node.twin.neural.NeuralLM.adapt_bias` (bounded)."""
        if seen:
            self._bias_step(neural.bias_gradient(self.vn, self.unk, seen), lr, len(seen))

    def adapt_bias_rows(self, rows: F32, targets: Sequence[int], lr: float) -> None:
        if len(targets):
            self._bias_step(neural.bias_gradient(self.vn, self.unk, [], rows, targets), lr, len(targets))

    def _bias_step(self, g: F32, lr: float, n: int) -> None:
        """``c -= lr * g`` for ``g`` summed over ``n`` tokens, each element's move clipped to :data:`MAX_BIAS_STEP`
        and ``c`` kept within :data:`MAX_BIAS_DRIFT` of ``c0`` (the same float32 products as the unclipped step
        where no bound binds). Every element of ``g`` lies in ``[-n, n]`` (a sum of ``n`` probabilities minus
        ``n`` target counts), so a message of at most ``MAX_BIAS_STEP / lr`` tokens needs no clip (10 at the
        shipped 0.1: most messages; the clip's O(V) passes are not paid on them)."""
        g *= lr
        moved = abs(lr) * n
        if moved > MAX_BIAS_STEP:
            np.minimum(g, MAX_BIAS_STEP, out=g)
            np.maximum(g, -MAX_BIAS_STEP, out=g)
            moved = MAX_BIAS_STEP
        self.c -= g
        self._bound_drift(moved)

    def _bound_drift(self, moved: float) -> None:
        """``c`` moved by at most ``moved`` per element: clip it to ``c0 ± MAX_BIAS_DRIFT`` once the running bound
        on its drift could exceed that (an O(V) pass every ~10 messages, not every message)."""
        self._c_drift += moved
        if self._c_drift > MAX_BIAS_DRIFT:
            np.clip(self.c, self.c0 - MAX_BIAS_DRIFT, self.c0 + MAX_BIAS_DRIFT, out=self.c)
            self._c_drift = float(np.abs(self.c - self.c0).max(initial=0.0))

    def adapt(self, history: Sequence[int], target: int, lr: float, *, bias: bool = True) -> float:
        """One SGD step on the adapter (and ``c`` when ``bias``) towards ``target``; the surprisal (bits) before."""
        s, _, p = self._forward(history)
        t = target if target < self.vn else self.unk
        bits = -math.log2(max(float(p[t]), 1e-12))
        dz = p.copy()
        dz[t] -= 1.0
        do = dz @ self.e
        if bias:
            self.c -= lr * dz
            self._bound_drift(abs(lr))  # (|dz| <= 1 element-wise)
        self.a_w -= lr * np.outer(s, do)
        self.a_b -= lr * do
        self.updates += 1
        self._check_adaptation()
        return bits

    def adapt_batch(self, steps: Sequence[tuple[F32, F32, F32, int, float]], lr: float, *, bias: bool = False) -> int:
        """One mini-batch SGD step on the adapter (and ``c`` when ``bias``) from the predictions' forward passes,
        ``(state, output, p, target, weight)`` per token, over the output rows that matter (as the feed-forward
        tier's :meth:`~node.twin.neural.NeuralLM.adapt_batch`). Returns how many tokens it learned from."""
        if not steps:
            return 0
        x = np.stack([s[0] for s in steps])
        p = np.stack([s[2] for s in steps])
        wgt = np.asarray([s[4] for s in steps], dtype=np.float32)
        targets = np.asarray([t if t < self.vn else self.unk for _, _, _, t, _ in steps], dtype=np.int64)
        keep = np.union1d(np.flatnonzero((p > neural.SPARSE_MIN_P).any(axis=0)), targets)
        dz = p[:, keep]
        dz[np.arange(len(steps)), np.searchsorted(keep, targets)] -= 1.0
        dz *= wgt[:, None]
        do = dz @ self.e[keep]
        if bias:
            gc = wgt @ p
            np.add.at(gc, targets, -wgt)
            self.c -= lr * gc
            self._bound_drift(abs(lr) * float(np.abs(wgt).sum()))  # (|gc| <= the summed weights element-wise)
        self.a_w -= (lr * x).T @ do
        self.a_b -= lr * do.sum(axis=0)
        self.updates += len(steps)
        self._check_adaptation()
        return len(steps)

    # ------------------------------------------------------------ the user's state
    def state(self) -> dict[str, F32]:
        """The user's adaptation (deltas from the shipped model) and the context state."""
        return {"nn_c": self.c - self.c0, "nn_w": self.a_w.copy(), "nn_b": self.a_b.copy(), "nn_s": self.s_msg.copy()}

    def load_state(self, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
        try:
            c, w, b = arrays["nn_c"], arrays["nn_w"], arrays["nn_b"]
        except KeyError:
            return
        s = arrays.get("nn_s", np.zeros(self.d, np.float32))
        if c.shape != self.c0.shape or w.shape != self.a_w.shape or b.shape != self.a_b.shape or s.shape != (self.d,):
            raise TwinStoreError("neural adaptation does not match the shipped model")
        with np.errstate(over="ignore", invalid="ignore"):
            c32 = (self.c0 + c).astype(np.float32)
            w32, b32, s32 = (np.asarray(v).astype(np.float32) for v in (w, b, s))
        if not all(np.isfinite(v).all() for v in (c32, w32, b32, s32)) or np.abs(s32).max(initial=0.0) > 1.0:
            raise TwinStoreError("neural adaptation: weights out of range")  # (a GRU state lies in [-1, 1])
        size = float(np.abs(w32).max(initial=0.0)) * self.d + float(np.abs(b32).max(initial=0.0))
        if not size <= MAX_ADAPTER:  # finite but huge: every prediction would overflow into NaN
            raise TwinStoreError(f"neural adaptation: adapter out of range ({size:.3g} > {MAX_ADAPTER:g})")
        drift = float(np.abs(c32 - self.c0).max(initial=0.0))
        self.s_msg, self._toks, self._states = s32, [], []
        if not drift <= MAX_BIAS_DRIFT + BIAS_DRIFT_SLACK:  # no learning reaches it (the step keeps c within)
            self._drop_adaptation(
                f"the saved output bias is {drift:.3g} logits from the shipped one (the bound is {MAX_BIAS_DRIFT:g});"
                " the neural adaptation starts again from the shipped model"
            )
            return
        self.c, self.a_w, self.a_b, self._c_drift = c32, w32, b32, drift


NeuralTier = neural.NeuralLM | RecurrentLM


def load_neural(data: bytes, prior_p1: np.ndarray[Any, Any], unk: int, bos: int) -> NeuralTier:
    """Either neural tier's file: the recurrent one (``AVTR``) or the feed-forward one (``AVTN``)."""
    if data[:4] == MAGIC:
        return RecurrentLM(data, prior_p1, unk, bos)
    return neural.NeuralLM(data, prior_p1, unk, bos)


def load_packaged(prior_p1: np.ndarray[Any, Any], unk: int, bos: int) -> NeuralTier:
    try:
        data = resources.files("node.twin.data").joinpath(neural.NEURAL_FILE).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError, OSError) as exc:
        raise PriorMissing(f"the twin's neural model ({neural.NEURAL_FILE}) is not installed") from exc
    return load_neural(data, prior_p1, unk, bos)
