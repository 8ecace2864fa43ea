"""The agents as a built-in plugin: the ``[agents]`` and ``[llm]`` sections, the service, control methods
(``agents.ask``, ``agents.list``, ``agents.trace``, ``agents.feedback``) and ``village ask`` / ``village agents``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.agents.govsettings import GovernanceSettings
from node.agents.settings import AgentsSettings, LlmSettings
from node.control.rpc import NoParams, param
from node.plugin import Plugin, Service

if TYPE_CHECKING:
    from node.agents.service import AgentsService
    from node.cli_support import CliRegistry
    from node.control.rpc import Notify, Registry
    from node.node import Node
    from node.settings import Config


def _services(cfg: Config) -> Sequence[Service]:
    settings = cfg.section(AgentsSettings)
    if not settings.enabled:
        return []
    from node.agents.service import AgentsService

    return [
        AgentsService(settings, cfg.section(LlmSettings), cfg.data_dir, gov_settings=cfg.section(GovernanceSettings))
    ]


@dataclass(frozen=True, slots=True)
class AskParams:
    text: str = param(doc="The request, in plain words; 'then' separates sequential steps, ';' independent ones.")
    agent: str | None = param(
        None, doc="Send it to this agent instead of letting the King route it; AGENT@PEER asks another node's agent."
    )
    confirm: bool = param(False, doc="Confirm a public broadcast (or a message the privacy check flags).")


@dataclass(frozen=True, slots=True)
class TraceParams:
    id: str | None = param(None, doc="A request id from agents.ask; without it, the recent requests.")


@dataclass(frozen=True, slots=True)
class FeedbackParams:
    id: str = param(doc="A request id from agents.ask.")
    agent: str = param(doc="The agent that was right for it (a confirmation or a correction); learned online.")


def _rpc(node: Node, reg: Registry) -> None:
    from node.agents.errors import AgentError
    from node.agents.vote import add_rpc as add_vote_rpc
    from node.control.rpc import APP_ERROR, RpcError

    def service() -> AgentsService:
        s = node.service("agents")
        if s is None:  # agents.enabled = false: the service's modules (numpy, the LLM) are never imported
            raise RpcError(APP_ERROR, "the agents are disabled on this node ([agents] enabled = false)")
        from node.agents.service import AgentsService

        if not isinstance(s, AgentsService):
            raise RpcError(APP_ERROR, "the agents are disabled on this node ([agents] enabled = false)")
        return s

    async def ask(p: AskParams, notify: Notify) -> Any:
        try:
            return await service().ask(p.text, agent=p.agent, confirm=p.confirm)
        except AgentError as exc:
            raise RpcError(APP_ERROR, str(exc)) from exc

    async def agents_list(_: NoParams, notify: Notify) -> Any:
        return [a.to_json() for a in service().roster]

    async def trace(p: TraceParams, notify: Notify) -> Any:
        s = service()
        if p.id is None:
            assert s.traces is not None
            return s.traces.recent(20)
        got = await s.trace(p.id)
        if got is None:
            raise RpcError(APP_ERROR, f"no trace {p.id!r}")
        return got

    async def feedback(p: FeedbackParams, notify: Notify) -> Any:
        try:
            return await service().feedback(p.id, p.agent)
        except AgentError as exc:
            raise RpcError(APP_ERROR, str(exc)) from exc

    add_vote_rpc(node, reg, service)
    reg.add("agents.ask", AskParams, "Ask the agents: the King routes, plans and answers (with a trace id).", ask)
    reg.add("agents.list", NoParams, "The roster: each agent's mission, tools, LLM need and voting power.", agents_list)
    reg.add("agents.trace", TraceParams, "Every step, tool call and result of one request (or the recent ones).", trace)
    reg.add("agents.feedback", FeedbackParams, "Tell the King which agent was right for a request.", feedback)


def _lines(text: object) -> str:
    """Remote-controlled text (answers, requests and tool details from peers) made safe line by line."""
    from node.textsafe import safe_text

    return "\n".join(safe_text(line) for line in str(text).split("\n"))


def ask_human(d: Any) -> str:
    trace = f"\n(trace: village agents trace {_lines(d['id'])})" if d.get("id") else ""
    return f"{_lines(d['answer'])}{trace}"


def trace_human(d: Any) -> str:
    from node.textsafe import safe_text

    if isinstance(d, list):
        return "\n".join(f"{safe_text(r['id'])}  {safe_text(r['request'])}" for r in d) or "no requests yet"
    return "\n".join(
        f"{s['seq']:3} {safe_text(s['agent']):<14} {safe_text(s['kind']):<7} {safe_text(s['tool']):<18} "
        f"{safe_text(s['detail'][:200])}"
        for s in d["steps"]
    )


def _cli(cli: CliRegistry) -> None:
    from node.agents.vote import add_cli as add_vote_cli
    from node.cli_support import EXIT_OK, call, emit, table

    def cmd_ask(args: argparse.Namespace) -> int:
        # `ask` (node.twin.ask): the twin adds personal context, then the agents (or the matching tool) answer.
        out = call(args, "ask", text=" ".join(args.text), agent=args.agent, confirm=args.confirm)
        emit(args, out, ask_human)
        return EXIT_OK

    def cmd_list(args: argparse.Namespace) -> int:
        rows = call(args, "agents.list")
        emit(
            args,
            rows,
            lambda d: table(
                [
                    [a["name"], str(a["voting_power"]), "yes" if a["needs_llm"] else "", ", ".join(a["tools"])]
                    for a in d
                ],
                ["agent", "power", "llm", "tools"],
            ),
        )
        return EXIT_OK

    def cmd_trace(args: argparse.Namespace) -> int:
        out = call(args, "agents.trace", id=args.id)
        emit(args, out, trace_human)
        return EXIT_OK

    add_vote_cli(cli)
    p = cli.command(
        "ask", cmd_ask, "Ask your node: the twin adds your personal context, the agents (or a tool) answer."
    )
    p.add_argument("text", nargs="+", help="the request")
    p.add_argument("--agent", help="send it to this agent (AGENT@PEER: an agent on another node)")
    p.add_argument("--confirm", action="store_true", help="confirm a public broadcast (or a flagged message)")
    g = cli.group("agents", "The agents: roster and traces.")
    g.command("list", cmd_list, "List the agents: mission, tools, LLM, voting power.")
    t = g.command("trace", cmd_trace, "Show every step of a request (or list the recent requests).")
    t.add_argument("id", nargs="?", help="a request id printed by `village ask`")


PLUGIN = Plugin(
    name="agents", sections=(AgentsSettings, LlmSettings, GovernanceSettings), services=_services, cli=_cli, rpc=_rpc
)
