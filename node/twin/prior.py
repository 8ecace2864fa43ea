"""The global prior: a pruned interpolated modified Kneser-Ney n-gram model shipped inside the package.

Built at build time by ``scripts/build_twin_prior.py`` (from public text; see that script for the corpus and
the exact sender split) with :func:`build`; loaded read-only at run time by :class:`GlobalPrior`. Lookups are
vectorised over a candidate array: sorted ``int64`` n-gram keys (``((w1*V + w2)*V + w3)...``) searched with
``numpy.searchsorted``.

Pruning drops top-order n-grams seen fewer than ``min_count`` times and lower-order ones whose continuation
count is under ``min_cc``; the probability mass they held moves into their context's interpolation weight, so
every distribution still sums to one.
"""

from __future__ import annotations

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
    keys: I64  # sorted n-gram keys
    ctx_keys: I64  # sorted unique contexts
    ctx_gamma: np.ndarray[Any, np.dtype[np.float32]]
    d: tuple[float, float, float]
    num: np.ndarray[Any, np.dtype[np.float32]]  # discounted count / context total, per key (computed at load)


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
            self.p1: F64 = arrays["p1"].astype(np.float64)
            self.orders: dict[int, _Order] = {}
            for k in range(2, self.order + 1):
                keys = np.cumsum(arrays[f"keys{k}"].astype(np.int64))
                counts = arrays[f"counts{k}"]
                d = tuple(float(x) for x in meta["discounts"][str(k)])
                ctx = keys // self.v
                ctx_keys, inv = np.unique(ctx, return_inverse=True)
                tot = arrays[f"ctx_tot{k}"]
                gamma = arrays[f"ctx_gamma{k}"]
                if len(tot) != len(ctx_keys) or len(gamma) != len(ctx_keys) or len(counts) != len(keys):
                    raise TwinStoreError(f"prior order {k} arrays disagree")
                # float32 per key (the prior's RAM is mostly these arrays): counts minus their discount, over
                # the context's total.
                num = counts.astype(np.float32)
                num -= np.where(counts == 1, d[0], np.where(counts == 2, d[1], d[2])).astype(np.float32)
                num /= tot[inv]
                del inv, counts
                self.orders[k] = _Order(keys, ctx_keys, gamma, (d[0], d[1], d[2]), num)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise TwinStoreError(f"corrupt prior: {exc}") from exc
        if self.p1.shape != (self.v,):
            raise TwinStoreError("prior unigram table has the wrong size")
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.bos, self.eos, self.unk = self.index[BOS], self.index[EOS], self.index[UNK]
        top = np.argsort(-self.p1)
        self.top_unigrams: I64 = top[:CANDIDATES_PER_ORDER].astype(np.int64)
        self.size_bytes = len(data)

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
            ck = self._ctx_key(h, k)
            i = int(np.searchsorted(o.ctx_keys, ck))
            if i >= len(o.ctx_keys) or o.ctx_keys[i] != ck:
                continue
            p *= float(o.ctx_gamma[i])
            keys = ck * self.v + cand
            j = np.searchsorted(o.keys, keys)
            j = np.minimum(j, len(o.keys) - 1)
            hit = o.keys[j] == keys
            p += np.where(hit, o.num[j], 0.0)
        return p

    def candidates(self, history: Sequence[int]) -> I64:
        """Ids likely to come next: the strongest followers of each matched context plus the top unigrams."""
        h = list(history[-(self.order - 1) :])
        h = [self.bos] * (self.order - 1 - len(h)) + h
        parts = [self.top_unigrams]
        for k in range(2, self.order + 1):
            o = self.orders[k]
            ck = self._ctx_key(h, k)
            lo = int(np.searchsorted(o.keys, ck * self.v))
            hi = int(np.searchsorted(o.keys, (ck + 1) * self.v))
            if hi <= lo:
                continue
            seg = o.num[lo:hi]
            if hi - lo > CANDIDATES_PER_ORDER:
                sel = np.argpartition(-seg, CANDIDATES_PER_ORDER)[:CANDIDATES_PER_ORDER]
            else:
                sel = np.arange(hi - lo)
            parts.append(o.keys[lo + sel] % self.v)
        return np.unique(np.concatenate(parts))
