"""Every agent tool call goes through the node's one MCP registry, as ``agents:<agent>``: least privilege, the
``[mcp] allow/deny`` policy and the audit log are the registry's, on a real in-process node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from node.agents.errors import ToolDenied
from node.agents.service import AgentsService
from node.agents.settings import AgentsSettings, LlmSettings
from node.agents.toolbridge import RegistryTools
from node.agents.tools import ScopedTools
from node.agents.trace import Trace
from node.mcp.errors import UnknownTool
from node.mcp.registry import Caller
from node.mcp.service import McpService
from node.mcp.settings import McpSettings
from node.rag.plugin import rag_service
from node.transports.memory import MemoryNetwork
from tools.inprocess import start_node


def audit_rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.timeout(300)
async def test_agent_tool_calls_go_through_the_registry_and_are_audited(tmp_path: Path) -> None:
    with trio.fail_after(280):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=3, queue_frames=4096)
            await nursery.start(net.run)
            mcp = McpService(McpSettings(deny=("agents:mesh.broadcast",)))
            svc = AgentsService(AgentsSettings(), LlmSettings(backend="off"), tmp_path / "alice")
            alice = await start_node(nursery, net, tmp_path, "alice", 1, services=[mcp, svc])
            rag = rag_service(alice)
            assert rag is not None
            await rag.add_text("file:///docs/pump.txt", "The pump needs a new washer every spring.", title="Pump")
            audit = tmp_path / "alice" / "mcp" / "audit.jsonl"

            # An allowed call: Sage's rag.query is in the MCP audit log as agents:Sage, ok.
            r = await svc.ask("what does our pump note say about washers", agent="Sage")
            assert r["steps"][0]["ok"] and r["steps"][0]["sources"][0]["source"] == "file:///docs/pump.txt"
            rows = audit_rows(audit)
            assert {"transport": "agents", "client": "Sage", "tool": "rag.query", "ok": True} in [
                {k: row[k] for k in ("transport", "client", "tool", "ok")} for row in rows
            ]
            assert svc.registry is mcp.registry  # the one registry, not a private one

            # A call outside the agent's roster tools is refused by the registry, traced as denied and audited.
            trace = Trace("t1", "x", 0)
            assert svc.registry is not None
            sage = ScopedTools(RegistryTools(svc.registry), "Sage", svc.roster.get("Sage").tools, trace)
            with pytest.raises(ToolDenied):
                await sage.call("mesh.send", {"peer": "0" * 16, "text": "leak"})
            assert not alice.outgoing  # nothing was sent
            last = audit_rows(audit)[-1]
            got = (last["client"], last["tool"], last["ok"], last["error"])
            assert got == ("Sage", "mesh.send", False, "NotAllowed")
            assert [(s.kind, s.tool) for s in trace.steps] == [("denied", "mesh.send")]

            # The registry's [mcp] deny applies to the agents transport: Coordinator holds mesh.broadcast, but
            # this node's owner denied it to agents.
            r = await svc.ask("broadcast the well is fixed", agent="Coordinator", confirm=True)
            assert not r["steps"][0]["ok"]
            last = audit_rows(audit)[-1]
            assert (last["client"], last["tool"], last["error"]) == ("Coordinator", "mesh.broadcast", "NotAllowed")
            assert not alice.outgoing

            # MCP clients never see or reach the agents' internal tools.
            stdio = Caller("stdio", "cli")
            assert mcp.registry is not None
            assert not [t.name for t in mcp.registry.listed(stdio) if t.name.startswith("mesh.")]
            with pytest.raises(UnknownTool):
                await mcp.registry.call("mesh.send", {"peer": "0" * 16, "text": "x"}, caller=stdio)
            nursery.cancel_scope.cancel()
