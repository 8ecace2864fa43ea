"""The simulator against the real thing: a 6-node line with loss, once through :class:`node.sim.Simulation`
and once through real Nodes over MemoryNetwork under trio's autojump clock, must deliver the same set of
private messages (node 0 to every other node). Randomness differs between the two engines (trio shuffles its
run queue; the fault injector draws in another order), so the test compares outcomes that retries make
certain, not frame counts: both sides send as ``village send`` does — a message to a peer not announced yet
waits for its announce — and get a retry budget that 10 % loss over five hops cannot exhaust in practice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio
import trio.testing

from node.routing.settings import MeshSection
from node.sim import LinkModel, Simulation, line
from node.transports.memory import Faults
from tests.routing.harness import start_mesh

N = 6
SEED = 21
LOSS = 0.1
LATENCY_S, JITTER_S = 0.02, 0.01
WARMUP_S = 30.0  # two announce rounds
RUN_S = 590.0  # within mesh.private_expiry_s (600 s) of the sends
ATTEMPTS = 10  # private_max_attempts: backed off 5, 10, 20, ... s, the tenth would be due after 2,555 s
TEXT = "across the line {j}"


def _sim_delivered() -> set[int]:
    model = LinkModel(loss=LOSS, latency_s=LATENCY_S, jitter_s=JITTER_S, bandwidth_bytes_per_s=None, mtu=65_535)
    settings = dataclasses.replace(MeshSection(), private_max_attempts=ATTEMPTS)
    sim = Simulation(line(N), model, settings, seed=SEED)
    waiting, records = set(range(1, N)), []
    t = WARMUP_S
    while t < WARMUP_S + RUN_S:  # hand each message to the core once it knows the peer (the core refuses before)
        sim.run_until(t)
        for j in sorted(waiting):
            if sim.cores[0].peers.get(sim.peer_ids[j]) is not None:
                records.append(sim.send_private(0, j, TEXT.format(j=j)))
                waiting.discard(j)
        t += 1.0
    sim.run_until(WARMUP_S + RUN_S)
    return {r.dst for r in records if r.delivered_s is not None}


async def _nodes_delivered(nursery: trio.Nursery, tmp_path: Path) -> set[int]:
    mesh = await start_mesh(nursery, tmp_path, N, seed=SEED, private_max_attempts=ATTEMPTS)
    faults = Faults(drop=LOSS, latency_s=LATENCY_S, jitter_s=JITTER_S)
    for i in range(N - 1):
        mesh.connect(i, i + 1, faults)
    await trio.sleep(WARMUP_S)
    for j in range(1, N):  # a Node queues a message to a peer not announced yet until its announce arrives
        mesh.nodes[0].send_private(mesh.nodes[j].identity.peer_id_hex, TEXT.format(j=j))
    await trio.sleep(RUN_S)
    got = set()
    for j in range(1, N):
        inbox = mesh.nodes[j].inbox
        assert inbox is not None
        if any(m.private and m.text == TEXT.format(j=j) for m in inbox.list(limit=100)):
            got.add(j)
    return got


async def test_simulator_and_real_nodes_deliver_the_same_private_messages(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    real = await _nodes_delivered(nursery, tmp_path)
    simulated = _sim_delivered()
    assert simulated == real
    assert real == set(range(1, N))  # multi-hop: every node of the line, five hops at the far end
