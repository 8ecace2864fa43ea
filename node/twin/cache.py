"""The recency tier: a decaying unigram + bigram cache of the user's own latest tokens (Kuhn & De Mori 1990).

Chit-chat repeats itself within a conversation (names, the topic of the hour, the user's pet phrases), which
the personal KN tier only learns slowly because it weighs a token typed a year ago like one typed a minute ago.
Here every count decays by ``decay`` per token learned, so the cache holds roughly the last
``1 / (1 - decay)`` tokens::

    p_cache(w | v) = (C2(v, w) + ALPHA * p1(w)) / (C2(v) + ALPHA),   p1(w) = C1(w) / sum C1

``C1`` and ``C2`` are the decayed counts. A word never cached gets 0 (the mixture with the other tiers
keeps every probability positive). Decay is applied lazily: counts are stored multiplied by a growing scale
``S = decay**-t`` and read divided by it; when ``S`` gets large everything is rescaled. Bounded: at most
``max_entries`` unigrams and bigrams each; over that, the weakest (decayed below :data:`PRUNE_BELOW`, then the
lower half) are dropped.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

import numpy as np

from node.twin.errors import TwinStoreError

DECAY = 0.995
ALPHA = 1.0
PRUNE_BELOW = 0.02  # a decayed count below this is forgotten when the cache is full
MAX_ENTRIES = 20_000
RESCALE_AT = 1e30
CANDIDATES = 8


class RecencyCache:
    def __init__(self, bos: int, *, decay: float = DECAY, max_entries: int = MAX_ENTRIES) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.bos = bos
        self.decay = decay
        self.max_entries = max_entries
        self.scale = 1.0
        self.c1: dict[int, float] = {}
        self.tot1 = 0.0
        self.c2: dict[int, dict[int, float]] = {}
        self.tot2: dict[int, float] = {}
        self.n2 = 0

    def add(self, v: int, w: int) -> None:
        """One more token ``w`` after ``v``."""
        self.scale /= self.decay
        s = self.scale
        self.c1[w] = self.c1.get(w, 0.0) + s
        self.tot1 += s
        fol = self.c2.get(v)
        if fol is None:
            fol = self.c2[v] = {}
            self.tot2[v] = 0.0
        if w not in fol:
            self.n2 += 1
        fol[w] = fol.get(w, 0.0) + s
        self.tot2[v] += s
        if s > RESCALE_AT:
            self._rescale()
        if len(self.c1) > self.max_entries or self.n2 > self.max_entries:
            self._prune()

    def add_message(self, ids: Iterable[int]) -> None:
        """Every token of one message (after BOS): the same state as :meth:`add` per token, inlined (it runs on
        every message the user sends; the scale, totals and entry count live in locals between the rare
        rescales and prunes)."""
        v = self.bos
        decay, cap = self.decay, self.max_entries
        c1, c2, tot2 = self.c1, self.c2, self.tot2
        s, tot1, n2 = self.scale, self.tot1, self.n2
        for w in ids:
            s = s / decay
            old1 = c1.get(w)
            if old1 is None:
                c1[w] = s
            else:
                c1[w] = old1 + s
            tot1 += s
            fol = c2.get(v)
            if fol is None:
                c2[v] = {w: s}
                tot2[v] = 0.0 + s
                n2 += 1
            else:
                old = fol.get(w)
                if old is None:
                    n2 += 1
                    fol[w] = s
                else:
                    fol[w] = old + s
                tot2[v] += s
            if s > RESCALE_AT or n2 > cap or len(c1) > cap:
                self.scale, self.tot1, self.n2 = s, tot1, n2
                if s > RESCALE_AT:
                    self._rescale()
                if len(self.c1) > cap or self.n2 > cap:
                    self._prune()
                c1, c2, tot2 = self.c1, self.c2, self.tot2  # both rebuild the dicts
                s, tot1, n2 = self.scale, self.tot1, self.n2
            v = w
        self.scale, self.tot1, self.n2 = s, tot1, n2

    def _rescale(self) -> None:
        f = 1.0 / self.scale
        self.c1 = {w: c * f for w, c in self.c1.items()}
        self.tot1 *= f
        self.c2 = {v: {w: c * f for w, c in fol.items()} for v, fol in self.c2.items()}
        self.tot2 = {v: t * f for v, t in self.tot2.items()}
        self.scale = 1.0

    def _prune(self) -> None:
        """Drop decayed-out entries; if still full, keep the stronger half."""
        cut = PRUNE_BELOW * self.scale
        c1 = {w: c for w, c in self.c1.items() if c >= cut}
        if len(c1) > self.max_entries // 2:
            c1 = dict(heapq.nlargest(self.max_entries // 2, c1.items(), key=lambda kv: kv[1]))
        pairs = [(c, v, w) for v, fol in self.c2.items() for w, c in fol.items() if c >= cut]
        if len(pairs) > self.max_entries // 2:
            pairs = heapq.nlargest(self.max_entries // 2, pairs)
        self._load(c1, pairs)

    def _load(self, c1: dict[int, float], pairs: Iterable[tuple[float, int, int]]) -> None:
        self.c1 = c1
        self.tot1 = sum(c1.values())
        self.c2, self.tot2, self.n2 = {}, {}, 0
        for c, v, w in pairs:
            self.c2.setdefault(v, {})[w] = c
            self.tot2[v] = self.tot2.get(v, 0.0) + c
            self.n2 += 1

    def context_count(self, v: int) -> float:
        """The decayed number of times the user recently typed ``v`` followed by anything."""
        return self.tot2.get(v, 0.0) / self.scale

    def probs(self, v: int, cand: Iterable[int]) -> list[float]:
        if self.tot1 <= 0.0:
            return [0.0 for _ in cand]
        inv1 = 1.0 / self.tot1
        c1 = self.c1
        fol = self.c2.get(v)
        if fol is None:
            return [c1.get(w, 0.0) * inv1 for w in cand]
        a = ALPHA * self.scale
        inv = 1.0 / (self.tot2[v] + a)
        return [(fol.get(w, 0.0) + a * c1.get(w, 0.0) * inv1) * inv for w in cand]

    def candidates(self, v: int) -> list[int]:
        out: list[int] = []
        fol = self.c2.get(v)
        if fol:
            out.extend(heapq.nlargest(CANDIDATES, fol, key=fol.__getitem__))
        return out

    # ------------------------------------------------------------ state
    def to_arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        f = 1.0 / self.scale
        uni = sorted(self.c1.items())
        bi = sorted((v, w, c) for v, fol in self.c2.items() for w, c in fol.items())
        return {
            "rc_uni": np.asarray([w for w, _ in uni], dtype=np.int32),
            "rc_uni_c": np.asarray([c * f for _, c in uni], dtype=np.float64),
            "rc_bi": np.asarray([(v, w) for v, w, _ in bi], dtype=np.int32).reshape(-1, 2),
            "rc_bi_c": np.asarray([c * f for _, _, c in bi], dtype=np.float64),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray[Any, Any]], top: int) -> None:
        """Restore :meth:`to_arrays` (ids must be below ``top``); raises TwinStoreError on a bad one."""
        if "rc_uni" not in arrays:
            return
        try:
            uni, uc = arrays["rc_uni"].reshape(-1), arrays["rc_uni_c"].reshape(-1)
            bi, bc = arrays["rc_bi"].reshape(-1, 2), arrays["rc_bi_c"].reshape(-1)
        except (KeyError, ValueError) as exc:
            raise TwinStoreError(f"corrupt recency cache: {exc}") from exc
        for ids, cs in ((uni, uc), (bi, bc)):
            if not np.issubdtype(ids.dtype, np.integer) or not np.issubdtype(cs.dtype, np.floating):
                raise TwinStoreError("recency cache: wrong array types")
            if len(ids) != len(cs) or len(ids) > self.max_entries:
                raise TwinStoreError("recency cache out of bounds")
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= top):
                raise TwinStoreError("recency cache has ids out of range")
            if len(cs) and not (np.isfinite(cs).all() and float(cs.min()) >= 0.0 and float(cs.max()) < 1e9):
                raise TwinStoreError("recency cache counts out of range")
        self.scale = 1.0
        c1: dict[int, float] = {}
        for w, c in zip(uni.tolist(), uc.tolist(), strict=True):
            c1[w] = c1.get(w, 0.0) + c
        self._load(c1, [(c, v, w) for (v, w), c in zip(bi.tolist(), bc.tolist(), strict=True)])
        self.n2 = sum(len(f) for f in self.c2.values())
