"""Seeded topology generators: each returns a :class:`Topology` (nodes 0..n-1, undirected edges).

* :func:`line` — 0–1–2–…; the longest paths for a given n.
* :func:`ring` — a line closed into a loop (for "a loop never amplifies").
* :func:`grid` — a width × height lattice, 4-neighbour.
* :func:`random_geometric` — nodes placed uniformly in a unit square, linked when closer than a radio
  range (BLE-like: short range, every node in range of a handful of others). The range is chosen for a
  target mean degree; with ``ensure_connected`` stranded nodes are placed again until the graph is connected
  (the range grows only if that fails). Otherwise the components are reported in :attr:`Topology.components`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from node.sim.errors import SimError

RANGE_GROWTH = 1.05  # factor by which the radio range grows while the random graph is disconnected
RESAMPLE_ROUNDS = 50  # re-placements of stranded nodes before the range grows instead
MAX_RANGE_STEPS = 200  # 1.05**200 ≈ 17,000x: far past any range that could leave a unit square disconnected


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    n: int
    edges: tuple[tuple[int, int], ...]  # (i, j) with i < j, sorted, no duplicates
    positions: tuple[tuple[float, float], ...] | None = None  # unit-square coordinates (geometric graphs)
    radius: float | None = None  # radio range used by random_geometric, in unit-square lengths

    def __post_init__(self) -> None:
        if self.n < 1:
            raise SimError(f"a topology needs at least one node, got n={self.n}")
        for i, j in self.edges:
            if not 0 <= i < j < self.n:
                raise SimError(f"edge ({i}, {j}) is not (i, j) with 0 <= i < j < n={self.n}")

    def neighbours(self) -> list[list[int]]:
        adj: list[list[int]] = [[] for _ in range(self.n)]
        for i, j in self.edges:
            adj[i].append(j)
            adj[j].append(i)
        return adj

    @property
    def components(self) -> tuple[tuple[int, ...], ...]:
        """Connected components, each sorted, largest first (ties by lowest node)."""
        return _components(self.n, self.neighbours())

    @property
    def connected(self) -> bool:
        return len(self.components) == 1

    @property
    def mean_degree(self) -> float:
        return 2 * len(self.edges) / self.n

    def hop_distances(self, source: int) -> list[int | None]:
        """Breadth-first hop counts from ``source`` (None where unreachable)."""
        adj = self.neighbours()
        dist: list[int | None] = [None] * self.n
        dist[source] = 0
        frontier = [source]
        while frontier:
            nxt = []
            for u in frontier:
                du = dist[u]
                assert du is not None
                for v in adj[u]:
                    if dist[v] is None:
                        dist[v] = du + 1
                        nxt.append(v)
            frontier = nxt
        return dist


def _components(n: int, adj: list[list[int]]) -> tuple[tuple[int, ...], ...]:
    seen = [False] * n
    comps: list[tuple[int, ...]] = []
    for start in range(n):
        if seen[start]:
            continue
        seen[start] = True
        stack, comp = [start], [start]
        while stack:
            u = stack.pop()
            for v in adj[u]:
                if not seen[v]:
                    seen[v] = True
                    stack.append(v)
                    comp.append(v)
        comps.append(tuple(sorted(comp)))
    comps.sort(key=lambda c: (-len(c), c[0]))
    return tuple(comps)


def _edges(pairs: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b}))


def line(n: int) -> Topology:
    return Topology("line", n, _edges([(i, i + 1) for i in range(n - 1)]))


def ring(n: int) -> Topology:
    if n < 3:
        raise SimError(f"a ring needs at least 3 nodes, got n={n}")
    return Topology("ring", n, _edges([(i, (i + 1) % n) for i in range(n)]))


def grid(width: int, height: int) -> Topology:
    if width < 1 or height < 1:
        raise SimError(f"a grid needs width and height >= 1, got {width} x {height}")
    pairs = []
    for y in range(height):
        for x in range(width):
            i = y * width + x
            if x + 1 < width:
                pairs.append((i, i + 1))
            if y + 1 < height:
                pairs.append((i, i + width))
    positions = tuple((x / max(1, width - 1), y / max(1, height - 1)) for y in range(height) for x in range(width))
    return Topology(f"grid{width}x{height}", width * height, _edges(pairs), positions=positions)


def random_geometric(n: int, *, seed: int, mean_degree: float = 8.0, ensure_connected: bool = True) -> Topology:
    """``n`` nodes uniform in the unit square, linked within a radio range set for ``mean_degree`` (before
    border effects: π r² n = mean_degree).

    With ``ensure_connected``, nodes outside the largest component are placed again (uniformly, like a
    phone that wandered back into range) up to ``RESAMPLE_ROUNDS`` times, which keeps the range and so the
    degree as asked; if that is not enough the range grows in 5 % steps. The range used is
    :attr:`Topology.radius`. Without it, the components are in :attr:`Topology.components`."""
    if n < 1:
        raise SimError(f"random_geometric needs n >= 1, got {n}")
    if mean_degree <= 0:
        raise SimError(f"random_geometric needs mean_degree > 0, got {mean_degree}")
    rng = random.Random(seed)
    pos = [(rng.random(), rng.random()) for _ in range(n)]
    radius = math.sqrt(mean_degree / (math.pi * n))
    topo = Topology("rgg", n, _within(pos, radius), positions=tuple(pos), radius=radius)
    if not ensure_connected:
        return topo
    for _ in range(RESAMPLE_ROUNDS):
        comps = topo.components
        if len(comps) == 1:
            return topo
        for comp in comps[1:]:
            for i in comp:
                pos[i] = (rng.random(), rng.random())
        topo = Topology("rgg", n, _within(pos, radius), positions=tuple(pos), radius=radius)
    for _ in range(MAX_RANGE_STEPS):
        if topo.connected:
            return topo
        radius *= RANGE_GROWTH
        topo = Topology("rgg", n, _within(pos, radius), positions=tuple(pos), radius=radius)
    raise SimError(f"random_geometric(n={n}) stayed disconnected up to range {radius:.3f}")  # pragma: no cover


def _within(pos: list[tuple[float, float]], radius: float) -> tuple[tuple[int, int], ...]:
    """Pairs closer than ``radius``, found through a grid of radius-sized cells (O(n) for sparse graphs)."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(pos):
        cells.setdefault((int(x / radius), int(y / radius)), []).append(i)
    r2 = radius * radius
    pairs: list[tuple[int, int]] = []
    for (cx, cy), members in cells.items():
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                others = cells.get((cx + dx, cy + dy))
                if others is None:
                    continue
                for i in members:
                    xi, yi = pos[i]
                    for j in others:
                        if j > i and (pos[j][0] - xi) ** 2 + (pos[j][1] - yi) ** 2 < r2:
                            pairs.append((i, j))
    return _edges(pairs)
