"""The roster file: the 23 agents, least-privilege tools, no veto; errors name the agent and the key."""

from __future__ import annotations

import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from node.agents.errors import RosterError
from node.agents.roster import ROSTER_NAMES, load_roster, parse_roster
from node.agents.tools import KNOWN_TOOLS
from node.agents.workers import ALL_HANDLERS as HANDLERS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def shipped() -> dict[str, Any]:
    return tomllib.loads(resources.files("node.agents").joinpath("roster.toml").read_text())


def test_shipped_roster_has_the_23_agents_each_with_a_handler() -> None:
    roster = load_roster()
    assert roster.names == list(ROSTER_NAMES)
    assert set(HANDLERS) == set(ROSTER_NAMES)
    assert len({a.mission for a in roster}) == 23 and len({a.tools for a in roster if a.tools}) >= 18
    assert roster.get("King").voting_power == 1  # no override
    assert not roster.get("Sage").needs_llm and roster.get("Polyglot").needs_llm


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.update(tools=["mesh.send", "root.shell"]), "agent 'Sage'.tools: unknown tool 'root.shell'"),
        (lambda a: a.update(voting_power=0), "agent 'Sage'.voting_power"),
        (lambda a: a.update(needs_llm="yes"), "agent 'Sage'.needs_llm"),
        (lambda a: a.update(mission="short"), "agent 'Sage'.mission"),
        (lambda a: a.update(colour="red"), "agent 'Sage': unknown key(s) colour"),
        (lambda a: a.update(voting_power=100), "no agent may hold a veto"),
    ],
)
def test_invalid_roster_names_agent_and_key(mutate: Any, message: str) -> None:
    data = shipped()
    sage = next(a for a in data["agent"] if a["name"] == "Sage")
    mutate(sage)
    with pytest.raises(RosterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_roster(data)


def test_missing_agent_is_named(tmp_path: Path) -> None:
    data = shipped()
    data["agent"] = [a for a in data["agent"] if a["name"] != "Medic"]
    with pytest.raises(RosterError, match="lacks Medic"):
        parse_roster(data)
    bad = tmp_path / "r.toml"
    bad.write_text("[[agent]\n")
    with pytest.raises(RosterError, match="cannot read"):
        load_roster(bad)


def test_every_listed_tool_is_known() -> None:
    for a in load_roster():
        assert set(a.tools) <= set(KNOWN_TOOLS)


def test_labelled_requests_cover_every_agent_with_a_held_out_split() -> None:
    import agents as bench_agents

    train, test = bench_agents.load_requests()
    assert len(train) + len(test) >= 300
    assert {a for a, _ in test} == set(ROSTER_NAMES) == {a for a, _ in train}
    assert not {t for _, t in train} & {t for _, t in test}


def test_governance_bench_runs() -> None:
    import agents as bench_agents

    lines = bench_agents.governance(400)
    assert lines[0].startswith("governance.votes_verified_per_s:")
    assert lines[1].startswith("governance.gossip_votes_per_s:")
    assert "4361 bytes with 67 signers" in lines[2]


def test_new_held_out_set_covers_every_agent() -> None:
    import agents as bench_agents

    held = bench_agents.load_labelled(bench_agents.HELDOUT)
    assert len(held) >= 150
    assert {a for a, _ in held} == set(ROSTER_NAMES)
    assert len({t for _, t in held}) == len(held)
