"""A seeded, deterministic discrete-event simulator of many mesh cores in one process.

    topo = random_geometric(1000, seed=1)
    sim = Simulation(topo, LinkModel(loss=0.1), MeshSection(), seed=1)
    sim.run_until(60.0)                 # warm up: announces spread
    sim.send_private(3, 517, "hello")
    sim.broadcast(8, "hi all")
    sim.run_until(180.0)
    print(sim.report())

See :mod:`node.sim.engine` (the event loop), :mod:`node.sim.links` (loss, latency, bandwidth, MTU),
:mod:`node.sim.topology` (line, ring, grid, random geometric), :mod:`node.sim.scenario` (churn,
partitions) and :mod:`node.sim.metrics` (what a report contains). ``bench/mesh_sim.py`` runs the scenarios
the routing issue asks for.
"""

from node.sim.engine import Simulation, VerifyCache
from node.sim.errors import SimError
from node.sim.links import LinkModel, LinkStats
from node.sim.metrics import BroadcastRecord, SimReport, UnicastRecord
from node.sim.scenario import Churn, Partition, cut_between, random_churn
from node.sim.topology import Topology, grid, line, random_geometric, ring

__all__ = [
    "BroadcastRecord",
    "Churn",
    "LinkModel",
    "LinkStats",
    "Partition",
    "SimError",
    "SimReport",
    "Simulation",
    "Topology",
    "UnicastRecord",
    "VerifyCache",
    "cut_between",
    "grid",
    "line",
    "random_churn",
    "random_geometric",
    "ring",
]
