"""The tools agents may call, and the one door they go through.

:class:`ToolCaller` is all an agent sees: ``await tools.call(name, args)``. It is a :class:`ScopedTools`: one
agent's view, which records every call, result and refusal in the request's trace and hands the call to a
:class:`ToolRunner` *as that agent*. On a node the runner is :class:`node.agents.toolbridge.RegistryTools`: every
agent tool is a tool of the node's one MCP registry (``node/mcp/registry.py``), visible only over the ``agents``
transport, and each call is made as ``Caller("agents", <agent name>, tools=<its roster tools>)`` — so the registry
enforces least privilege, the ``[mcp] allow/deny`` policy and the rate limits, and audits every call (allowed or
refused). :class:`Tools` (a plain table of handlers, which also refuses tools outside the agent's list) is what the
node's tools are built as, and what unit tests run agents over.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from node.agents.errors import AgentError, ToolDenied, ToolUnavailable
from node.agents.llm import Completion, LanguageModel, Message

if TYPE_CHECKING:
    from node.agents.trace import Trace
    from node.node import Node
    from node.rag.service import RagService

log = logging.getLogger("village.agents")

# name -> what it does. The roster may only name these.
KNOWN_TOOLS: dict[str, str] = {
    "agents.list": "the roster: agents, missions, tools",
    "agents.dispatch": "ask other agents (the King routes)",
    "agents.trace": "read agent traces",
    "audit.read": "read the audit log (agent tool calls, allowed and denied)",
    "mesh.status": "node status and hostile-traffic counters",
    "mesh.peers": "known peers, reachability, fingerprints",
    "mesh.routes": "the path table",
    "mesh.send": "send a private message to a peer",
    "mesh.broadcast": "send a public message to the village",
    "mesh.message_status": "delivery state of a sent message",
    "rag.query": "search the knowledge base (hits with sources)",
    "rag.add": "add a text to the knowledge base",
    "rag.documents": "list documents and whether they are shared",
    "rag.feedback": "mark a result good or bad (source trust)",
    "rag.stats": "knowledge base statistics",
    "rag.rebuild_index": "compact the knowledge base and rebuild its index",
    "store.compact": "compact the agent and governance databases",
    "power.battery": "battery and power supply",
    "power.plan": "the radio power mode the governor picks",
    "policy.check": "would this content leave the device against the privacy policy",
    "gov.status": "governance: epoch, electorate, proposals, certificates",
    "gov.evidence": "equivocation evidence",
    "gov.propose": "propose a configuration or policy change",
    "llm.complete": "generate text with the language model",
    "sim.adversarial": "run the adversarial self-test",
    "ledger.read": "the per-peer ledger of this node's resources (storage, queued messages) against the budgets",
    "market.offers": "the signed resource-exchange offers kept on this node",
    "market.offer": "make and sign an offer exchanging two of this node's resources",
    "market.accept": "accept (counter-sign) an offer from another node",
    "metrics.series": "the node's own time series (queue depth, peers, routes, battery) and delivery outcomes",
    "agents.route": "the King's routing of a text: the best agents with their scores",
    "tools.available": "the tools agents can call on this node",
}

MAX_RESULT_CHARS = 16_000  # a tool result as kept in the trace


class ToolCaller(Protocol):
    async def call(self, tool: str, args: Mapping[str, Any]) -> Any: ...


class ToolRunner(Protocol):
    async def call_as(self, agent: str, allowed: frozenset[str], tool: str, args: Mapping[str, Any]) -> Any:
        """Run ``tool`` for ``agent``, which holds only ``allowed``; raises ToolDenied outside them."""
        ...


Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]


def _clip(value: Any) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "…"


class ScopedTools:
    """One agent's view of the tools: only those its roster entry lists; every call traced."""

    def __init__(self, inner: ToolRunner, agent: str, allowed: tuple[str, ...], trace: Trace | None) -> None:
        self.inner = inner
        self.agent = agent
        self.allowed = frozenset(allowed)
        self.trace = trace

    async def call(self, tool: str, args: Mapping[str, Any]) -> Any:
        # No check here: the runner (the registry on a node) decides, so the rule cannot be skipped by convention.
        # A refused call is traced as "denied" only (never as a "call": the Auditor lists calls made).
        try:
            result = await self.inner.call_as(self.agent, self.allowed, tool, args)
        except ToolDenied as exc:
            self._step("denied", tool, f"{exc}; args {_clip(dict(args))}")
            raise
        except AgentError as exc:
            self._step("call", tool, _clip(dict(args)))
            self._step("error", tool, str(exc))
            raise
        self._step("call", tool, _clip(dict(args)))
        self._step("result", tool, _clip(result))
        return result

    def _step(self, kind: str, tool: str, detail: str) -> None:
        if self.trace is not None:
            self.trace.step(self.agent, kind, tool=tool, detail=detail)


class ToolLlm:
    """The language model as an agent sees it: every generation is the ``llm.complete`` tool call, so it goes
    through the same door as every other tool (the roster must list it; the registry audits it)."""

    name = "tool"

    def __init__(self, tools: ToolCaller) -> None:
        self.tools = tools

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, stop: Sequence[str] = ()
    ) -> Completion:
        args: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
        if max_tokens is not None:
            args["max_tokens"] = max_tokens
        if stop:
            args["stop"] = list(stop)
        r = await self.tools.call("llm.complete", args)
        return Completion(str(r["text"]), int(r["tokens"]), str(r.get("finish_reason", "")), str(r.get("backend", "")))


MAX_STOPS = 4
MAX_STOP_CHARS = 32


def _stops(raw: Any) -> list[str]:
    """The ``stop`` argument of ``llm.complete``: absent, or a list of at most MAX_STOPS non-empty strings of at
    most MAX_STOP_CHARS characters each; anything else is refused."""
    if raw is None:
        return []
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_STOPS
        or not all(type(s) is str and 0 < len(s) <= MAX_STOP_CHARS for s in raw)
    ):
        raise AgentError(
            f"llm.complete: stop must be a list of at most {MAX_STOPS} non-empty strings "
            f"of at most {MAX_STOP_CHARS} characters"
        )
    return list(raw)


def llm_tool(llm: LanguageModel) -> Handler:
    """The ``llm.complete`` tool over a model: ``{"messages": [{role, content}...], "max_tokens"?, "stop"?}`` or
    ``{"prompt": text}``; ``stop`` is a list of at most 4 strings of at most 32 characters."""

    async def complete(args: Mapping[str, Any]) -> Any:
        raw = args.get("messages")
        if isinstance(raw, list) and raw:
            msgs = [Message(str(m.get("role", "")), str(m.get("content", ""))) for m in raw if isinstance(m, dict)]
        else:
            msgs = [Message("user", str(args.get("prompt", "")))]
        stop = _stops(args.get("stop"))
        limit = args.get("max_tokens")
        c = await llm.complete(msgs, max_tokens=limit if type(limit) is int and limit > 0 else None, stop=stop)
        return {"text": c.text, "tokens": c.tokens, "finish_reason": c.finish_reason, "backend": c.backend}

    return complete


class Tools:
    """A table of tool handlers (what :class:`NodeTools` and tests fill)."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self.handlers: dict[str, Handler] = dict(handlers or {})

    def add(self, name: str, handler: Handler) -> None:
        if name not in KNOWN_TOOLS:
            raise AgentError(f"unknown tool {name!r}")
        self.handlers[name] = handler

    async def call(self, tool: str, args: Mapping[str, Any]) -> Any:
        handler = self.handlers.get(tool)
        if handler is None:
            raise ToolUnavailable(f"{tool} is not available on this node")
        return await handler(args)

    async def call_as(self, agent: str, allowed: frozenset[str], tool: str, args: Mapping[str, Any]) -> Any:
        if tool not in allowed:
            raise ToolDenied(f"agent {agent} may not call {tool}")
        return await self.call(tool, args)


def _str(args: Mapping[str, Any], key: str, *, max_chars: int = 4000) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not v.strip() or len(v) > max_chars:
        raise AgentError(f"{key} must be a non-empty string of at most {max_chars} characters")
    return v


def node_tools(node: Node, *, battery_root: Path | None = None) -> Tools:
    """The tools a running node offers by itself (the agents service adds agents.*, gov.*, llm.*)."""
    from node.transports.ble import power

    t = Tools()

    async def status(_: Mapping[str, Any]) -> Any:
        return node.status()

    async def peers(_: Mapping[str, Any]) -> Any:
        return node.peers_view()

    async def routes(_: Mapping[str, Any]) -> Any:
        return node.routes_view()

    async def send(args: Mapping[str, Any]) -> Any:
        mid = node.send_private(_str(args, "peer", max_chars=64), _str(args, "text"))
        return {"id": mid, "to": node.outgoing[mid].to}

    async def broadcast(args: Mapping[str, Any]) -> Any:
        return {"id": node.broadcast(_str(args, "text"))}

    async def message_status(args: Mapping[str, Any]) -> Any:
        msg = node.outgoing.get(_str(args, "id", max_chars=64))
        if msg is None:
            raise AgentError("no such outgoing message")
        return msg.to_json()

    async def battery(_: Mapping[str, Any]) -> Any:
        root = battery_root or power.SYSFS_POWER_SUPPLY
        state = await trio.to_thread.run_sync(power.battery_from_sysfs, root)
        if state is None:
            return {"known": False}
        return {"known": True, "percent": state.percent, "external_power": state.external_power}

    async def plan(args: Mapping[str, Any]) -> Any:
        root = battery_root or power.SYSFS_POWER_SUPPLY
        state = await trio.to_thread.run_sync(power.battery_from_sysfs, root)
        configured = node.config.ble.power_mode
        p = power.plan_for(power.choose_mode(configured, state), node.config.ble.max_central_links)
        return {"configured": configured, "mode": str(p.mode), "plan": power.describe(p)}

    for name, fn in (
        ("mesh.status", status),
        ("mesh.peers", peers),
        ("mesh.routes", routes),
        ("mesh.send", send),
        ("mesh.broadcast", broadcast),
        ("mesh.message_status", message_status),
        ("power.battery", battery),
        ("power.plan", plan),
    ):
        t.add(name, fn)

    from node.rag.errors import RagError
    from node.rag.plugin import SERVICE_NAME as RAG_SERVICE
    from node.rag.plugin import load_rag_service

    if node.service(RAG_SERVICE) is not None:  # the knowledge base runs: its modules load at the first rag.* call

        async def rag() -> RagService:
            try:
                service = await load_rag_service(node)
            except RagError as exc:  # a broken install: an agent's answer (maybe to a peer) says no more than this
                log.warning("agents: %s", exc)
                raise ToolUnavailable("the knowledge base could not be loaded on this node") from None
            if service is None:
                raise ToolUnavailable("the knowledge base is not running")
            return service

        async def query(args: Mapping[str, Any]) -> Any:
            k = args.get("k", 5)
            shared_only = args.get("shared_only", False) is True  # remote callers' agents: shared documents only
            hits = await (await rag()).query(
                _str(args, "query"), k=k if isinstance(k, int) else 5, shared_only=shared_only
            )
            return [h.to_json() for h in hits]

        async def add(args: Mapping[str, Any]) -> Any:
            return await (await rag()).add_text(
                _str(args, "source", max_chars=500), _str(args, "text", max_chars=1_000_000)
            )

        async def documents(_: Mapping[str, Any]) -> Any:
            return await (await rag()).documents(limit=100)

        async def feedback(args: Mapping[str, Any]) -> Any:
            cid = args.get("chunk_id")
            if type(cid) is not int:
                raise AgentError("chunk_id must be an integer")
            return await (await rag()).feedback(cid, bool(args.get("good")))

        async def stats(_: Mapping[str, Any]) -> Any:
            return await (await rag()).stats()

        async def compact(_: Mapping[str, Any]) -> Any:
            return await (await rag()).compact()

        for name, fn in (
            ("rag.query", query),
            ("rag.add", add),
            ("rag.documents", documents),
            ("rag.feedback", feedback),
            ("rag.stats", stats),
            ("rag.rebuild_index", compact),
        ):
            t.add(name, fn)
    return t
