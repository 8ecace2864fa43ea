"""peers.wait: a peer known through a relay is reachable, but not a direct neighbour until a link binds to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.control.methods import build_registry
from node.control.rpc import RpcError
from node.node import Node
from tests.routing.harness import start_mesh


async def _call(node: Node, method: str, **params: Any) -> Any:
    reg = build_registry(node)
    m = reg.lookup(method)

    async def notify(name: str, data: Any) -> None:
        pass

    return await m.handler(reg.bind_params(m, params), notify)


async def test_direct_waits_for_a_bound_link(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 3)
    mesh.connect(0, 1)
    mesh.connect(1, 2)
    await mesh.wait_until_known(0, 2)  # n2 is known to n0 through n1
    info = await _call(mesh.nodes[0], "peers.wait", peer="n2", timeout_s=5.0)
    assert info["nickname"] == "n2" and info["address"] is None
    with pytest.raises(RpcError, match="did not become a direct neighbour"):
        await _call(mesh.nodes[0], "peers.wait", peer="n2", timeout_s=5.0, direct=True)
    mesh.connect(0, 2)
    info = await _call(mesh.nodes[0], "peers.wait", peer="n2", timeout_s=5.0, direct=True)
    assert info["nickname"] == "n2" and info["address"] is not None
