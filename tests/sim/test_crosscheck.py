"""The simulator against the real thing: a 6-node line with loss, once through :class:`node.sim.Simulation`
and once through real Nodes over MemoryNetwork under trio's autojump clock, must deliver the same set of
private messages (node 0 to every other node). Randomness differs between the two engines (trio's scheduling,
the fault injector's draws), so the test compares outcomes that retries make certain, not frame counts."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from node.sim import LinkModel, Simulation, line
from node.transports.memory import Faults
from tests.routing.harness import start_mesh

N = 6
SEED = 21
LOSS = 0.1
LATENCY_S, JITTER_S = 0.02, 0.01
WARMUP_S = 40.0  # two announce rounds: every node has heard every other one's relayed announce
RUN_S = 200.0  # private retries back off 5, 10, 20, 40, 80 s: the last one is sent by 155 s
TEXT = "across the line {j}"


def _sim_delivered() -> set[int]:
    model = LinkModel(loss=LOSS, latency_s=LATENCY_S, jitter_s=JITTER_S, bandwidth_bytes_per_s=None, mtu=65_535)
    sim = Simulation(line(N), model, seed=SEED)
    sim.run_until(WARMUP_S)
    records = [sim.send_private(0, j, TEXT.format(j=j)) for j in range(1, N)]
    sim.run_until(WARMUP_S + RUN_S)
    return {r.dst for r in records if r.delivered_s is not None}


async def _nodes_delivered(nursery: trio.Nursery, tmp_path: Path) -> set[int]:
    mesh = await start_mesh(nursery, tmp_path, N, seed=SEED)
    faults = Faults(drop=LOSS, latency_s=LATENCY_S, jitter_s=JITTER_S)
    for i in range(N - 1):
        mesh.connect(i, i + 1, faults)
    await trio.sleep(WARMUP_S)
    sender = mesh.nodes[0]
    assert sender.core is not None
    for j in range(1, N):  # as the simulator: a core that does not know the peer yet refuses the message
        if sender.core.peers.get(mesh.nodes[j].identity.peer_id) is not None:
            sender.send_private(mesh.nodes[j].identity.peer_id_hex, TEXT.format(j=j))
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
