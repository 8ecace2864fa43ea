"""Scheduled faults: nodes leaving and rejoining (churn) and links cut for a window (partitions).

Both are records handed to :meth:`node.sim.Simulation.add_churn` / :meth:`~node.sim.Simulation.add_partition`.
A node that is down keeps its state (a phone walking out of range, not a reboot): every link it has goes
down (``link_down`` at both ends) and comes back (``link_up`` at both ends) when it returns. A partition cuts
a set of edges at ``start_s`` and heals them at ``end_s``; an edge is up only while no partition cuts it and
both its ends are up.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from node.sim.errors import SimError
from node.sim.topology import Topology


@dataclass(frozen=True, slots=True)
class Churn:
    node: int
    down_s: float  # simulated time the node's links go down
    up_s: float | None  # simulated time they come back (None: never)

    def __post_init__(self) -> None:
        if self.up_s is not None and self.up_s <= self.down_s:
            raise SimError(f"Churn of node {self.node}: up_s={self.up_s} must be after down_s={self.down_s}")


@dataclass(frozen=True, slots=True)
class Partition:
    edges: frozenset[tuple[int, int]]  # (i, j) with i < j, as in Topology.edges
    start_s: float
    end_s: float | None  # None: never heals

    def __post_init__(self) -> None:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise SimError(f"Partition: end_s={self.end_s} must be after start_s={self.start_s}")


def cut_between(topology: Topology, group: Iterable[int], start_s: float, end_s: float | None) -> Partition:
    """A partition separating ``group`` from every other node: all edges with exactly one end in it."""
    inside = set(group)
    edges = frozenset((i, j) for i, j in topology.edges if (i in inside) != (j in inside))
    return Partition(edges, start_s, end_s)


def random_churn(
    topology: Topology,
    *,
    seed: int,
    fraction: float,
    start_s: float,
    end_s: float,
    down_for_s: tuple[float, float],
    protect: Iterable[int] = (),
) -> list[Churn]:
    """``fraction`` of the nodes (never those in ``protect``) each go down once at a uniform time in
    ``[start_s, end_s)`` for a uniform ``down_for_s`` duration."""
    if not 0.0 <= fraction <= 1.0:
        raise SimError(f"random_churn: fraction must be in [0, 1], got {fraction}")
    lo, hi = down_for_s
    if not 0 < lo <= hi:
        raise SimError(f"random_churn: down_for_s must be (lo, hi) with 0 < lo <= hi, got {down_for_s}")
    rng = random.Random(seed)
    kept = set(protect)
    candidates = [i for i in range(topology.n) if i not in kept]
    chosen = sorted(rng.sample(candidates, round(fraction * len(candidates))))
    out = []
    for node in chosen:
        down = rng.uniform(start_s, end_s)
        out.append(Churn(node, down, down + rng.uniform(lo, hi)))
    return out
