"""The King and the agents on real in-process nodes (memory links), a real knowledge base and MiniLM routing.

The language model is off here (its tests are in test_llm.py): every agent below works without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from node.agents.errors import ToolDenied
from node.agents.king import plan
from node.agents.service import AgentsService
from node.agents.settings import AgentsSettings, LlmSettings
from node.agents.tools import ScopedTools, Tools
from node.agents.trace import Trace
from node.rag.plugin import rag_service
from node.transports.memory import MemoryNetwork
from tools.inprocess import start_node


def test_plan_splits_sequential_and_independent_steps() -> None:
    assert plan("can I reach bob then tell bob hello") == [["can I reach bob"], ["tell bob hello"]]
    assert plan("battery level; routing table") == [["battery level", "routing table"]]
    assert plan("just one thing") == [["just one thing"]]


async def test_scoped_tools_enforce_least_privilege_and_trace() -> None:
    async def send(args: Any) -> Any:
        return {"id": "x"}

    async def query(args: Any) -> Any:
        return []

    trace = Trace("r1", "req", 0)
    sage = ScopedTools(Tools({"mesh.send": send, "rag.query": query}), "Sage", ("rag.query",), trace)
    assert await sage.call("rag.query", {"query": "q"}) == []
    with pytest.raises(ToolDenied):
        await sage.call("mesh.send", {"peer": "bob", "text": "hi"})
    assert [(s.kind, s.tool) for s in trace.steps] == [
        ("call", "rag.query"),
        ("result", "rag.query"),
        ("denied", "mesh.send"),
    ]


@pytest.mark.timeout(300)
async def test_agents_do_real_work_on_a_node(tmp_path: Path) -> None:
    with trio.fail_after(280):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=1, queue_frames=4096)
            await nursery.start(net.run)
            svc = AgentsService(AgentsSettings(), LlmSettings(backend="off"), tmp_path / "alice")
            alice = await start_node(nursery, net, tmp_path, "alice", 1, services=[svc])
            bob = await start_node(nursery, net, tmp_path, "bob", 2)
            net.connect(alice.transports[0], bob.transports[0])  # type: ignore[arg-type]
            await alice.wait_until(lambda: any(p["nickname"] == "bob" and p["reachable"] for p in alice.peers_view()))
            rag = rag_service(alice)
            assert rag is not None
            await rag.add_text(
                "file:///docs/water-report.txt",
                "Water report 2026. Nitrate levels in the north well were 38 mg/l, under the 50 mg/l limit.",
                title="Water report",
            )
            await rag.add_text(
                "file:///docs/first-aid.txt",
                "First aid for a burn: cool the burn under cool running water for twenty minutes, cover it loosely.",
                title="First aid guide",
            )
            await rag.add_text("file:///docs/diary.txt", "My diary: today I felt tired.", title="diary")

            # Navigator: reachability from the real path table
            r = await svc.ask("can I reach bob")
            assert r["steps"][0]["agent"] == "Navigator"
            assert "bob is reachable" in r["answer"]

            # Sage: answers from the knowledge base and cites the document
            r = await svc.ask("what does the water report say about nitrates")
            assert r["steps"][0]["agent"] == "Sage"
            assert r["steps"][0]["sources"][0]["source"] == "file:///docs/water-report.txt"
            assert "38 mg/l" in r["answer"]

            # Medic: only from sources, and says so when there is none
            r = await svc.ask("what do I do for a burn")
            assert r["steps"][0]["agent"] == "Medic"
            assert r["steps"][0]["sources"][0]["source"] == "file:///docs/first-aid.txt"
            r = await svc.ask("treatment for a snake bite", agent="Medic")
            assert not r["steps"][0]["ok"] and "no first-aid source" in r["answer"]

            # Coordinator: the message really reaches bob
            inbox = bob.subscribe_inbox()
            r = await svc.ask("send a message to bob saying the seeds arrived")
            assert r["steps"][0]["agent"] == "Coordinator"
            msg = await inbox.receive()
            assert msg.text == "the seeds arrived" and msg.private

            # Legal: an unshared document must not leave the device
            r = await svc.ask("am I allowed to send my diary to the village")
            assert r["steps"][0]["agent"] == "Legal"
            assert not r["steps"][0]["ok"] and "not shared" in r["answer"]

            # A two-step plan, independent steps run together
            r = await svc.ask("is bob reachable; how much battery is left")
            assert [s["agent"] for s in r["steps"]] == ["Navigator", "Sustainer"]

            # Shield reads the hostile-traffic counters
            r = await svc.ask("is someone attacking my node with junk packets")
            assert r["steps"][0]["agent"] == "Shield"
            assert "hostile" in r["answer"].lower()

            # Gardener compacts the knowledge base and the agent stores
            r = await svc.ask("compact the databases", agent="Gardener")
            data = r["steps"][0]["data"]
            assert data["rag"]["vectors_reindexed"] == 0 and data["rag"]["db_bytes_after"] > 0
            assert data["agents"]["traces_kept"] >= 8

            # Auditor reads what the agents did (the trace store is the audit log of agent actions)
            r = await svc.ask("show me the audit log", agent="Auditor")
            tools = {row["tool"] for row in r["steps"][0]["data"]}
            assert {"mesh.send", "rag.query", "mesh.routes"} <= tools

            # Every step is traced
            t = await svc.trace(r["id"])
            assert t is not None
            kinds = [s["kind"] for s in t["steps"]]
            assert kinds[0] == "plan" and "call" in kinds and kinds[-1] == "answer"

            # Feedback learned online changes the route
            text = "who keeps the list of things people want to swap"
            before = await svc.ask(text)
            first = before["steps"][0]["agent"]
            target = "Merchant" if first != "Merchant" else "Curator"
            await svc.feedback(before["id"], target)
            after = await svc.ask(text)
            assert after["steps"][0]["agent"] == target
            nursery.cancel_scope.cancel()
