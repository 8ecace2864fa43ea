"""Fusion of ranked lists (BM25 and dense, optionally graph) into one ranking. Pure functions.

Reciprocal-rank fusion (Cormack et al. 2009), with optional per-list weights ``w``::

    rrf(d) = Σ_lists  w_l / (k + rank_l(d))          rank starting at 1; k = 60; a list without d adds 0

Convex combination of normalised scores (Bruch et al. 2023 found it beats RRF when tuned)::

    s_l'(d) = (s_l(d) - μ_l) / σ_l                   "z" normalisation over the list's returned scores, or
    s_l'(d) = (s_l(d) - min_l) / (max_l - min_l)     "minmax"
    fused(d) = Σ_lists  w_l · s_l'(d)                 a list without d contributes its lowest normalised score

The weights are tuned on SciFact *training* claims (bench/scifact.py --tune), never on the test queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Ranked = Sequence[tuple[int, float]]  # (id, score) best first


@dataclass(frozen=True, slots=True)
class FusionSettings:
    method: str = "convex"  # "convex" or "rrf"
    rrf_k: float = 60.0
    dense_weight: float = 0.5  # convex: bm25 gets 1 - dense_weight
    norm: str = "z"  # "z" or "minmax"


def rrf(
    lists: Mapping[str, Ranked], *, k: float = 60.0, weights: Mapping[str, float] | None = None
) -> dict[int, float]:
    out: dict[int, float] = {}
    for name, ranked in lists.items():
        w = 1.0 if weights is None else weights.get(name, 0.0)
        for rank, (i, _) in enumerate(ranked, start=1):
            out[i] = out.get(i, 0.0) + w / (k + rank)
    return out


def normalise(ranked: Ranked, how: str) -> dict[int, float]:
    if not ranked:
        return {}
    scores = [s for _, s in ranked]
    if how == "minmax":
        lo, hi = min(scores), max(scores)
        span = hi - lo
        return {i: (s - lo) / span if span > 0 else 1.0 for i, s in ranked}
    if how == "z":
        mu = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mu) ** 2 for s in scores) / len(scores))
        return {i: (s - mu) / sd if sd > 0 else 0.0 for i, s in ranked}
    raise ValueError(f"unknown normalisation {how!r}")


def convex(lists: Mapping[str, Ranked], weights: Mapping[str, float], *, norm: str = "z") -> dict[int, float]:
    normed = {name: normalise(ranked, norm) for name, ranked in lists.items()}
    ids: set[int] = set()
    for n in normed.values():
        ids.update(n)
    out = dict.fromkeys(ids, 0.0)
    for name, n in normed.items():
        w = weights.get(name, 0.0)
        if not n or w == 0.0:
            continue
        floor = min(n.values())
        for i in ids:
            out[i] += w * n.get(i, floor)
    return out


def fuse(bm25: Ranked, dense: Ranked, settings: FusionSettings) -> dict[int, float]:
    """Fused scores of every id in either list (higher is better)."""
    lists = {"bm25": bm25, "dense": dense}
    if not dense:
        return {i: s for i, s in bm25}
    if not bm25:
        return {i: s for i, s in dense}
    if settings.method == "rrf":
        w = {"bm25": 2 * (1 - settings.dense_weight), "dense": 2 * settings.dense_weight}
        return rrf(lists, k=settings.rrf_k, weights=w)
    return convex(lists, {"bm25": 1 - settings.dense_weight, "dense": settings.dense_weight}, norm=settings.norm)


def top(scores: Mapping[int, float], n: int) -> list[tuple[int, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
