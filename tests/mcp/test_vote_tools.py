"""The governance MCP tools: against a real daemon over stdio (local namespace: this node is the whole electorate,
so a proposal certifies at once; audited), and their scopes and state-changing flags in the registry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from node.mcp.errors import InvalidArguments, NotAllowed
from node.mcp.registry import Caller, Registry
from node.mcp.settings import McpSettings
from node.mcp.vote_tools import vote_tools
from tests.mcp.helpers import text_of
from tests.mcp.test_daemon import Daemon, daemon, structured

__all__ = ["daemon"]


async def test_vote_tools_against_a_real_daemon(daemon: Daemon) -> None:
    async with daemon.stdio() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"vote_propose", "vote_cast", "vote_status", "vote_evidence"} <= set(tools)
        assert tools["vote_status"].annotations is not None and tools["vote_status"].annotations.read_only_hint
        assert tools["vote_cast"].annotations is not None and not tools["vote_cast"].annotations.read_only_hint
        out = structured(
            await client.call_tool("vote_propose", {"kind": "policy", "key": "quiet.hours", "value": "22"})
        )
        assert out["certificate"]["value"] == "yes" and len(out["votes"]) == 2 * 23  # local: the node's agents vote
        st = structured(await client.call_tool("vote_status", {}))
        assert st["namespace"] == "local" and st["state"]["policy"] == {"quiet.hours": 22}
        assert structured(await client.call_tool("vote_evidence", {})) == {"evidence": []}
        bad = await client.call_tool("vote_cast", {"proposal": out["proposal"], "value": "yes"})
        assert bad.is_error and "no village governance" in text_of(bad)
        bad = await client.call_tool("vote_propose", {"kind": "veto", "key": "x"})
        assert bad.is_error
    audit = [json.loads(line) for line in (daemon.data_dir / "mcp" / "audit.jsonl").read_text().splitlines()]
    assert [a["tool"] for a in audit if a["tool"].startswith("vote_")] == [
        "vote_propose",
        "vote_status",
        "vote_evidence",
        "vote_cast",
        "vote_propose",
    ]


async def test_vote_tools_need_their_scopes() -> None:
    calls: list[str] = []

    state = {"epoch": 0, "config": {}, "policy": {}}
    answers = {  # what the vote.* control methods answer (shapes of node/agents/vote.py), minimal
        "vote.status": {"namespace": "local", "epoch": 0, "electorate": [], "proposals": [], "certificates": []}
        | {"state": state},
        "vote.cast": {"namespace": "village", "proposal": "ab" * 32, "vote": {}, "certificate": None, "state": state},
    }

    async def invoke(method: str, params: dict[str, Any]) -> Any:
        calls.append(method)
        return answers[method]

    reg = Registry(McpSettings(), now=lambda: 0.0)
    reg.extend(vote_tools(invoke))
    reader = Caller("gateway", "k1", frozenset({"vote:read"}))
    assert {t.name for t in reg.listed(reader)} == {"vote_status", "vote_evidence"}
    await reg.call("vote_status", {}, caller=reader)
    with pytest.raises(NotAllowed, match="vote:cast"):
        await reg.call("vote_cast", {"proposal": "ab" * 8, "value": "yes"}, caller=reader)
    with pytest.raises(NotAllowed, match="vote:propose"):
        await reg.call("vote_propose", {"kind": "policy", "key": "k"}, caller=reader)
    caster = Caller("gateway", "k2", frozenset({"vote:cast"}))
    for ref in ("ab" * 8, "ab" * 31, "AB" * 32):  # a prefix (grindable) or not lower-case hex: refused
        with pytest.raises(InvalidArguments):
            await reg.call("vote_cast", {"proposal": ref, "value": "yes"}, caller=caster)
    await reg.call("vote_cast", {"proposal": "ab" * 32, "value": "yes"}, caller=caster)
    assert calls == ["vote.status", "vote.cast"]
    assert {t.name for t in reg.tools.values() if t.changes_state} == {"vote_propose", "vote_cast"}
