"""Hostile node kinds in the simulator (node.sim.adversary): each does what it says, and honest unicast between the
other nodes of a small lossy grid still gets through."""

from __future__ import annotations

from collections import Counter
from functools import partial
from itertools import pairwise

from node.routing.settings import MeshSection
from node.sim import LinkModel, Simulation, grid, random_geometric
from node.sim.adversary import KINDS, attach
from node.wire import MessageType, decode_announce_untrusted


def send(sim: Simulation, src: int, dst: int) -> None:
    sim.send_private(src, dst, f"m{src}>{dst}")


def test_hostile_kinds_attack_and_honest_unicast_still_delivers() -> None:
    sim = Simulation(grid(4, 4), LinkModel(loss=0.1), MeshSection(), seed=3)
    hostile = [5, 6, 9, 10]  # the middle of the grid: honest traffic must cross or pass them
    kinds = attach(sim, hostile, seed=3, start_s=2.0)
    assert sorted(kinds.values()) == sorted(KINDS)
    seen_types: Counter[int] = Counter()
    for i in range(16):
        if i not in hostile:
            core = sim.cores[i]
            receive = core.receive_frame

            def counting(link_id: str, data: bytes, now: float, receive=receive) -> bool:  # type: ignore[no-untyped-def]
                seen_types[data[1]] += 1
                return bool(receive(link_id, data, now))

            core.receive_frame = counting  # type: ignore[method-assign]
    sim.run_until(40.0)
    honest = [i for i in range(16) if i not in hostile]
    pairs = [(0, 15), (15, 0), (3, 12), (12, 3), (1, 14), (7, 8), (4, 11), (2, 13)]
    assert all(a in honest and b in honest for a, b in pairs)
    for k, (a, b) in enumerate(pairs):
        sim.schedule(40.0 + k, partial(send, sim, a, b))
    sim.run_until(200.0)
    delivered = [u for u in sim.unicasts if u.delivered_s is not None]
    assert len(delivered) == len(pairs)
    # the attacks reached the honest nodes: handshakes to them and ciphertext from nobody, and floods
    assert seen_types[MessageType.NOISE_HANDSHAKE] > 0 and seen_types[MessageType.MESSAGE] > 0
    # the liar names honest nodes it has no link to as its neighbours
    liar = next(i for i, k in kinds.items() if k == "liar")
    ann = decode_announce_untrusted(sim.cores[liar].announce_packet(sim.now).payload)
    real = {sim.peer_ids[j] for j in sim.topology.neighbours()[liar]}
    assert set(ann.neighbours) - real  # lies


def test_liars_bend_no_source_route_and_honest_unicast_holds() -> None:
    """A third of a small lossy mesh names honest nodes it has no link to as neighbours: every route an honest node
    computes to a peer it heard still runs along links that exist (an edge needs both ends' announces; a peer never
    heard is only a last hop on its neighbours' word), and every message between honest nodes arrives."""
    topo = random_geometric(30, seed=4, mean_degree=5.0)
    sim = Simulation(topo, LinkModel(loss=0.1), MeshSection(), seed=4)
    liars = list(range(0, 30, 3))
    attach(sim, liars, seed=4, start_s=0.0, kinds_used=("liar",))
    sim.run_until(40.0)
    real = {frozenset((sim.peer_ids[i], sim.peer_ids[j])) for i, j in topo.edges}
    honest = [i for i in range(30) if i not in liars]
    routed = 0
    for i in honest:
        for dest, route in sim.cores[i].paths.routes(sim.now).items():
            if sim.cores[i].peers.get(dest) is None:
                continue  # never heard: a last hop on its neighbours' word (a liar among them may bend it)
            hops = (sim.peer_ids[i], *route.via, dest)
            assert all(frozenset(pair) in real for pair in pairwise(hops)), (i, route)
            routed += bool(route.via)
    assert routed > 50  # the topology is used, not only direct neighbours
    pairs = [(a, b) for a, b in zip(honest, reversed(honest), strict=False) if a != b]
    for k, (a, b) in enumerate(pairs):
        sim.schedule(40.0 + k, partial(send, sim, a, b))
    sim.run_until(40.0 + len(pairs) + 120.0)
    assert [u for u in sim.unicasts if u.delivered_s is None] == []
    assert len(sim.unicasts) == len(pairs)
