"""The agents service of a node: roster, King, tools, traces, the language model and local governance.

Started by the composition root (``Service.run(node, task_status=...)``); blocking work (embeddings, SQLite,
generation) runs in worker threads behind bounded limiters. The router is built lazily on the first request
(it embeds the roster's missions and examples once, ~1-2 s); the King, the router (numpy) and the MCP registry the
tool calls go through (pydantic) are imported then too, so an idle node loads none of them.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.signing
import trio

from node.agents.errors import AgentError
from node.agents.governance import Electorate, Governance
from node.agents.govsettings import GovernanceSettings
from node.agents.govstore import GovStore
from node.agents.ledger import Budgets
from node.agents.llm import LanguageModel, OffLlm, build_llm
from node.agents.localgov import agent_keys, agents_vote, local_genesis
from node.agents.market import OfferBook
from node.agents.remote import split_target
from node.agents.remote_service import RemoteAgents
from node.agents.roles import policy_check
from node.agents.roster import Roster, load_roster
from node.agents.settings import AgentsSettings, LlmSettings
from node.agents.tools import ToolRunner, Tools, llm_tool, node_tools
from node.agents.trace import TraceStore
from node.agents.village import VillageGovernance
from node.agents.worktools import NodeMetrics, OfferFile, add_work_tools, sample_forever
from node.rag.errors import RagError

if TYPE_CHECKING:  # numpy (the router) and pydantic (the MCP registry) load on the first request, not at start
    from node.agents.king import King
    from node.agents.toolbridge import RegistryTools
    from node.mcp.audit import AuditLog
    from node.mcp.registry import Registry
    from node.node import Node

LOCAL_NAMESPACE = "local"
log = logging.getLogger("village.agents")

# Loaded on the first request (numpy, pydantic, the MCP registry, the router), in a worker thread: the event loop
# goes on meanwhile (~0.3 s on a small machine).
REGISTRY_MODULES = ("node.agents.toolbridge", "node.mcp.audit", "node.mcp.registry", "node.mcp.settings")
KING_MODULES = ("node.agents.king", "node.agents.router", "node.rag.embed")


async def import_in_thread(names: tuple[str, ...]) -> None:
    """Import ``names`` in a worker thread (each at most once: a loaded module costs a lookup)."""

    def load() -> None:
        for name in names:
            importlib.import_module(name)

    if any(sys.modules.get(name) is None for name in names):
        await trio.to_thread.run_sync(load)


class AgentsService:
    name = "agents"

    def __init__(
        self,
        settings: AgentsSettings,
        llm_settings: LlmSettings,
        data_dir: Path | None,
        *,
        roster: Roster | None = None,
        gov_settings: GovernanceSettings | None = None,
    ) -> None:
        self.settings = settings
        self.gov_settings = gov_settings or GovernanceSettings()
        self.roster = roster or load_roster(Path(settings.roster_path) if settings.roster_path else None)
        self.llm: LanguageModel = build_llm(llm_settings) if llm_settings.backend != "off" else OffLlm()
        self.data_dir = data_dir
        self.db_limiter = trio.CapacityLimiter(1)
        self.embed_limiter = trio.CapacityLimiter(1)
        self.requests = trio.Semaphore(settings.max_concurrent_requests)
        self.traces: TraceStore | None = None
        self.gov: Governance | None = None
        self.gov_store: GovStore | None = None
        self.king: King | None = None
        self.tools: Tools | None = None
        self.registry: Registry | None = None  # the node's MCP registry the agents' tool calls go through
        self._own_audit: AuditLog | None = None
        self._king_lock = trio.Lock()
        self._registry_lock = trio.Lock()
        self._load_failures_logged: set[str] = set()  # a broken install is logged once per part, not per request
        self.remote: RemoteAgents | None = None
        self.metrics = NodeMetrics(data_dir / "agents" / "series.json" if data_dir is not None else None)
        self.offers = OfferBook()
        self.offer_file = OfferFile(data_dir / "agents" / "offers.json" if data_dir is not None else None)
        self.budgets = Budgets(settings.budget_stored_bytes_per_peer, settings.budget_queued_per_peer)
        self._node: Node | None = None
        self._keys: dict[str, nacl.signing.SigningKey] | None = None
        self.village: VillageGovernance | None = None  # the village's governance over the mesh, when configured

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._node = node
        root = self.data_dir
        self.traces = await trio.to_thread.run_sync(TraceStore, root / "agents" / "traces.sqlite" if root else None)
        if root is not None:
            # local.sqlite: the agents' electorate (governance.sqlite of earlier versions had the node's key alone)
            self.gov_store = await trio.to_thread.run_sync(GovStore, root / "agents" / "local.sqlite")
            self.gov = await trio.to_thread.run_sync(self._open_governance, node)
        else:
            self.gov = Governance(LOCAL_NAMESPACE, self._genesis(node))
        await trio.to_thread.run_sync(self.offer_file.load, self.offers, node.clock.wall_ms(), limiter=self.db_limiter)
        await trio.to_thread.run_sync(self.metrics.load, node.clock.wall_ms() / 1000, limiter=self.db_limiter)
        self.tools = self._build_tools(node)
        self.remote = RemoteAgents(
            node,
            self.roster,
            self.settings,
            king=self._king,
            runner=self._runner,
            traces=self.traces,
            db_limiter=self.db_limiter,
        )
        self.remote.register()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    sample_forever, node, self.metrics, self.settings.metrics_interval_s, self.db_limiter
                )
                nursery.start_soon(self.remote.push_forever)
                if self.gov_settings.village_members:
                    village = VillageGovernance(node, self.gov_settings, root, self.db_limiter)
                    await nursery.start(village.run)
                    self.village = village
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close, self.metrics.snapshot(), limiter=self.db_limiter)

    def _genesis(self, node: Node) -> Electorate:
        """The local electorate: the roster's agents, each with a key derived from the node's (node.agents.localgov)."""
        return local_genesis(self._agent_keys(node), self.roster)

    def _agent_keys(self, node: Node) -> dict[str, nacl.signing.SigningKey]:
        if self._keys is None:
            self._keys = agent_keys(node.identity.signing_key, self.roster)
        return self._keys

    def _open_governance(self, node: Node) -> Governance:
        assert self.gov_store is not None
        self.gov_store.init(LOCAL_NAMESPACE, self._genesis(node))
        return self.gov_store.load()

    def _close(self, series: Mapping[str, Any]) -> None:
        try:
            self.metrics.write(series)
        except Exception as exc:  # noqa: BLE001 - broad: closing the stores below matters more
            log.warning("could not save the metric series: %r", exc)
        if self._own_audit is not None:
            self._own_audit.close()
        if self.traces is not None:
            self.traces.close()
        if self.gov_store is not None:
            self.gov_store.close()

    def _build_tools(self, node: Node) -> Tools:
        t = node_tools(node)
        traces = self.traces
        assert traces is not None

        async def agents_list(_: Mapping[str, Any]) -> Any:
            return [a.to_json() for a in self.roster]

        async def audit_read(args: Mapping[str, Any]) -> Any:
            kind = args.get("kind")
            limit = args.get("limit", 100)
            return await trio.to_thread.run_sync(
                lambda: traces.audit(kind=kind if isinstance(kind, str) else None, limit=int(limit)),
                limiter=self.db_limiter,
            )

        async def agents_trace(args: Mapping[str, Any]) -> Any:
            rid = args.get("id")
            if isinstance(rid, str):
                return await trio.to_thread.run_sync(traces.get, rid, limiter=self.db_limiter)
            return await trio.to_thread.run_sync(traces.recent, 20, limiter=self.db_limiter)

        async def compact(_: Mapping[str, Any]) -> Any:
            n = await trio.to_thread.run_sync(traces.vacuum, limiter=self.db_limiter)
            if self.gov_store is not None:
                await trio.to_thread.run_sync(self.gov_store.db.execute, "VACUUM", limiter=self.db_limiter)
            return {"traces_kept": n}

        async def policy(args: Mapping[str, Any]) -> Any:
            text = str(args.get("text", ""))
            verdict = policy_check(text)
            if verdict["allowed"] and self.village is not None:  # the village's certified shared policy
                low = text.lower()
                hit = next((t for t in self.village.blocked_terms() if t.lower() in low), None)
                if hit is not None:
                    verdict = {"allowed": False, "reason": f"the village's shared policy blocks {hit!r}"}
            return verdict

        async def gov_status(_: Mapping[str, Any]) -> Any:
            return self.gov_status()

        async def gov_evidence(_: Mapping[str, Any]) -> Any:
            assert self.gov is not None
            return [e.to_json() for e in self.gov.evidence.values()]

        async def gov_propose(args: Mapping[str, Any]) -> Any:
            return await self.propose(str(args.get("kind", "")), str(args.get("key", "")), args.get("value"))

        llm_complete = llm_tool(self.llm)

        async def selftest(_: Mapping[str, Any]) -> Any:
            from node.agents.selftest import run_selftest

            return await trio.to_thread.run_sync(run_selftest)

        add_work_tools(
            t,
            node,
            metrics=self.metrics,
            interval_s=self.settings.metrics_interval_s,
            budgets=self.budgets,
            book=self.offers,
            offers=self.offer_file,
            king=self._king,
            available=lambda: sorted(t.handlers),
            db_limiter=self.db_limiter,
        )
        for name, fn in (
            ("sim.adversarial", selftest),
            ("agents.list", agents_list),
            ("audit.read", audit_read),
            ("agents.trace", agents_trace),
            ("store.compact", compact),
            ("policy.check", policy),
            ("gov.status", gov_status),
            ("gov.evidence", gov_evidence),
            ("gov.propose", gov_propose),
            ("llm.complete", llm_complete),
        ):
            t.add(name, fn)
        return t

    def _load_failed(self, what: str, exc: ImportError) -> AgentError:
        """A generic error for the caller (a gateway client or a peer may be behind it: an ImportError names this
        node's installed paths); why goes to the node's log, once per part."""
        if what not in self._load_failures_logged:
            self._load_failures_logged.add(what)
            log.warning("%s could not be imported: %s", what, exc)
        return AgentError(f"{what} could not be loaded on this node (the node's log says why)")

    async def _registry(self, node: Node) -> Registry:
        """The node's one MCP registry (the MCP service's), with the agent tools added; when MCP is off on this
        node, a registry of the same kind kept by the agents (audited to ``<data dir>/agents/audit.jsonl``)."""
        async with self._registry_lock:
            return await self._build_registry(node)

    async def _build_registry(self, node: Node) -> Registry:
        if self.registry is None:
            try:
                await import_in_thread(REGISTRY_MODULES)
            except ImportError as exc:  # a broken install: the log gets why, the node goes on
                raise self._load_failed("the agents' tools", exc) from exc
            from node.agents.toolbridge import register_agent_tools
            from node.mcp.plugin_service import running_service

            mcp = await running_service(node)
            if mcp is not None and mcp.registry is not None:
                reg = mcp.registry
            else:
                from node.mcp.audit import AuditLog
                from node.mcp.registry import Registry
                from node.mcp.settings import McpSettings

                path = self.data_dir / "agents" / "audit.jsonl" if self.data_dir is not None else None
                s = McpSettings()
                self._own_audit = AuditLog(path, max_bytes=s.audit_max_bytes, wall_ms=node.clock.wall_ms)
                reg = Registry(s, now=node.clock.now, audit=self._own_audit)
            assert self.tools is not None
            register_agent_tools(reg, self.tools)
            self.registry = reg
        return self.registry

    async def _runner(self) -> RegistryTools:
        if self._node is None:
            raise AgentError("the agents service is not running")
        from node.agents.toolbridge import RegistryTools

        return RegistryTools(await self._registry(self._node))

    async def _king(self) -> King:
        async with self._king_lock:
            return await self._build_king()

    async def _build_king(self) -> King:
        if self.king is None:
            if self.tools is None or self.traces is None or self._node is None:
                raise AgentError("the agents service is not running")
            registry = await self._registry(self._node)
            try:  # numpy (the router): here, on the first request
                await import_in_thread(KING_MODULES)
                from node.agents.king import King
                from node.agents.router import Router, load_seeds, shipped_seed_vectors
                from node.agents.toolbridge import RegistryTools
                from node.rag.embed import MODEL_ID, Embedder
            except ImportError as exc:  # a broken install: the log gets why, the node goes on
                raise self._load_failed("the agents' router", exc) from exc
            from node.rag.plugin import load_rag_service

            try:  # only to borrow its embedder (one copy of the model in the daemon)
                rag = await load_rag_service(self._node)
            except RagError as exc:  # a broken knowledge base: the agents route with their own copy of the model
                log.warning("agents: the knowledge base could not be loaded, the router uses its own model: %s", exc)
                rag = None
            embedder = rag.embedder if rag is not None else None
            if embedder is None:
                embedder = Embedder()
            # The shipped seeds are labelled with the shipped roster's agents: a custom roster starts unseeded.
            seeds = load_seeds() if self.settings.router_seeds and not self.settings.roster_path else []
            seed_vectors = shipped_seed_vectors(seeds, MODEL_ID) if seeds else None
            router = await trio.to_thread.run_sync(
                partial(Router, self.roster, embedder.embed, seeds=seeds, seed_vectors=seed_vectors),
                limiter=self.embed_limiter,
            )
            clock = self._node.clock
            self.king = King(
                self.roster,
                router,
                RegistryTools(registry),
                llm=None if isinstance(self.llm, OffLlm) else self.llm,
                traces=self.traces,
                embed_limiter=self.embed_limiter,
                db_limiter=self.db_limiter,
                wall_ms=clock.wall_ms,
            )
        return self.king

    async def ask(
        self,
        request: str,
        *,
        agent: str | None = None,
        confirm: bool = False,
        tools: Callable[[ToolRunner], ToolRunner] | None = None,
    ) -> dict[str, Any]:
        """Ask the King. ``tools`` narrows the agents' tools for this request (a remote caller's scopes, see
        node.twin.ask.RemoteTools): a King sharing the router runs it over the wrapped tools. ``agent`` may name
        another node's agent as ``AGENT@PEER`` (remote dispatch) — the node's owner's only: a caller whose tools
        are narrowed cannot make this node speak for it to other nodes."""
        name, peer = split_target(agent) if agent else (None, None)
        if peer is not None and name is not None:
            if tools is not None:
                raise AgentError("asking another node's agent is for this node's owner only")
            if self.remote is None:
                raise AgentError("the agents service is not running")
            async with self.requests:
                return await self.remote.ask(name, peer, request)
        async with self.requests:
            king = await self._king()
            if tools is not None:
                from node.agents.king import King

                king = King(
                    king.roster,
                    king.router,
                    tools(king.tools),
                    llm=king.llm,
                    traces=king.traces,
                    embed_limiter=king.embed_limiter,
                    db_limiter=king.db_limiter,
                    wall_ms=king.wall_ms,
                )
            return await king.ask(request, agent=agent, confirm=confirm)

    async def feedback(self, request_id: str, agent: str) -> dict[str, Any]:
        return await (await self._king()).feedback(request_id, agent)

    # ------------------------------------------------------------------------------------ governance

    def _propose_sync(self, kind: str, key: str, value: Any, ttl_s: float, now_ms: int) -> dict[str, Any]:
        """Propose in the next free round of the current epoch of the local governance and let the node's agents
        vote (each signs with its own key; votes persisted before use). Local decisions never leave the node;
        village proposals go through :mod:`node.agents.govmesh` instead."""
        from node.agents.governance import MEMBERSHIP_ROUND, Action, ActionKind, make_proposal

        g, store, node = self.gov, self.gov_store, self._node
        assert g is not None and node is not None
        try:
            action = Action(ActionKind(kind), key, value)
        except ValueError as exc:
            raise AgentError(f"kind must be one of config, policy, admit, remove, not {kind!r}") from exc
        if action.kind in (ActionKind.ADMIT, ActionKind.REMOVE):
            round_ = MEMBERSHIP_ROUND
        else:
            used = {r for (e, r) in g.certificates if e == g.epoch} | {
                p.round for p in g.all_proposals() if p.epoch == g.epoch
            }
            round_ = next(r for r in range(len(used) + 1) if r not in used)
        keys = self._agent_keys(node)
        # The King proposes membership changes; other proposals rotate over the agents (16 per member and epoch).
        names = sorted(keys)
        proposer = keys["King"] if round_ == MEMBERSHIP_ROUND and "King" in keys else keys[names[round_ % len(names)]]
        p = make_proposal(
            g.namespace,
            g.epoch,
            round_,
            action,
            expires_at_ms=now_ms + int(ttl_s * 1000),
            signer=proposer,
        )
        if not g.add_proposal(p, now_ms):
            raise AgentError("the proposal was refused (slot taken, or its proposer is not a member)")
        already = store.votes_by() if store is not None else {}
        if store is not None:
            store.save_proposal(p)
        made = agents_vote(g, keys, p, already, now_ms)  # local votes never leave the node: count, then save
        for vote in made:
            if store is not None:
                store.save_vote(vote)
        by_key = {bytes(k.verify_key): name for name, k in keys.items()}
        cert = g.certificates.get((p.epoch, p.round))
        if cert is not None and store is not None:
            store.save_certificate(cert)
        executed = g.execute_ready()
        cert = g.certificates.get((p.epoch, p.round))
        return {
            "proposal": p.hash.hex(),
            "epoch": p.epoch,
            "round": p.round,
            "certificate": cert.to_json() if cert else None,
            "executed": [{"epoch": x.epoch, "round": x.round, "value": x.value.name.lower()} for x in executed],
            "votes": [
                {
                    "agent": by_key.get(v.voter, v.voter.hex()),
                    "type": v.vote_type.name.lower(),
                    "value": v.value.name.lower(),
                }
                for v in made
            ],
            "state": g.state(),
        }

    def gov_status(self) -> dict[str, Any]:
        g = self.gov
        if g is None:
            raise AgentError("the agents service is not running")
        return {
            "namespace": g.namespace,
            "epoch": g.epoch,
            "electorate": [[k.hex(), p] for k, p in g.electorate.members],
            "proposals": [{"hash": p.hash.hex(), "round": p.round, **p.action.to_json()} for p in g.all_proposals()],
            "certificates": [c.to_json() for c in g.certificates.values()],
            "evidence": len(g.evidence),
            "state": g.state(),
        }

    async def propose(self, kind: str, key: str, value: Any, *, ttl_s: float = 3600.0) -> dict[str, Any]:
        assert self._node is not None
        now_ms = self._node.clock.wall_ms()
        return await trio.to_thread.run_sync(
            self._propose_sync, kind, key, value, ttl_s, now_ms, limiter=self.db_limiter
        )

    async def trace(self, request_id: str) -> dict[str, Any] | None:
        assert self.traces is not None
        return await trio.to_thread.run_sync(self.traces.get, request_id, limiter=self.db_limiter)


def signing_key(node: Node) -> nacl.signing.SigningKey:
    return node.identity.signing_key
