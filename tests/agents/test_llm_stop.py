"""Review llm16 finding 1: an agent's ``stop`` strings reach the model through the King's ``llm.complete`` tool
(they were dropped, so Polyglot's and Tutor's stops were dead in production), and the tool refuses a bad ``stop``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from node.agents.errors import AgentError
from node.agents.king import King
from node.agents.llm import Completion, Message
from node.agents.roster import load_roster
from node.agents.router import Router
from node.agents.tools import Tools, llm_tool
from node.agents.trace import TraceStore


class Recorder:
    name = "rec"

    def __init__(self) -> None:
        self.stops: list[list[str]] = []

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, stop: Sequence[str] = ()
    ) -> Completion:
        self.stops.append(list(stop))
        return Completion("English: house\nGerman: Haus", 5, "stop", "rec")


def _king(llm: Recorder) -> King:
    roster = load_roster()
    router = Router(roster, lambda ts: np.ones((len(ts), 4), "float32"))
    return King(roster, router, Tools({"llm.complete": llm_tool(llm)}), llm=llm, traces=TraceStore(None))


async def test_polyglot_stop_reaches_the_model_through_the_king() -> None:
    llm = Recorder()
    await _king(llm).ask("translate house into german", agent="Polyglot")
    assert llm.stops and ["\n\n"] in llm.stops, llm.stops


@pytest.mark.parametrize(
    "stop",
    [
        "\n",  # not a list
        ["a", "b", "c", "d", "e"],  # too many
        ["x" * 33],  # too long
        [""],  # empty
        [1],  # not a string
        {"a": 1},
    ],
)
async def test_llm_tool_refuses_a_bad_stop(stop: Any) -> None:
    llm = Recorder()
    with pytest.raises(AgentError, match="stop must be"):
        await llm_tool(llm)({"prompt": "hi", "stop": stop})
    assert llm.stops == []


async def test_llm_tool_passes_a_good_stop() -> None:
    llm = Recorder()
    await llm_tool(llm)({"prompt": "hi", "stop": ["\n", "x" * 32, "a", "b"]})
    assert llm.stops == [["\n", "x" * 32, "a", "b"]]
