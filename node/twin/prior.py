"""The global prior: a pruned interpolated modified Kneser-Ney n-gram model shipped inside the package.

Built at build time by ``scripts/build_twin_prior.py`` (from public text; see that script for the corpus and
the exact sender split) with :func:`build`; loaded read-only at run time by :class:`GlobalPrior`. The file keeps
sorted ``int64`` n-gram keys (``((w1*V + w2)*V + w3)...``); in memory each order is grouped by context (CSR: the
contexts' keys, offsets, and per n-gram only its last word as ``uint16`` and its probability term as ``float32``,
6 bytes instead of 12). Lookups are vectorised over a candidate array with ``numpy.searchsorted`` in the context's
segment; the probabilities are bit-identical to the flat layout's (tests/twin/test_kn.py).

Pruning drops top-order n-grams seen fewer than ``min_count`` times and lower-order ones whose continuation
count is under ``min_cc``; the probability mass they held moves into their context's interpolation weight, so
every distribution still sums to one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from node.twin import blob, kn
from node.twin.errors import PriorMissing, TwinStoreError
from node.twin.tokens import BOS, EOS, UNK

MAGIC = b"AVTP"
FORMAT_VERSION = 1
PRIOR_FILE = "prior.bin"  # inside the node.twin.data package
MAX_PRIOR_RAW_BYTES = 256 << 20  # a decompressed prior larger than this is refused
MAX_VOCAB = 50_000  # 4-gram keys must fit in int64: V**4 < 2**63
GAMMA_MAX = 1.0 + 1e-3  # a back-off weight is at most 1 (float32 rounding of a weight near 1 allowed)
MAX_CONTEXT_TOTAL = 2.0**63  # a context's count total (float32 in the file): far above any corpus, finite in float32
CANDIDATES_PER_ORDER = 12  # followers taken from each matched context when proposing next words

F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True, slots=True)
class BuildSettings:
    order: int = 3
    min_word_count: int = 2  # words seen fewer times become <unk>
    max_vocab: int = 30_000
    min_count: tuple[int, ...] = (1, 1, 2)  # per order 1..N: n-grams kept only at or above this count


@dataclass(slots=True)
class _Order:
    """One order's n-grams grouped by context (CSR): the followers of context ``ctx_keys[i]`` are
    ``words[start[i]:start[i + 1]]`` (sorted word ids), their probability terms ``num`` at the same places."""

    ctx_keys: I64  # sorted unique contexts (int64 keys of the k-1 words before)
    ctx_gamma: np.ndarray[Any, np.dtype[np.float32]]  # each context's back-off weight
    start: np.ndarray[Any, np.dtype[np.int32]]  # len(ctx_keys) + 1 offsets into words / num
    words: np.ndarray[Any, np.dtype[np.uint16]]  # the last word of each n-gram (V <= MAX_VOCAB < 2**16)
    num: np.ndarray[Any, np.dtype[np.float32]]  # discounted count / context total, per n-gram (computed at load)

    def find(self, ctx_key: int) -> int:
        """The index of ``ctx_key`` in ``ctx_keys``, or -1."""
        i = int(np.searchsorted(self.ctx_keys, ctx_key))
        return i if i < len(self.ctx_keys) and int(self.ctx_keys[i]) == ctx_key else -1

    def keys(self, v: int) -> I64:
        """Every n-gram's full int64 key (``ctx * V + word``), sorted: built on demand (tests, tools)."""
        ctx: I64 = np.repeat(self.ctx_keys, np.diff(self.start))
        out: I64 = ctx * v + self.words.astype(np.int64)
        return out


def _pad(ids: Sequence[int], order: int, bos: int) -> list[int]:
    return [bos] * (order - 1) + list(ids)


def build(messages: Iterable[Sequence[str]], settings: BuildSettings) -> bytes:
    """A prior blob from tokenized messages (each ending with EOS)."""
    order = settings.order
    msgs = [list(m) for m in messages]
    freq: dict[str, int] = {}
    for m in msgs:
        for t in m:
            freq[t] = freq.get(t, 0) + 1
    words = sorted(
        (w for w, c in freq.items() if c >= settings.min_word_count and w not in (BOS, UNK, EOS)),
        key=lambda w: (-freq[w], w),
    )[: settings.max_vocab - 3]
    vocab = [BOS, EOS, UNK, *words]
    if len(vocab) > MAX_VOCAB:
        raise TwinStoreError("vocabulary too large")
    index = {w: i for i, w in enumerate(vocab)}
    v = len(vocab)
    unk = index[UNK]
    flat: list[int] = []
    targets: list[int] = []
    for m in msgs:
        start = len(flat)
        flat.extend(_pad([index.get(t, unk) for t in m], order, 0))
        targets.extend(range(start + order - 1, len(flat)))
    arr = np.asarray(flat, dtype=np.int64)
    tgt = np.asarray(targets, dtype=np.int64)
    top = np.zeros(len(tgt), dtype=np.int64)
    for k in range(order):
        top = top * v + arr[tgt - (order - 1) + k]
    keys_by_order: dict[int, tuple[I64, np.ndarray[Any, Any]]] = {}
    keys, counts = np.unique(top, return_counts=True)
    keys_by_order[order] = (keys, counts)
    for k in range(order - 1, 0, -1):
        hi_keys = keys_by_order[k + 1][0]
        suffix = hi_keys % (v**k)
        keys_k, cc = np.unique(suffix, return_counts=True)  # continuation counts N1+(• w_k...)
        keys_by_order[k] = (keys_k, cc)
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"order": order, "vocab_size": v, "discounts": {}}
    for k in range(1, order + 1):
        keys_k, cnt = keys_by_order[k]
        n = [int(np.sum(cnt == i)) for i in (1, 2, 3, 4)]
        d = kn.discounts(*n)
        meta["discounts"][str(k)] = list(d)
        dvec = np.where(cnt == 1, d[0], np.where(cnt == 2, d[1], d[2]))
        ctx = keys_k // v
        ctx_keys, inv = np.unique(ctx, return_inverse=True)
        tot = np.bincount(inv, weights=cnt.astype(np.float64))
        gamma = np.bincount(inv, weights=dvec) / tot
        keep = cnt >= settings.min_count[k - 1]
        if k == 1:
            keep = np.ones(len(cnt), dtype=bool)
        pruned_mass = np.bincount(inv[~keep], weights=(cnt[~keep] - dvec[~keep]), minlength=len(ctx_keys)) / tot
        gamma = gamma + pruned_mass
        if k == 1:
            p1 = np.zeros(v, dtype=np.float64)
            p1[keys_k] = (cnt - dvec) / tot[0]
            p1 += gamma[0] / (v - 1)
            p1[0] = 0.0  # BOS is never predicted
            arrays["p1"] = p1.astype(np.float32)
            continue
        kept_ctx = np.unique(inv[keep])
        arrays[f"keys{k}"] = np.diff(keys_k[keep], prepend=0).astype(np.int64)
        arrays[f"counts{k}"] = np.minimum(cnt[keep], 2**32 - 1).astype(np.uint32)
        arrays[f"ctx_tot{k}"] = tot[kept_ctx].astype(np.float32)
        arrays[f"ctx_gamma{k}"] = gamma[kept_ctx].astype(np.float32)
    arrays["vocab"] = np.frombuffer("\n".join(vocab).encode("utf-8"), dtype=np.uint8)
    return blob.pack(MAGIC, FORMAT_VERSION, arrays, meta)


def _vector(arrays: dict[str, np.ndarray], name: str, *, integer: bool = False) -> np.ndarray:
    """A 1-D numeric array of the prior (integers when ``integer``); TwinStoreError naming it otherwise."""
    a = arrays[name]
    kind = np.integer if integer else np.number
    if a.ndim != 1 or not np.issubdtype(a.dtype, kind):
        raise TwinStoreError(f"prior: {name} is not a 1-D array of {'integers' if integer else 'numbers'}")
    return a


def _finite(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    a = _vector(arrays, name)
    if not np.isfinite(a).all():
        raise TwinStoreError(f"prior: {name} is not finite")
    return a


class GlobalPrior:
    """The loaded prior: vectorised interpolated-KN probabilities for candidate word ids."""

    def __init__(self, data: bytes) -> None:
        arrays, meta = blob.unpack_untrusted(data, MAGIC, FORMAT_VERSION, max_bytes=MAX_PRIOR_RAW_BYTES)
        try:
            self.order = int(meta["order"])
            self.vocab: list[str] = bytes(arrays["vocab"]).decode("utf-8").split("\n")
            self.v = len(self.vocab)
            if self.v != int(meta["vocab_size"]) or not 3 <= self.v <= MAX_VOCAB or not 2 <= self.order <= 4:
                raise TwinStoreError("prior header inconsistent")
            self.p1: F64 = _finite(arrays, "p1").astype(np.float64)
            if self.p1.shape != (self.v,) or float(self.p1.min()) < 0 or float(self.p1.max()) > 1:
                raise TwinStoreError("prior unigram table has the wrong size or a value that is not a probability")
            self.orders: dict[int, _Order] = {}
            for k in range(2, self.order + 1):
                self.orders[k] = self._load_order(k, arrays, meta)
            self.index = {w: i for i, w in enumerate(self.vocab)}
            self.bos, self.eos, self.unk = self.index[BOS], self.index[EOS], self.index[UNK]
        except (KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:  # UnicodeDecodeError: ValueError
            raise TwinStoreError(f"corrupt prior: {type(exc).__name__}: {str(exc)[:200]}") from exc
        top = np.argsort(-self.p1)
        self.top_unigrams: I64 = top[:CANDIDATES_PER_ORDER].astype(np.int64)
        self.size_bytes = len(data)

    def _load_order(self, k: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> _Order:
        """One order in its compact layout. Nothing kept is a view of the decompressed payload (a view would
        keep all of it alive): per n-gram a uint16 word and a float32 term, per context an int64 key, a float32
        weight and an int32 offset — 6 and 16 bytes."""
        keys = np.cumsum(_vector(arrays, f"keys{k}", integer=True).astype(np.int64))
        counts = _vector(arrays, f"counts{k}", integer=True)
        if len(counts) != len(keys) or len(keys) >= 2**31:
            raise TwinStoreError(f"prior order {k} arrays disagree")
        if len(counts) and int(counts.min()) < 1:
            raise TwinStoreError(f"prior order {k} has a count below 1")
        if len(keys) and (int(keys[0]) < 0 or int(keys[-1]) >= self.v**k or not bool(np.all(keys[1:] > keys[:-1]))):
            raise TwinStoreError(f"prior order {k} keys are not sorted n-gram keys")
        d = tuple(float(x) for x in meta["discounts"][str(k)])
        # D1, D2, D3+ at most 1, 2, 3: a discount above its count class would make that n-gram's term negative
        if len(d) != 3 or not all(math.isfinite(x) and 0 <= x <= c for x, c in zip(d, (1, 2, 3), strict=True)):
            raise TwinStoreError(f"prior order {k} discounts are not three numbers from 0 to 1, 2 and 3")
        ctx = keys // self.v
        ctx_keys, first = np.unique(ctx, return_index=True)
        del ctx
        words = (keys % self.v).astype(np.uint16)
        del keys
        tot = _finite(arrays, f"ctx_tot{k}")
        # (checked as the float32 kept: a finite float64 past float32's range would become inf)
        with np.errstate(over="ignore"):
            gamma = np.array(_finite(arrays, f"ctx_gamma{k}"), dtype=np.float32)  # a copy: not a view of the payload
        if len(tot) != len(ctx_keys) or len(gamma) != len(ctx_keys):
            raise TwinStoreError(f"prior order {k} arrays disagree")
        # A back-off weight is the share of its context's mass left to the lower order (0 to 1); a context's total
        # counts at least its n-grams kept (so each term is at most 1, and never a division by ~0).
        if len(gamma) and not (float(gamma.min()) >= 0 and float(gamma.max()) <= GAMMA_MAX):
            raise TwinStoreError(f"prior order {k} has a back-off weight outside 0..1")
        kept = np.add.reduceat(counts, first, dtype=np.float64) if len(counts) else np.zeros(0)
        if len(tot) and not bool(np.all((tot >= 1) & (tot >= kept * (1 - 1e-6)) & (tot <= MAX_CONTEXT_TOTAL))):
            raise TwinStoreError(f"prior order {k} has a context total below its counts or out of range")
        start = np.empty(len(ctx_keys) + 1, dtype=np.int32)
        start[:-1] = first
        start[-1] = len(words)
        # counts minus their discount, over the context's total (float32, the same operations as ever)
        num = counts.astype(np.float32)
        num -= np.where(counts == 1, d[0], np.where(counts == 2, d[1], d[2])).astype(np.float32)
        num /= np.repeat(tot, np.diff(start))
        return _Order(ctx_keys, gamma, start, words, num)

    @classmethod
    def load_packaged(cls) -> GlobalPrior:
        try:
            data = resources.files("node.twin.data").joinpath(PRIOR_FILE).read_bytes()
        except (FileNotFoundError, ModuleNotFoundError, OSError) as exc:
            raise PriorMissing(
                f"the twin's global prior ({PRIOR_FILE}) is not installed; rebuild it with "
                "`python scripts/build_twin_prior.py` or reinstall aivillage"
            ) from exc
        return cls(data)

    @classmethod
    def load_file(cls, path: Path) -> GlobalPrior:
        return cls(path.read_bytes())

    def ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t, self.unk) for t in tokens]

    def _ctx_key(self, history: Sequence[int], k: int) -> int:
        key = 0
        for t in history[len(history) - (k - 1) :]:
            key = key * self.v + t
        return key

    def probs(self, history: Sequence[int], cand: I64) -> F64:
        """p(w | history) for every id in ``cand`` (ids < V); history is padded with BOS as needed."""
        h = list(history[-(self.order - 1) :])
        h = [self.bos] * (self.order - 1 - len(h)) + h
        p = self.p1[cand].copy()
        for k in range(2, self.order + 1):
            o = self.orders[k]
            i = o.find(self._ctx_key(h, k))
            if i < 0:
                continue
            p *= float(o.ctx_gamma[i])
            lo, hi = int(o.start[i]), int(o.start[i + 1])
            seg = o.words[lo:hi]
            j = np.minimum(np.searchsorted(seg, cand), hi - lo - 1)
            hit = seg[j] == cand
            p += np.where(hit, o.num[lo + j], 0.0)
        return p

    def candidates(self, history: Sequence[int]) -> I64:
        """Ids likely to come next: the strongest followers of each matched context plus the top unigrams."""
        h = list(history[-(self.order - 1) :])
        h = [self.bos] * (self.order - 1 - len(h)) + h
        parts = [self.top_unigrams]
        for k in range(2, self.order + 1):
            o = self.orders[k]
            i = o.find(self._ctx_key(h, k))
            if i < 0:
                continue
            lo, hi = int(o.start[i]), int(o.start[i + 1])
            seg = o.num[lo:hi]
            if hi - lo > CANDIDATES_PER_ORDER:
                sel = np.argpartition(-seg, CANDIDATES_PER_ORDER)[:CANDIDATES_PER_ORDER]
            else:
                sel = np.arange(hi - lo)
            parts.append(o.words[lo + sel].astype(np.int64))
        return np.unique(np.concatenate(parts))
