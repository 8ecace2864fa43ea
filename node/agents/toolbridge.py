"""The agents' tools as tools of the node's one MCP registry (``node/mcp/registry.py``).

:func:`register_agent_tools` adds each agent tool (``mesh.send``, ``rag.query``, ...: the roster's vocabulary,
:data:`node.agents.tools.KNOWN_TOOLS`) to the registry as a :class:`~node.mcp.registry.Tool` that only the
``agents`` transport can see or call (MCP clients over stdio, HTTP or the gateway never see them), with the scope
``agents:tools`` and the state-changing flag of :data:`STATE_CHANGING`. :class:`RegistryTools` calls them as
``Caller("agents", <agent>, tools=<the agent's roster tools>)``: the registry refuses a tool outside that set
(``NotAllowed``, audited like every call), applies ``[mcp] allow/deny`` to the ``agents`` transport (e.g.
``deny = ["agents:mesh.broadcast"]``) and rate-limits state-changing calls per agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from node.agents.errors import AgentError, ToolDenied, ToolUnavailable
from node.agents.tools import KNOWN_TOOLS, Tools
from node.mcp.errors import AuditUnavailable, NotAllowed, ToolError, ToolRateLimited, UnknownTool
from node.mcp.registry import Caller, PreAudit, Registry, Tool

AGENTS_TRANSPORT = "agents"
AGENT_SCOPE = "agents:tools"
# Tools that change the node's state (or others'): the registry's allow/deny and rate limits apply to them.
STATE_CHANGING = frozenset(
    {
        "mesh.send",
        "mesh.broadcast",
        "rag.add",
        "rag.feedback",
        "rag.rebuild_index",
        "store.compact",
        "gov.propose",
        "market.offer",
        "market.accept",
        "agents.remote",
    }
)
_VALUE = "value"  # every agent tool's structured result is {"value": <what the handler returned>}


class AgentToolArgs(BaseModel):
    """Agent tools take a JSON object; each handler validates its own keys (they are the node's code)."""

    model_config = ConfigDict(extra="allow")


def _tool(name: str, handler: Any) -> Tool:
    async def run(p: AgentToolArgs, caller: Caller) -> dict[str, Any]:
        return {_VALUE: await handler(p.model_dump())}

    return Tool(
        name,
        f"(agents only) {KNOWN_TOOLS[name]}",
        AgentToolArgs,
        AGENT_SCOPE,
        name in STATE_CHANGING,
        run,
        transports=frozenset({AGENTS_TRANSPORT}),
    )


def register_agent_tools(registry: Registry, tools: Tools) -> None:
    """Add every handler of ``tools`` to ``registry`` (once: names already there are left as they are)."""
    for name, handler in tools.handlers.items():
        if name not in registry.tools:
            registry.add(_tool(name, handler))


class RegistryTools:
    """The :class:`~node.agents.tools.ToolRunner` of a node: every agent tool call goes through the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def call_as(
        self,
        agent: str,
        allowed: frozenset[str],
        tool: str,
        args: Mapping[str, Any],
        *,
        pre_audit: PreAudit | None = None,
    ) -> Any:
        """``pre_audit``: the audit of whoever the agent acts for (a gateway key's PostgreSQL row, written before a
        state-changing call runs; node.twin.ask.RemoteTools passes it)."""
        caller = Caller(AGENTS_TRANSPORT, agent, frozenset({AGENT_SCOPE}), tools=allowed, pre_audit=pre_audit)
        try:
            out = await self.registry.call(tool, dict(args), caller=caller)
        except NotAllowed as exc:
            raise ToolDenied(str(exc)) from None
        except UnknownTool:
            raise ToolUnavailable(f"{tool} is not available on this node") from None
        except (AuditUnavailable, ToolRateLimited) as exc:  # the registry's own words (no path, no module): shown
            raise ToolUnavailable(str(exc)) from None
        except ToolError as exc:
            raise AgentError(str(exc)) from None
        return out.structured[_VALUE]
