"""Fusion on known values."""

from __future__ import annotations

import math

import pytest

from node.rag.fusion import FusionSettings, convex, fuse, normalise, rrf, top


def test_rrf_known_values() -> None:
    bm25 = [(1, 9.0), (2, 5.0), (3, 1.0)]
    dense = [(3, 0.9), (1, 0.8)]
    got = rrf({"bm25": bm25, "dense": dense}, k=60)
    assert got[1] == pytest.approx(1 / 61 + 1 / 62)
    assert got[2] == pytest.approx(1 / 62)
    assert got[3] == pytest.approx(1 / 63 + 1 / 61)
    assert [i for i, _ in top(got, 3)] == [1, 3, 2]
    weighted = rrf({"bm25": bm25, "dense": dense}, k=60, weights={"bm25": 0.5, "dense": 1.5})
    assert weighted[3] == pytest.approx(0.5 / 63 + 1.5 / 61)


def test_normalisations() -> None:
    assert normalise([(1, 4.0), (2, 2.0), (3, 0.0)], "minmax") == {1: 1.0, 2: 0.5, 3: 0.0}
    z = normalise([(1, 3.0), (2, 1.0)], "z")  # mean 2, population sd 1
    assert z == {1: 1.0, 2: -1.0}
    assert normalise([(1, 5.0)], "z") == {1: 0.0}


def test_convex_known_values_and_missing_scores_take_the_list_floor() -> None:
    bm25 = [(1, 3.0), (2, 1.0)]  # z: 1 -> 1, 2 -> -1
    dense = [(2, 0.9), (3, 0.5), (4, 0.1)]  # z: mean .5, sd sqrt(.32/3)
    sd = math.sqrt(((0.4**2) * 2) / 3)
    got = convex({"bm25": bm25, "dense": dense}, {"bm25": 0.4, "dense": 0.6}, norm="z")
    d2, d4 = 0.4 / sd, -0.4 / sd
    assert got[1] == pytest.approx(0.4 * 1 + 0.6 * d4)  # absent from dense: dense's lowest
    assert got[2] == pytest.approx(0.4 * -1 + 0.6 * d2)
    assert got[3] == pytest.approx(0.4 * -1 + 0.6 * 0.0)  # absent from bm25: bm25's lowest
    assert got[4] == pytest.approx(0.4 * -1 + 0.6 * d4)


def test_fuse_dispatches_and_passes_single_lists_through() -> None:
    bm25, dense = [(1, 2.0), (2, 1.0)], [(2, 0.7), (1, 0.6)]
    assert fuse(bm25, [], FusionSettings()) == {1: 2.0, 2: 1.0}
    assert fuse([], dense, FusionSettings()) == {2: 0.7, 1: 0.6}
    assert fuse(bm25, dense, FusionSettings(method="rrf")) == rrf({"bm25": bm25, "dense": dense})
    only_dense = fuse(bm25, dense, FusionSettings(method="convex", dense_weight=1.0))
    assert top(only_dense, 1)[0][0] == 2
