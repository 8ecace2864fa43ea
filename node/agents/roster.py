"""The roster as data: ``roster.toml`` (or a file named by config), validated at start.

Each agent: ``name``, ``mission``, ``tools`` (least privilege, from :data:`node.agents.tools.KNOWN_TOOLS`),
``needs_llm``, ``voting_power`` (1..100; the King has no override) and ``examples`` (requests the King's router
embeds next to the mission). Errors name the agent and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from node.agents.errors import RosterError
from node.agents.tools import KNOWN_TOOLS

ROSTER_NAMES = (
    "King",
    "Shield",
    "Sword",
    "Auditor",
    "Legal",
    "Magi",
    "Navigator",
    "Gardener",
    "Sustainer",
    "Coordinator",
    "Sage",
    "Oracle",
    "Curator",
    "Shaman",
    "Strategist",
    "Ensemble",
    "Horticulturist",
    "Maker",
    "Banker",
    "Merchant",
    "Medic",
    "Polyglot",
    "Tutor",
)
MAX_MISSION_CHARS = 600
MAX_EXAMPLES = 20
MAX_EXAMPLE_CHARS = 200
MAX_POWER = 100


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    mission: str
    tools: tuple[str, ...]
    needs_llm: bool
    voting_power: int
    examples: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mission": self.mission,
            "tools": list(self.tools),
            "needs_llm": self.needs_llm,
            "voting_power": self.voting_power,
        }


@dataclass(frozen=True, slots=True)
class Roster:
    agents: tuple[AgentSpec, ...]

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(self.agents)

    def __len__(self) -> int:
        return len(self.agents)

    def get(self, name: str) -> AgentSpec:
        for a in self.agents:
            if a.name.lower() == name.lower():
                return a
        raise RosterError(f"no agent named {name!r}")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.agents]


def _agent(i: int, raw: Mapping[str, Any]) -> AgentSpec:
    where = f"agent[{i}]"
    if not isinstance(raw, Mapping):
        raise RosterError(f"{where} must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise RosterError(f"{where}.name must be a non-empty string")
    where = f"agent {name!r}"
    unknown = set(raw) - {"name", "mission", "tools", "needs_llm", "voting_power", "examples"}
    if unknown:
        raise RosterError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    mission = raw.get("mission")
    if not isinstance(mission, str) or not 20 <= len(mission) <= MAX_MISSION_CHARS:
        raise RosterError(f"{where}.mission must be a string of 20 to {MAX_MISSION_CHARS} characters")
    tools = raw.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise RosterError(f"{where}.tools must be a list of tool names")
    for t in tools:
        if t not in KNOWN_TOOLS:
            raise RosterError(f"{where}.tools: unknown tool {t!r} (known: {', '.join(sorted(KNOWN_TOOLS))})")
    needs_llm = raw.get("needs_llm")
    if not isinstance(needs_llm, bool):
        raise RosterError(f"{where}.needs_llm must be true or false")
    power = raw.get("voting_power")
    if type(power) is not int or not 1 <= power <= MAX_POWER:
        raise RosterError(f"{where}.voting_power must be an integer from 1 to {MAX_POWER}")
    examples = raw.get("examples", [])
    if (
        not isinstance(examples, list)
        or len(examples) > MAX_EXAMPLES
        or not all(isinstance(e, str) and 0 < len(e) <= MAX_EXAMPLE_CHARS for e in examples)
    ):
        raise RosterError(f"{where}.examples must be up to {MAX_EXAMPLES} strings of 1 to {MAX_EXAMPLE_CHARS} chars")
    return AgentSpec(name, mission, tuple(tools), needs_llm, power, tuple(examples))


def parse_roster(data: Mapping[str, Any], *, required: tuple[str, ...] = ROSTER_NAMES) -> Roster:
    agents = data.get("agent")
    if not isinstance(agents, list) or not agents:
        raise RosterError("the roster needs [[agent]] tables")
    specs = tuple(_agent(i, a) for i, a in enumerate(agents))
    names = [s.name for s in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RosterError(f"agent names must be unique: {', '.join(sorted(dupes))} repeated")
    missing = [n for n in required if n not in names]
    if missing:
        raise RosterError(f"the roster lacks {', '.join(missing)}")
    power = {s.name: s.voting_power for s in specs}
    total = sum(power.values())
    top = max(power, key=lambda n: power[n])
    if 3 * power[top] > total:
        raise RosterError(
            f"agent {top!r}.voting_power {power[top]} is over 1/3 of the total {total}: no agent may hold a veto"
        )
    return Roster(specs)


def load_roster(path: Path | None = None) -> Roster:
    """The roster from ``path``, or the one shipped with the node."""
    try:
        if path is None:
            text = resources.files("node.agents").joinpath("roster.toml").read_text(encoding="utf-8")
            where = "the shipped roster.toml"
        else:
            text = path.read_text(encoding="utf-8")
            where = str(path)
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RosterError(f"cannot read the roster: {exc}") from exc
    try:
        return parse_roster(data)
    except RosterError as exc:
        raise RosterError(f"{where}: {exc}") from exc
