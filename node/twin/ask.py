"""``ask``: the node's entry point for a request in plain words (``village ask``, MCP ``ask``, ``POST /v1/ask``).

Flow (the seed's client → twin → tools/agents):

1. **Personal context** — only for the device's owner (:attr:`Access.personal`: the control socket, a local MCP
   client holding every scope, a gateway key holding ``twin:owner``): the twin's frequent contacts resolve the
   recipient of a private send (:mod:`node.twin.personal_context`). Nothing personal is added for anyone else,
   and the context is reported back (``personal_context``) only to the owner.
2. **The agents**, when the ``agents`` service runs: the King routes, plans and answers. A caller without every
   scope (a gateway key) gets agents whose tools are narrowed to its scopes (:class:`RemoteTools`): no unshared
   document without ``rag:private``, no message without ``messages:send``, nothing that reads the user's traces or
   audit log or changes the node's stores.
3. Otherwise **the matching tool directly**, chosen by a keyword map (:func:`pick_tool`; the twin's next-action
   head predicts what the user will do next, not what a sentence means, so it is not used for this): a private
   send, peers and routes, node status, or a search of the *local* knowledge base (with the recent topic for an
   underspecified question, owner only). Tools are called through the node's MCP tool registry with the caller's
   own scopes (scope checks, allow/deny, rate limit, audit); without the MCP service, only the owner is served,
   through the same control methods the CLI uses.

The twin learns from an ask only when it arrived on the control socket (the user's own call): the observer in
:mod:`node.twin.rpc`, never here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.agents.errors import AgentError, ToolDenied, ToolUnavailable
from node.agents.roles import parse_delivery, policy_check
from node.errors import NodeError
from node.mcp.registry import ALL_SCOPES, Caller
from node.twin.errors import AskError
from node.twin.personal_context import expand_query, personalize

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("village.twin")

MAX_ASK_CHARS = 4000
PERSONAL_SCOPE = "twin:personal"  # the owner's: personal context applied to (and reported in) an ask
OWNER = Caller("local", "owner", ALL_SCOPES)

_PEERS = re.compile(r"\b(reach|reachable|peers?|routes?|neighbou?rs?|who is (?:around|online))\b", re.I)
_STATUS = re.compile(r"\b(status|uptime|my node|this node)\b", re.I)


@dataclass(frozen=True, slots=True)
class Access:
    """Who asks: the caller (transport, client, scopes) as the tool registry sees it."""

    caller: Caller

    @property
    def personal(self) -> bool:
        return self.caller.has_scope(PERSONAL_SCOPE)

    @property
    def restricted(self) -> bool:
        """A caller without every scope (a gateway key): its agents' tools are narrowed to its scopes."""
        return "*" not in self.caller.scopes


# The agents' tool names (node.agents.tools.KNOWN_TOOLS) a restricted caller may reach, and the registry scope each
# needs (None: none beyond the ask itself). Everything else is the owner's only.
REMOTE_TOOL_SCOPES: dict[str, str | None] = {
    "mesh.status": "node:read",
    "mesh.peers": "peers:read",
    "mesh.routes": "peers:read",
    "mesh.send": "messages:send",
    "mesh.broadcast": "messages:send",
    "mesh.message_status": "messages:status",
    "rag.query": "rag:read",
    "rag.documents": "rag:read",
    "rag.stats": "rag:read",
    "agents.list": None,
    "power.battery": None,
    "power.plan": None,
    "policy.check": None,
    "gov.status": None,
    "gov.evidence": None,
    "llm.complete": None,
}


class RemoteTools:
    """The agents' tools as a restricted caller may use them (wraps the agents' own ``ToolRunner``: each call still
    goes through the registry as the agent, within its roster's tools, and is narrowed here to the caller's scopes)."""

    def __init__(self, inner: Any, caller: Caller, node: Node) -> None:
        self.inner = inner
        self.caller = caller
        self.node = node

    async def call_as(self, agent: str, allowed: frozenset[str], tool: str, args: Mapping[str, Any]) -> Any:
        if tool not in allowed:
            raise ToolDenied(f"{agent} may not call {tool}")
        if tool not in REMOTE_TOOL_SCOPES:
            raise ToolDenied(f"{tool} is for the node's owner only")
        scope = REMOTE_TOOL_SCOPES[tool]
        if scope is not None and not self.caller.has_scope(scope):
            raise ToolDenied(f"{tool} needs the {scope!r} scope, which this caller was not granted")
        private = self.caller.has_scope("rag:private")
        # Through the registry like every agent call (audited, rate-limited), as "<Agent>@<the caller's client id>"
        # (e.g. "Sage@key:3f2a"): the audit shows who the agent worked for; a state change is first written to the
        # gateway key's audit (PostgreSQL), and does not run if that row cannot be written.
        safe = {**args, "shared_only": True} if tool == "rag.query" and not private else dict(args)
        who = f"{agent}@{self.caller.client_id}"
        try:
            if self.caller.pre_audit is not None:
                result = await self.inner.call_as(who, allowed, tool, safe, pre_audit=self.caller.pre_audit)
            else:
                result = await self.inner.call_as(who, allowed, tool, safe)
        except (ToolDenied, ToolUnavailable):
            raise
        except AgentError as exc:
            # The tool's own error may name this node's paths or installed modules: the client gets a generic text,
            # the owner's log says why.
            log.warning("%s: %s failed: %s", who, tool, exc)
            raise AgentError(f"{tool} failed on this node") from None
        if tool == "rag.documents" and not private and isinstance(result, list):
            return [d for d in result if isinstance(d, Mapping) and d.get("shared")]
        return result


async def ask(
    node: Node, text: str, *, access: Access, agent: str | None = None, confirm: bool = False
) -> dict[str, Any]:
    text = text.strip()
    if not text or len(text) > MAX_ASK_CHARS:
        raise AskError(f"a request is 1 to {MAX_ASK_CHARS} characters")
    from node.agents.remote import split_target

    try:
        remote_peer = split_target(agent)[1] if agent is not None else None
    except AgentError as exc:
        raise AskError(str(exc)) from exc
    # A request to another node's agent (AGENT@PEER) goes as the owner typed it: personalize() could add a frequent
    # contact's peer ID or a resolved pronoun, and nothing personal leaves the device.
    context = await _context(node) if access.personal and remote_peer is None else {}
    handed = personalize(text, context, node.peers_view()) if context else None
    request = handed.text if handed is not None else text
    applied: dict[str, Any] = {}
    if handed is not None and handed.recipient is not None:
        applied["recipient"] = handed.recipient

    from node.agents.service import AgentsService

    agents = node.service("agents")
    if isinstance(agents, AgentsService):
        if "recipient" in applied and agent is None:
            # The twin made it an explicit private send: the agent for that is the Coordinator (which still runs
            # the privacy check), not whichever the body's words are about.
            agent = "Coordinator"
        try:
            if agent is not None:  # an unknown name is refused here, before the King starts
                name = agents.roster.get(split_target(agent)[0]).name
                agent = name if remote_peer is None else f"{name}@{remote_peer}"
            out = await agents.ask(
                request,
                agent=agent,
                confirm=confirm,
                tools=(lambda inner: RemoteTools(inner, access.caller, node)) if access.restricted else None,
            )
        except AgentError as exc:
            raise AskError(str(exc)) from exc
        except ExceptionGroup as group:  # a step's own error (the King runs steps in a nursery)
            raise AskError(_first_error(group)) from group
        out = {**out, "via": "agents"}
    else:
        if agent is not None:
            raise AskError("the agents are disabled on this node ([agents] enabled = false): ask without an agent")
        out = await _direct(node, request, access, context, applied, confirm)
    if access.personal:
        out["personal_context"] = applied
    return out


def _first_error(group: ExceptionGroup[Exception]) -> str:
    """The message of the first NodeError in ``group``; anything else (a bug) is raised as it is."""
    match, rest = group.split(NodeError)
    if match is None or rest is not None:
        raise group
    leaf: BaseException = match
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return str(leaf) or type(leaf).__name__


async def _context(node: Node) -> dict[str, Any]:
    from node.twin.service import TwinService

    twin = node.service("twin")
    if not isinstance(twin, TwinService):
        return {}
    return await twin.context()


def pick_tool(request: str) -> str:
    """The keyword map of the direct path: ``send``, ``broadcast``, ``peers``, ``status`` or ``search``."""
    parsed = parse_delivery(request)
    if parsed is not None:
        return parsed[0]
    if _PEERS.search(request):
        return "peers"
    if _STATUS.search(request):
        return "status"
    return "search"


async def _direct(
    node: Node, request: str, access: Access, context: Mapping[str, Any], applied: dict[str, Any], confirm: bool
) -> dict[str, Any]:
    tools = await _ToolPort.of(node, access.caller)
    kind = pick_tool(request)
    data: Any
    if kind in ("send", "broadcast"):
        parsed = parse_delivery(request)
        assert parsed is not None
        _, peer, body = parsed
        verdict = policy_check(body)
        if kind == "broadcast" and not verdict["allowed"]:
            answer, ok, data = f"Not broadcast: {verdict['reason']}.", False, verdict
        elif not confirm and (kind == "broadcast" or not verdict["allowed"]):
            why = "a broadcast is public, for the whole village" if kind == "broadcast" else verdict["reason"]
            answer, ok, data = f"Not sent: {why}. Ask again with confirmation to send it.", False, verdict
        elif kind == "broadcast":
            data = await tools.call("messages_broadcast", {"text": body})
            answer, ok = f"Broadcast to the village: {body!r}.", True
        else:
            data = await tools.call("messages_send", {"peer": peer, "text": body})
            answer, ok = f"Sent to {peer}: {body!r} (message {data.get('id')}).", True
    elif kind == "peers":
        data = await tools.call("peers_list", {})
        peers = data.get("peers", [])
        up = [str(p.get("nickname") or p.get("peer_id")) for p in peers if p.get("reachable")]
        answer = f"{len(up)} of {len(peers)} known peers reachable: {', '.join(up) or 'none'}."
        ok = True
    elif kind == "status":
        data = await tools.call("node_status", {})
        answer, ok = f"Node {data.get('peer_id')} up {data.get('uptime_s', 0):.0f} s, {data.get('peers')} peers.", True
    else:
        query, topic = expand_query(request, context) if context else (request, None)
        if topic is not None:
            applied["topic"] = topic
        data = await tools.call("rag_query", {"text": query, "k": 3})
        hits = data.get("results", [])
        if hits:
            lines = [f"[{i + 1}] {h.get('snippet', '')} ({h.get('source', '')})" for i, h in enumerate(hits)]
            answer, ok = "From the knowledge base:\n" + "\n".join(lines), True
        else:
            answer, ok = "I found nothing about this in the knowledge base.", False
    return {
        "id": None,
        "answer": answer,
        "via": "tool",
        "steps": [{"step": request, "tool": kind, "ok": ok, "data": data}],
    }


_CONTROL = {  # registry tool -> (control method, key the registry wraps a list result in)
    "messages_send": ("messages.send", None),
    "messages_broadcast": ("messages.broadcast", None),
    "peers_list": ("peers.list", "peers"),
    "node_status": ("node.status", None),
    "rag_query": ("rag.query", None),
}


class _ToolPort:
    """The direct path's way to a tool: the MCP registry with the caller's scopes, or (no MCP service) the owner's
    control methods in-process."""

    def __init__(self, node: Node, caller: Caller, registry: Any) -> None:
        self.node, self.caller, self.registry = node, caller, registry

    @classmethod
    async def of(cls, node: Node, caller: Caller) -> _ToolPort:
        from node.mcp.plugin_service import running_service

        svc = await running_service(node)
        registry = svc.registry if svc is not None else None
        if registry is None and "*" not in caller.scopes:
            raise AskError("tools for remote callers go through the MCP registry, which is off on this node")
        return cls(node, caller, registry)

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        if self.registry is not None:
            outcome = await self.registry.call(tool, args, caller=self.caller)
            return dict(outcome.structured)
        method, wrap = _CONTROL[tool]
        from node.control.methods import build_registry

        reg = self.node.control_server.registry if self.node.control_server is not None else build_registry(self.node)
        m = reg.lookup(method)

        async def no_notify(_method: str, _params: Any) -> None:
            return None

        result = await m.handler(reg.bind_params(m, args), no_notify)
        return {wrap: result} if wrap else dict(result)
