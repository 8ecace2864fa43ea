"""Nodes joining over a window (a real mesh does not boot all its nodes in one second), and the announce neighbour
sets the simulated nodes share."""

from __future__ import annotations

import pytest

from node.identity import Identity
from node.routing.mesh import MeshCore
from node.routing.settings import MeshSection
from node.sim import SimError, Simulation, line, random_geometric
from node.sim.engine import LINK_UP_SPREAD_S
from node.wire import WireLimits


def test_a_link_comes_up_only_once_both_ends_have_joined() -> None:
    window = 20.0
    sim = Simulation(random_geometric(30, seed=2), seed=2, join_window_s=window)
    joined = sim.join_at_s
    assert all(0.0 <= t < window for t in joined) and min(joined) < 5.0 and max(joined) > 15.0
    ups = 0
    t = 0.0
    while t < window + LINK_UP_SPREAD_S + 0.5:
        t += 0.25
        sim.run_until(t)
        for edge in sim.edges:
            both = max(joined[edge.a], joined[edge.b])
            if sim.link_is_up(edge.a, edge.b):
                assert t >= both  # never before both ends joined
                ups += 1
            else:
                assert t < both + LINK_UP_SPREAD_S  # and within the usual spread after
        for i, core in enumerate(sim.cores):
            if t < joined[i]:
                assert not core.links  # a node that has not joined holds no link
    assert ups > 0 and all(sim.link_is_up(e.a, e.b) for e in sim.edges)


@pytest.mark.parametrize("window", [-1.0, float("nan"), float("inf"), float("-inf")])
def test_a_negative_or_non_finite_join_window_is_refused(window: float) -> None:
    # NaN once passed `< 0` and put NaN join times in the event heap: no link ever came up.
    with pytest.raises(SimError, match="join_window_s"):
        Simulation(line(2), seed=1, join_window_s=window)


@pytest.mark.parametrize("spread", [-0.5, float("nan"), float("inf")])
def test_a_negative_or_non_finite_link_up_spread_is_refused(spread: float) -> None:
    with pytest.raises(SimError, match="link_up_spread_s"):
        Simulation(line(2), seed=1, link_up_spread_s=spread)


def test_nodes_hearing_one_announce_share_its_neighbour_set() -> None:
    sim = Simulation(line(3), seed=4)
    sim.run_until(20.0)
    middle = sim.peer_ids[1]
    left, right = sim.cores[0].paths.neighbours_of(middle), sim.cores[2].paths.neighbours_of(middle)
    assert left == {sim.peer_ids[0], sim.peer_ids[2]}
    assert left is right  # one set, not one per node (the simulator's memo)


def test_a_core_on_its_own_builds_plain_frozensets() -> None:
    import nacl.signing

    core = MeshCore(
        identity=Identity(nacl.signing.SigningKey(b"\x01" * 32), b"\x02" * 32),
        settings=MeshSection(),
        limits=WireLimits(),
        nickname="solo",
        wall_offset_ms=0.0,
    )
    assert core.neighbour_set is frozenset
