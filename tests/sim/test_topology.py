"""Topology generators: the right shapes, seeded, connected (or honest about their components)."""

from __future__ import annotations

import math

import pytest

from node.sim import SimError, Topology, grid, line, random_geometric, ring


def test_line_ring_and_grid_have_their_textbook_edges() -> None:
    assert line(4).edges == ((0, 1), (1, 2), (2, 3))
    assert ring(4).edges == ((0, 1), (0, 3), (1, 2), (2, 3))
    g = grid(3, 2)  # 0 1 2 / 3 4 5
    assert g.edges == ((0, 1), (0, 3), (1, 2), (1, 4), (2, 5), (3, 4), (4, 5))
    assert all(t.connected for t in (line(4), ring(4), g))
    assert line(5).hop_distances(0) == [0, 1, 2, 3, 4]
    assert g.hop_distances(0)[5] == 3


def test_random_geometric_is_seeded_and_connected_with_the_degree_asked() -> None:
    a = random_geometric(300, seed=7)
    assert a == random_geometric(300, seed=7)
    assert a.edges != random_geometric(300, seed=8).edges
    for seed in range(5):
        t = random_geometric(300, seed=seed, mean_degree=8.0)
        assert t.connected, seed
        assert t.radius == pytest.approx(math.sqrt(8.0 / (math.pi * 300)))  # stranded nodes moved, range kept
        assert 5.5 < t.mean_degree < 8.5  # border effects lower the degree a little
        assert t.positions is not None
        for i, j in t.edges:  # every edge is within range
            (xi, yi), (xj, yj) = t.positions[i], t.positions[j]
            assert t.radius is not None and math.hypot(xi - xj, yi - yj) < t.radius


def test_random_geometric_reports_components_when_not_asked_to_connect() -> None:
    sparse = random_geometric(200, seed=3, mean_degree=1.5, ensure_connected=False)
    comps = sparse.components
    assert not sparse.connected and len(comps) > 1
    assert sorted(i for c in comps for i in c) == list(range(200))
    assert [len(c) for c in comps] == sorted((len(c) for c in comps), reverse=True)
    dist = sparse.hop_distances(comps[0][0])
    assert all(dist[i] is not None for i in comps[0]) and all(dist[i] is None for i in comps[1])


def test_bad_topologies_are_refused() -> None:
    with pytest.raises(SimError, match="edge"):
        Topology("x", 2, ((1, 0),))
    with pytest.raises(SimError, match="ring"):
        ring(2)
