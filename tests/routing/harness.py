"""In-process meshes of real Nodes over memory links, for tests under trio's autojump clock."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import trio

from node.clock import Clock
from node.identity import Identity
from node.node import Node
from node.routing.settings import MeshSection
from node.settings import Config, NodeSection
from node.transports.memory import Faults, MemoryLink, MemoryNetwork, MemoryTransport

EPOCH_MS = 1_700_000_000_000.0  # every node's wall clock reads the same simulated time


@dataclass
class Mesh:
    net: MemoryNetwork
    nodes: list[Node]
    transports: list[MemoryTransport]

    def connect(
        self,
        i: int,
        j: int,
        faults: Faults | None = None,
        *,
        mtu: int = 65_535,
    ) -> tuple[MemoryLink, MemoryLink]:
        return self.net.connect(self.transports[i], self.transports[j], faults, mtu=mtu)

    async def wait_until_known(self, i: int, j: int) -> None:
        """Node i has a verified announce from node j."""
        target = self.nodes[j].identity.peer_id
        core = self.nodes[i].core
        assert core is not None
        await self.nodes[i].wait_until(lambda: core.peers.get(target) is not None)


async def start_mesh(
    nursery: trio.Nursery, tmp_path: Path, n: int, *, seed: int = 1, control: bool = False, **mesh: Any
) -> Mesh:
    net = MemoryNetwork(seed=seed, queue_frames=4096)
    await nursery.start(net.run)
    nodes, transports = [], []
    for i in range(n):
        transport = net.transport(f"n{i}")
        cfg = Config(
            data_dir=tmp_path / f"n{i}",
            node=NodeSection(nickname=f"n{i}"),
            mesh=dataclasses.replace(MeshSection(), **mesh),
        )
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        rng = random.Random(seed * 1000 + i)  # keys too: a seed reproduces a whole run
        ident = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
        node = Node(cfg, ident, transports=[transport], clock=Clock(epoch_offset_ms=EPOCH_MS), control=control, rng=rng)
        await nursery.start(node.run)
        nodes.append(node)
        transports.append(transport)
    return Mesh(net, nodes, transports)
