"""The personal tier: an online interpolated modified Kneser-Ney trigram model over the user's own text.

Counts change one n-gram at a time (:meth:`PersonalKN.add`), and everything the estimate needs is kept
incrementally: per-context totals and the number of followers seen once, twice and three or more times, the
continuation counts of the lower orders, and each order's count-of-counts (for the discounts). Only the
trigram counts are the state: :meth:`to_arrays` writes them, :meth:`from_arrays` rebuilds the rest from them.

Ids are ints shared with :class:`~node.twin.model.TwinLM` (the prior's ids, then the user's own new words), at
most :data:`MAX_ID`. A trigram context ``(u, v)`` is keyed by one int, :func:`ctx_key` (``u << 32 | v``): no tuple
is built or hashed per token (session 7, twingate4: the per-message loop with int keys and every lower order's
update inlined costs ~15-25 % less than with tuple keys).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from node.twin import kn
from node.twin.errors import TwinStoreError

ORDER = 3
CANDIDATES_PER_CONTEXT = 12
DISCOUNT_EVERY = 200  # tokens learned between re-estimates of the discounts
# The counts in memory are bounded: past MAX_TRIGRAMS trigram types the rarest go until PRUNE_TO of the bound remain
# — exactly that many, the commonest, ties kept for those listed last (contexts seen last; dropping every trigram
# under a count step at once, as the saved file's count ladder did until session 7, could leave almost nothing:
# most of real text's trigram types are seen once; the file now keeps the commonest too, store.encode_bounded).
# Memory: ~540-740 bytes per trigram type in Python dicts (~1.1 KB if each had a context of its own), so <= ~35 MiB
# at the bound; a prune works in place (the kept counts are not copied); a heavy user's months of typing.
MAX_TRIGRAMS = 50_000
PRUNE_TO = 0.75
_Stats = list[int]  # [total, n1, n2, n3+]
ID_BITS = 32
MAX_ID = (1 << (ID_BITS - 1)) - 1  # ids are int32 on disk
_LOW = (1 << ID_BITS) - 1
MAX_COUNT = 2**31 - 1  # counts are int32 on disk; a saved or pruned count is clamped to this


def ctx_key(u: int, v: int) -> int:
    """The int key of the trigram context ``(u, v)`` in :attr:`PersonalKN.f3` and ``s3``."""
    return (u << ID_BITS) | v


def ctx_of(key: int) -> tuple[int, int]:
    """The context ``(u, v)`` of a :func:`ctx_key`."""
    return key >> ID_BITS, key & _LOW


def _bump(stats: _Stats, old: int) -> None:
    """A follower's count went from ``old`` to ``old + 1``: update the context's total and N1/N2/N3+."""
    stats[0] += 1
    if old == 1:
        stats[1] -= 1
    elif old == 2:
        stats[2] -= 1
    new = old + 1
    if new == 1:
        stats[1] += 1
    elif new == 2:
        stats[2] += 1
    elif new == 3:
        stats[3] += 1


class PersonalKN:
    def __init__(self, bos: int, *, max_trigrams: int = MAX_TRIGRAMS) -> None:
        if max_trigrams < 1:
            raise ValueError("max_trigrams must be at least 1")
        self.bos = bos
        self.max_trigrams = max_trigrams
        self.f3: dict[int, dict[int, int]] = {}  # ctx_key(u, v) -> {w: count}
        self.s3: dict[int, _Stats] = {}
        self.f2: dict[int, dict[int, int]] = {}
        self.s2: dict[int, _Stats] = {}
        self.f1: dict[int, int] = {}
        self.s1: _Stats = [0, 0, 0, 0]
        self.coc = {k: [0, 0, 0, 0, 0] for k in (1, 2, 3)}  # count-of-counts n1..n4 per order
        self.d: dict[int, tuple[float, float, float]] = {k: kn.DEFAULT_DISCOUNTS for k in (1, 2, 3)}
        self.trigrams = 0
        self.tokens = 0
        self._top1: list[int] = []
        self._top1_stale = True
        self._since_discounts = 0

    def _coc(self, k: int, old: int) -> None:
        c = self.coc[k]
        if 1 <= old <= 4:
            c[old] -= 1
        if old + 1 <= 4:
            c[old + 1] += 1

    def add(self, u: int, v: int, w: int) -> None:
        """One more occurrence of the trigram (u, v, w)."""
        self.tokens += 1
        key = ctx_key(u, v)
        fol = self.f3.get(key)
        if fol is None:
            fol = self.f3[key] = {}
            self.s3[key] = [0, 0, 0, 0]
        old = fol.get(w, 0)
        fol[w] = old + 1
        _bump(self.s3[key], old)
        self._coc(3, old)
        if old:
            return
        self.trigrams += 1
        # A new trigram type: (v, w) gained a distinct left context.
        fol2 = self.f2.get(v)
        if fol2 is None:
            fol2 = self.f2[v] = {}
            self.s2[v] = [0, 0, 0, 0]
        old2 = fol2.get(w, 0)
        fol2[w] = old2 + 1
        _bump(self.s2[v], old2)
        self._coc(2, old2)
        if old2:
            return
        self._new_bigram_type(w)

    def add_message(self, ids: Sequence[int]) -> None:
        """Every trigram of one message (after two BOS), then :meth:`tick`: the same state as calling
        :meth:`add` per token, with the per-token work of every order inlined (this runs on every message the
        user sends, so its Python-level cost is most of the always-on statistics' CPU; a context's key slides
        by one shift; tests/twin/test_fast_stats.py checks it against the per-token path)."""
        f3, s3, f2, s2, f1, s1 = self.f3, self.s3, self.f2, self.s2, self.f1, self.s1
        coc3, coc2, coc1 = self.coc[3], self.coc[2], self.coc[1]
        v = self.bos
        key = ctx_key(v, v)
        new3 = 0
        top1_stale = False
        for w in ids:
            fol = f3.get(key)
            if fol is None:  # a new context: its first follower (_bump and _coc(3, 0), inlined)
                f3[key] = {w: 1}
                s3[key] = [1, 1, 0, 0]
                old = 0
            else:
                st = s3[key]
                old = fol.get(w, 0)
                fol[w] = old + 1
                st[0] += 1
                if old == 0:
                    st[1] += 1
                elif old == 1:
                    st[1] -= 1
                    st[2] += 1
                elif old == 2:
                    st[2] -= 1
                    st[3] += 1
            if old == 0:
                coc3[1] += 1
                new3 += 1
                # a new trigram type: (v, w) gained a distinct left context (_add_bigram_type, inlined)
                fol2 = f2.get(v)
                if fol2 is None:
                    f2[v] = {w: 1}
                    s2[v] = [1, 1, 0, 0]
                    old2 = 0
                else:
                    st2 = s2[v]
                    old2 = fol2.get(w, 0)
                    fol2[w] = old2 + 1
                    st2[0] += 1
                    if old2 == 0:
                        st2[1] += 1
                    elif old2 == 1:
                        st2[1] -= 1
                        st2[2] += 1
                    elif old2 == 2:
                        st2[2] -= 1
                        st2[3] += 1
                if old2 == 0:
                    coc2[1] += 1
                    # a new bigram type: w gained a distinct left context (_new_bigram_type, inlined)
                    old1 = f1.get(w, 0)
                    f1[w] = old1 + 1
                    s1[0] += 1
                    if old1 == 0:
                        s1[1] += 1
                    elif old1 == 1:
                        s1[1] -= 1
                        s1[2] += 1
                    elif old1 == 2:
                        s1[2] -= 1
                        s1[3] += 1
                    if old1 <= 4:
                        if old1:
                            coc1[old1] -= 1
                        if old1 < 4:
                            coc1[old1 + 1] += 1
                    top1_stale = True
                elif old2 <= 4:
                    coc2[old2] -= 1
                    if old2 < 4:
                        coc2[old2 + 1] += 1
            elif old <= 4:
                coc3[old] -= 1
                if old < 4:
                    coc3[old + 1] += 1
            v = w
            key = ((key & _LOW) << ID_BITS) | w
        self.trigrams += new3
        if top1_stale:
            self._top1_stale = True
        self.tokens += len(ids)
        self.tick(len(ids))

    def _new_bigram_type(self, w: int) -> None:
        """A bigram type seen for the first time: one more continuation of ``w`` at the unigram order."""
        old1 = self.f1.get(w, 0)
        self.f1[w] = old1 + 1
        _bump(self.s1, old1)
        self._coc(1, old1)
        self._top1_stale = True

    def tick(self, learned: int) -> None:
        """``learned`` tokens were added: re-estimate the discounts every DISCOUNT_EVERY tokens."""
        self._since_discounts += learned
        if self.trigrams > self.max_trigrams:
            self.prune(int(self.max_trigrams * PRUNE_TO))
        if self._since_discounts >= DISCOUNT_EVERY:
            self.refresh_discounts()

    def prune(self, keep: int) -> None:
        """Drop the rarest trigrams (:func:`rarest_dropped`) so that at most ``keep`` remain, in place: each goes
        from its context's dict and takes back the continuation counts it gave the lower orders, then the stats,
        count-of-counts and discounts are recounted from what is kept. The same counts as :meth:`from_arrays` of
        the kept trigrams (what a saved state pruned the same way loads to), without building that model beside
        this one (the kept dicts keep their online order)."""
        f3, s3, f2, s2, f1 = self.f3, self.s3, self.f2, self.s2, self.f1
        counts = np.fromiter((min(c, MAX_COUNT) for fol in f3.values() for c in fol.values()), dtype=np.int64)
        if len(counts) <= keep:
            return
        drop = (~rarest_dropped(counts, keep)).tolist()
        del counts
        i = 0
        emptied = []
        for key, fol in f3.items():
            n = len(fol)
            if True in drop[i : i + n]:
                v = key & _LOW
                for w in [w for w, gone in zip(fol, drop[i : i + n], strict=True) if gone]:
                    del fol[w]
                    self.trigrams -= 1
                    fol2 = f2[v]
                    if fol2[w] > 1:  # (v, w) keeps another left context
                        fol2[w] -= 1
                        continue
                    del fol2[w]
                    if not fol2:
                        del f2[v], s2[v]
                    if f1[w] > 1:
                        f1[w] -= 1
                    else:
                        del f1[w]
                if not fol:
                    emptied.append(key)
            i += n
        for key in emptied:
            del f3[key], s3[key]
        self._restat()
        for k in (1, 2, 3):  # (the discounts' refresh schedule is not reset, as before)
            c = self.coc[k]
            self.d[k] = kn.discounts(c[1], c[2], c[3], c[4])
        self._top1_stale = True

    def _restat(self) -> None:
        """Every context's [total, n1, n2, n3+] and each order's count-of-counts, recounted from the counts."""
        coc = {k: [0, 0, 0, 0, 0] for k in (1, 2, 3)}
        s3, s2 = self.s3, self.s2
        for key, fol in self.f3.items():
            s3[key] = _stats_of(fol.values(), coc[3])
        for v, fol2 in self.f2.items():
            s2[v] = _stats_of(fol2.values(), coc[2])
        self.s1 = _stats_of(self.f1.values(), coc[1])
        self.coc = coc

    def refresh_discounts(self) -> None:
        self._since_discounts = 0
        for k in (1, 2, 3):
            c = self.coc[k]
            self.d[k] = kn.discounts(c[1], c[2], c[3], c[4])

    def context_count(self, u: int, v: int) -> tuple[int, int]:
        """How often the user's text had the trigram context (u, v), and the bigram context v (types)."""
        s3 = self.s3.get(ctx_key(u, v))
        s2 = self.s2.get(v)
        return (s3[0] if s3 else 0, s2[0] if s2 else 0)

    def probs(self, u: int, v: int, cand: Iterable[int], vocab_size: int) -> list[float]:
        s1 = self.s1
        uniform = 1.0 / vocab_size
        d1, d2, d3 = self.d[1], self.d[2], self.d[3]
        if s1[0]:
            g1 = (d1[0] * s1[1] + d1[1] * s1[2] + d1[2] * s1[3]) / s1[0]
            inv1 = 1.0 / s1[0]
        fol2 = self.f2.get(v)
        if fol2 is not None:
            s2 = self.s2[v]
            g2 = (d2[0] * s2[1] + d2[1] * s2[2] + d2[2] * s2[3]) / s2[0]
            inv2 = 1.0 / s2[0]
        key = ctx_key(u, v)
        fol3 = self.f3.get(key)
        if fol3 is not None:
            s3 = self.s3[key]
            g3 = (d3[0] * s3[1] + d3[1] * s3[2] + d3[2] * s3[3]) / s3[0]
            inv3 = 1.0 / s3[0]
        out = []
        f1 = self.f1
        for w in cand:
            if s1[0]:
                c = f1.get(w, 0)
                p = (c - kn.discount_for(c, d1)) * inv1 + g1 * uniform if c else g1 * uniform
            else:
                p = uniform
            if fol2 is not None:
                c = fol2.get(w, 0)
                p = (c - kn.discount_for(c, d2)) * inv2 + g2 * p if c else g2 * p
            if fol3 is not None:
                c = fol3.get(w, 0)
                p = (c - kn.discount_for(c, d3)) * inv3 + g3 * p if c else g3 * p
            out.append(p)
        return out

    def candidates(self, u: int, v: int) -> list[int]:
        out: list[int] = []
        fol3 = self.f3.get(ctx_key(u, v))
        if fol3:
            out.extend(heapq.nlargest(CANDIDATES_PER_CONTEXT, fol3, key=fol3.__getitem__))
        fol2 = self.f2.get(v)
        if fol2:
            out.extend(heapq.nlargest(CANDIDATES_PER_CONTEXT, fol2, key=fol2.__getitem__))
        if self._top1_stale:
            self._top1 = heapq.nlargest(CANDIDATES_PER_CONTEXT, self.f1, key=self.f1.__getitem__)
            self._top1_stale = False
        out.extend(self._top1)
        return out

    # ------------------------------------------------------------ state
    def to_arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        cap = MAX_COUNT
        rows = [
            (key >> ID_BITS, key & _LOW, w, c if c < cap else cap)
            for key, fol in self.f3.items()
            for w, c in fol.items()
        ]
        a = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        return {"tri": a[:, :3].astype(np.int32), "tri_counts": a[:, 3].astype(np.int32)}

    @classmethod
    def from_arrays(cls, bos: int, tri: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]) -> PersonalKN:
        """The model whose trigram counts are ``counts``: the same state as replaying each trigram ``count``
        times through :meth:`add`, built in one pass over the n-grams (the counts are set, not replayed, so a
        huge count costs nothing). Raises TwinStoreError on a shape mismatch or a trigram listed twice."""
        if tri.ndim != 2 or tri.shape[1:] != (ORDER,) or counts.shape != (len(tri),):
            raise TwinStoreError("trigram arrays do not match")
        if not (np.issubdtype(tri.dtype, np.integer) and np.issubdtype(counts.dtype, np.integer)):
            raise TwinStoreError("trigrams and their counts must be integers")
        if len(tri) and (int(tri.min()) < 0 or int(tri.max()) > MAX_ID):
            raise TwinStoreError("trigram ids out of range")
        m = cls(bos)
        for (u, v, w), c in zip(tri.tolist(), counts.tolist(), strict=True):
            fol = m.f3.setdefault(ctx_key(u, v), {})
            if w in fol or c < 1:
                raise TwinStoreError("a trigram is listed twice or has a count below 1")
            fol[w] = c
            m.tokens += c
        m.trigrams = len(tri)
        for key, fol in m.f3.items():
            fol2 = m.f2.setdefault(key & _LOW, {})
            for w in fol:  # each trigram type gives (v, w) one more distinct left context
                fol2[w] = fol2.get(w, 0) + 1
        for fol2 in m.f2.values():
            for w in fol2:  # each bigram type gives w one more distinct left context
                m.f1[w] = m.f1.get(w, 0) + 1
        m._restat()
        m.refresh_discounts()
        return m


def rarest_dropped(counts: np.ndarray[Any, Any], keep: int) -> np.ndarray[Any, Any]:
    """Which trigrams stay when at most ``keep`` may: exactly the ``keep`` most frequent (all when there are no
    more), ties kept for the later listed (:meth:`PersonalKN.to_arrays` lists them by context, in the order the
    contexts were first seen)."""
    n = len(counts)
    mask: np.ndarray[Any, Any] = np.zeros(n, dtype=bool)
    if n <= keep:
        mask[:] = True
        return mask
    newest_first = np.argsort(-counts[::-1].astype(np.int64), kind="stable")[:keep]
    mask[n - 1 - newest_first] = True
    return mask


def _stats_of(counts: Iterable[int], coc: list[int]) -> _Stats:
    """[total, n1, n2, n3+] of a context's follower counts; adds them to the order's count-of-counts."""
    stats = [0, 0, 0, 0]
    for c in counts:
        stats[0] += c
        stats[min(c, 3)] += 1
        if c <= 4:
            coc[c] += 1
    return stats
