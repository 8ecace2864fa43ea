"""The entry point, the twin and the agents as tools of the one registry: ``ask``, ``twin_suggest``,
``twin_status``, ``agents_list``, ``agents_trace``.

Scopes (a local stdio/HTTP client holds every scope; a gateway key only what its gateway scopes map to, see
anchor/gateway/mcp_route.py):

================  =================  ==============================================================================
tool              scope              notes
================  =================  ==============================================================================
ask               ``agents:ask``     changes state (an agent may send a message): allow/deny, rate limit, audit.
                                     Personal context only with ``twin:personal`` (node.twin.ask); a caller
                                     without every scope gets agents narrowed to its scopes.
twin_suggest      ``twin:read``      the personal model's completions: the owner's only
twin_status       ``twin:read``      what the twin learned and why learning is paused
agents_list       ``agents:read``    the roster
agents_trace      ``agents:trace``   every step of a request (requests are the user's text): the owner's only
================  =================  ==============================================================================

The twin never learns from these calls: they are not the user's control-socket calls (node.twin.rpc).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from node.mcp import outputs as o
from node.mcp.node_tools import Invoke, NoArgs
from node.mcp.registry import Caller, Tool

if TYPE_CHECKING:
    from node.node import Node

SCOPE_ASK = "agents:ask"
SCOPE_AGENTS_READ = "agents:read"
SCOPE_AGENTS_TRACE = "agents:trace"
SCOPE_TWIN_READ = "twin:read"
SCOPE_TWIN_PERSONAL = "twin:personal"  # node.twin.ask.PERSONAL_SCOPE


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AskArgs(_Args):
    text: str = Field(min_length=1, max_length=4000, description="The request in plain words.")
    agent: str | None = Field(None, max_length=64, description="Send it to this agent instead of the King's choice.")
    confirm: bool = Field(False, description="Confirm a public broadcast (or a message the privacy check flags).")


class SuggestArgs(_Args):
    text: str = Field(max_length=4000, description="The text being typed; inside a word: completions of it.")
    k: int = Field(3, ge=1, le=10, description="How many suggestions.")


class TraceArgs(_Args):
    id: str | None = Field(None, max_length=64, description="A request id from ask; without it, recent requests.")


def ask_tools(invoke: Invoke, node: Node) -> list[Tool]:
    async def ask_handler(p: AskArgs, caller: Caller) -> Any:
        from node.twin.ask import Access, ask

        return await ask(node, p.text, access=Access(caller), agent=p.agent, confirm=p.confirm)

    async def suggest(p: SuggestArgs, caller: Caller) -> Any:
        return {"suggestions": await invoke("twin.suggest", {"text": p.text, "k": p.k})}

    async def status(p: NoArgs, caller: Caller) -> Any:
        return await invoke("twin.status", {})

    async def agents_list(p: NoArgs, caller: Caller) -> Any:
        return {"agents": await invoke("agents.list", {})}

    async def agents_trace(p: TraceArgs, caller: Caller) -> Any:
        got = await invoke("agents.trace", p.model_dump(exclude_none=True))
        return got if isinstance(got, dict) else {"recent": got}

    return [
        Tool(
            "ask",
            "Ask the node in plain words: the twin adds the owner's personal context (on the device only) and hands "
            "the request to the agents (the King routes and plans), or with the agents off to the matching tool. "
            "Returns the answer, the steps and a trace id.",
            AskArgs,
            SCOPE_ASK,
            True,
            ask_handler,
            output_model=o.AskOut,
        ),
        Tool(
            "twin_suggest",
            "Next-word suggestions / completions of the text being typed, from the owner's personal model.",
            SuggestArgs,
            SCOPE_TWIN_READ,
            False,
            suggest,
            output_model=o.SuggestOut,
        ),
        Tool(
            "twin_status",
            "The twin: what it learned, its sizes, and whether learning is paused (battery, heat, CPU budget).",
            NoArgs,
            SCOPE_TWIN_READ,
            False,
            status,
            output_model=o.TwinStatusOut,
        ),
        Tool(
            "agents_list",
            "The agents: each one's mission, tools, language-model need and voting power.",
            NoArgs,
            SCOPE_AGENTS_READ,
            False,
            agents_list,
            output_model=o.AgentsOut,
        ),
        Tool(
            "agents_trace",
            "Every step, tool call and result of one request (or the recent requests).",
            TraceArgs,
            SCOPE_AGENTS_TRACE,
            False,
            agents_trace,
            output_model=o.TraceOut,
        ),
    ]
