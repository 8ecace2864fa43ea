"""A gateway `ask`: what the agents change on the caller's behalf is pre-audited with the caller's (the API key's)
audit, as the key's own /mcp state changes are; reads are not."""

from __future__ import annotations

from typing import Any

import pytest

from node.agents.errors import AgentError
from node.agents.toolbridge import _tool
from node.errors import NodeError
from node.mcp.registry import Caller, Registry
from node.twin.ask import RemoteTools
from tests.mcp.helpers import mcp_settings


def _registry(ran: list[str]) -> Registry:
    reg = Registry(mcp_settings(), now=lambda: 0.0)

    def handler(name: str) -> Any:
        async def run(args: dict[str, Any]) -> Any:
            ran.append(name)
            return {"ok": True}

        return run

    reg.add(_tool("mesh.broadcast", handler("mesh.broadcast")))  # state-changing
    reg.add(_tool("mesh.status", handler("mesh.status")))  # a read
    return reg


async def test_an_agents_state_change_for_a_gateway_key_is_pre_audited_with_the_key() -> None:
    from node.agents.toolbridge import RegistryTools

    ran: list[str] = []
    rows: list[tuple[str, int]] = []

    async def pre_audit(tool: str, args_sha256: str, args_bytes: int) -> None:
        rows.append((tool, args_bytes))

    key = Caller("gateway", "key:k1", frozenset({"agents:ask", "messages:send", "node:read"}), pre_audit=pre_audit)
    tools = RemoteTools(RegistryTools(_registry(ran)), key, node=None)  # type: ignore[arg-type]
    allowed = frozenset({"mesh.broadcast", "mesh.status"})
    await tools.call_as("Coordinator", allowed, "mesh.broadcast", {"text": "hello"})
    await tools.call_as("Coordinator", allowed, "mesh.status", {})
    assert ran == ["mesh.broadcast", "mesh.status"]
    assert [t for t, _ in rows] == ["mesh.broadcast"]  # the state change, before it ran; not the read

    async def refusing(tool: str, args_sha256: str, args_bytes: int) -> None:
        raise NodeError("PostgreSQL is down")  # what the gateway's store raises (StoreUnavailable)

    down = Caller("gateway", "key:k1", key.scopes, pre_audit=refusing)
    with pytest.raises(AgentError, match="was not run: its audit record could not be written"):
        await RemoteTools(RegistryTools(_registry(ran)), down, node=None).call_as(  # type: ignore[arg-type]
            "Coordinator", allowed, "mesh.broadcast", {"text": "unaudited"}
        )
    assert ran.count("mesh.broadcast") == 1  # without its audit row the change does not run
