"""The default plugins load on first use (tests/test_lazy_plugins.py); here, what happens when that first use fails or
comes late (review of idle5): a remote peer never sees why a module could not load on this node (only its log
does), a broken knowledge base does not stop the twin (learning, status, forget), a knowledge base is never built
or reopened after its node stopped."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from node.agents.errors import AgentError
from node.agents.service import AgentsService
from node.agents.settings import AgentsSettings, LlmSettings
from node.transports.memory import MemoryNetwork
from tools.inprocess import start_node

BROKEN = "node.rag.service"  # a None in sys.modules: its `import` raises ImportError naming it (a broken install)


def _node_stub(data_dir: Path, **kw: object) -> SimpleNamespace:
    fields: dict[str, object] = {
        "config": SimpleNamespace(data_dir=data_dir),
        "persistent": True,
        "clock": SimpleNamespace(wall_ms=lambda: 1_700_000_000_000),
        "register_app_handler": lambda _name, _handler: None,
    }
    return SimpleNamespace(**{**fields, **kw})


@pytest.mark.timeout(120)
async def test_a_peer_asking_an_agent_that_cannot_load_sees_a_generic_error_and_the_log_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, BROKEN, None)
    caplog.set_level(logging.WARNING, logger="village")
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=11, queue_frames=4096)
            await nursery.start(net.run)
            off = LlmSettings(backend="off")
            a_svc = AgentsService(AgentsSettings(), off, tmp_path / "alice")
            b_svc = AgentsService(AgentsSettings(), off, tmp_path / "bob")
            alice = await start_node(nursery, net, tmp_path, "alice", 1, services=[a_svc])
            bob = await start_node(nursery, net, tmp_path, "bob", 2, services=[b_svc])
            net.connect(alice.transports[0], bob.transports[0])  # type: ignore[arg-type]
            await alice.wait_until(lambda: any(p["nickname"] == "bob" and p["reachable"] for p in alice.peers_view()))
            # The agents still run (their router borrows no broken knowledge base); Sage's tool fails, generically.
            r = await a_svc.ask("what does the pump guide say", agent="Sage@bob")
            text = r["answer"]
            assert not r["steps"][0]["ok"] and text.endswith("Sage could not do it: rag.query failed on this node")
            assert BROKEN not in text and "loaded" not in text
            assert any(BROKEN in r.getMessage() for r in caplog.records if r.name.startswith("village."))
            nursery.cancel_scope.cancel()


async def test_a_broken_knowledge_base_does_not_stop_the_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The twin shares the knowledge base's model when it can: a knowledge base that cannot load leaves the twin its
    own model. forget() erases the files without loading the engine; the twin then learns and answers status."""
    from node.rag.node_service import RagNodeService
    from node.rag.settings import RagSection
    from node.twin.service import TwinService
    from node.twin.settings import TwinSettings

    monkeypatch.setitem(sys.modules, BROKEN, None)
    rag = RagNodeService(RagSection(mode="bm25"))
    node = _node_stub(tmp_path, service=lambda name: rag if name == "rag" else None)
    state = tmp_path / "twin" / "state.bin"
    state.parent.mkdir(mode=0o700)
    state.write_bytes(b"personal state from an earlier run")
    twin = TwinService(TwinSettings(neural=False, poll_interval_s=60, save_interval_s=3600), tmp_path)
    assert twin.settings.actions  # the action head wants the shared model
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(rag.run, node)
            await nursery.start(twin.run, node)
            assert await twin.forget() == {"erased_bytes": 34, "path": str(tmp_path / "twin")}
            assert not state.exists() and twin.engine is None
            for i in range(3):
                twin.record("message", f"the walrus colony meets at dawn {i}")
            assert twin.actions_note is None  # (the model is looked up at the first text it embeds: a query)
            twin.record("query", "where does the walrus colony meet", action="rag.query")
            await twin.wait_learned(4)
            status = await twin.status()
            assert status["load_error"] is None and status["learn_errors"] == 0
            assert status["messages_learned"] == 4 and status["actions_known"] == 1, status
            assert twin.actions_note is not None and "the twin uses its own model" in twin.actions_note
            nursery.cancel_scope.cancel()


async def test_a_knowledge_base_built_late_is_closed_on_stop_and_a_late_caller_is_refused(tmp_path: Path) -> None:
    """Built by a peer's first query, closed when the node stops; a query after the stop is refused ("could not
    answer") and reopens nothing: neither a new service nor the closed one's store."""
    from node.errors import NodeError
    from node.rag import federated
    from node.rag.node_service import RagNodeService
    from node.rag.settings import RagSection

    handlers: dict[str, Callable[[bytes, bytes], Awaitable[bytes]]] = {}
    node = _node_stub(tmp_path, register_app_handler=handlers.__setitem__)
    svc = RagNodeService(RagSection(mode="bm25"))
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run, node)
        handle = handlers[federated.SERVICE]
        await handle(b"\x01" * 32, federated.encode_request("walrus", 3))  # the first use builds it
        built = svc.rag
        assert built is not None and built._store is not None  # its store is open
        nursery.cancel_scope.cancel()
    assert built._store is None  # closed by the stop
    assert svc.rag is None and await svc.load() is None
    with pytest.raises(NodeError, match="could not answer"):
        await handle(b"\x01" * 32, federated.encode_request("walrus", 3))
    assert built._store is None


def _record_import_threads(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> dict[str, str]:
    """Unload ``names`` (restored after the test) and record which thread imports each again."""
    seen: dict[str, str] = {}

    class Spy:
        @staticmethod
        def find_spec(name: str, path: object = None, target: object = None) -> None:
            if name in names:
                seen[name] = threading.current_thread().name
            return None  # the usual finders load it

    for name in names:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [Spy(), *sys.meta_path])
    return seen


async def test_the_first_use_imports_the_heavy_modules_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy, hnswlib, the store, the agents' registry (pydantic) and King load in a worker thread: a peer's first
    request does not stall the node's event loop for them (~0.3-0.45 s on a small machine)."""
    from node.agents.service import KING_MODULES, REGISTRY_MODULES, import_in_thread
    from node.rag.node_service import MODULE, RagNodeService
    from node.rag.settings import RagSection

    loop = threading.current_thread().name
    seen = _record_import_threads(monkeypatch, (MODULE, *REGISTRY_MODULES, *KING_MODULES))
    svc = RagNodeService(RagSection(mode="bm25"))
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run, _node_stub(tmp_path))
        built = await svc.load()
        assert built is not None and type(built).__module__ == MODULE
        await import_in_thread(REGISTRY_MODULES + KING_MODULES)
        nursery.cancel_scope.cancel()
    assert set(seen) == {MODULE, *REGISTRY_MODULES, *KING_MODULES}, seen
    assert loop not in seen.values(), seen


async def test_an_mcp_service_that_fails_to_build_closes_its_audit_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while the MCP service builds (its memory store, say) on first use leaves no file open: the audit
    log it opened first is closed (each failed first use would otherwise keep one descriptor)."""
    from node.mcp.service import McpService
    from node.mcp.settings import McpSettings

    def broken(*_: object) -> None:
        raise RuntimeError("the memory store cannot open")

    monkeypatch.setattr(McpService, "_memory_storage", broken)
    svc = McpService(McpSettings(), persistent=True)
    node = _node_stub(tmp_path, clock=SimpleNamespace(wall_ms=lambda: 1_700_000_000_000, now=lambda: 0.0))
    with pytest.raises(BaseExceptionGroup) as failed:
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.run, node)
    assert failed.group_contains(RuntimeError, match="memory store")
    assert svc.audit is not None and (tmp_path / "mcp" / "audit.jsonl").exists()
    assert svc.audit._fd is None


@pytest.mark.timeout(120)
async def test_a_peer_asking_an_agent_whose_tool_fails_sees_no_path_of_this_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool failing on the serving node (its knowledge base cannot open: a directory where the SQLite file goes)
    answers the remote peer with a generic text; the serving node's log says why (review fix1, item 1)."""
    from node.rag.store import DB_NAME

    caplog.set_level(logging.WARNING, logger="village.agents")
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=11, queue_frames=4096)
            await nursery.start(net.run)
            off = LlmSettings(backend="off")
            a_svc = AgentsService(AgentsSettings(), off, tmp_path / "alice")
            b_svc = AgentsService(AgentsSettings(), off, tmp_path / "bob")
            alice = await start_node(nursery, net, tmp_path, "alice", 1, services=[a_svc])
            bob = await start_node(nursery, net, tmp_path, "bob", 2, services=[b_svc])
            (tmp_path / "bob" / "rag" / DB_NAME).mkdir(parents=True)
            net.connect(alice.transports[0], bob.transports[0])  # type: ignore[arg-type]
            await alice.wait_until(lambda: any(p["nickname"] == "bob" and p["reachable"] for p in alice.peers_view()))
            r = await a_svc.ask("what does the pump guide say", agent="Sage@bob")
            assert not r["steps"][0]["ok"]
            assert r["answer"].endswith("Sage could not do it: rag.query failed on this node"), r["answer"]
            assert str(tmp_path) not in r["answer"]
            assert any(str(tmp_path) in m.getMessage() for m in caplog.records if m.name == "village.agents")
            nursery.cancel_scope.cancel()


async def test_a_gateway_callers_agent_tool_failure_is_generic_but_denials_pass_through() -> None:
    """node.twin.ask.RemoteTools (a gateway key's ask): a tool's own error text (a path, a module) never reaches the
    client; a denial or an unavailable tool still says what it is."""
    from node.agents.errors import ToolDenied, ToolUnavailable
    from node.mcp.registry import Caller
    from node.twin.ask import RemoteTools

    class Inner:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        async def call_as(self, *_: object, **__: object) -> object:
            raise self.exc

    caller = Caller("gateway", "key:3f2a", frozenset({"rag:read"}))
    tools = RemoteTools(Inner(AgentError("cannot open the rag store /home/owner/.village/rag")), caller, None)  # type: ignore[arg-type]
    with pytest.raises(AgentError) as seen:
        await tools.call_as("Sage", frozenset({"rag.query"}), "rag.query", {"query": "pump"})
    assert str(seen.value) == "rag.query failed on this node"
    for passed in (ToolDenied("rag.query is denied"), ToolUnavailable("rag.query is not available on this node")):
        tools = RemoteTools(Inner(passed), caller, None)  # type: ignore[arg-type]
        with pytest.raises(type(passed), match=str(passed)):
            await tools.call_as("Sage", frozenset({"rag.query"}), "rag.query", {"query": "pump"})


@pytest.mark.timeout(120)
async def test_gateway_clients_never_see_why_a_module_could_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway key's ask (/v1/ask) and MCP call (/mcp) on a node whose knowledge base cannot be imported get a
    generic text; the ImportError (it names installed modules and paths) is in the node's log only (review fix1,
    item 3)."""
    from anchor.gateway.mcp_route import tool_scopes
    from node.errors import NodeError
    from node.mcp.errors import ToolError
    from node.mcp.registry import Caller
    from node.mcp.service import McpService
    from node.mcp.settings import McpSettings
    from node.rag.plugin import PLUGIN as RAG_PLUGIN
    from node.twin.ask import Access, ask

    monkeypatch.setitem(sys.modules, BROKEN, None)
    caplog.set_level(logging.WARNING, logger="village")
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=11, queue_frames=4096)
            await nursery.start(net.run)
            mcp = McpService(McpSettings(), persistent=False)
            agents = AgentsService(AgentsSettings(), LlmSettings(backend="off"), tmp_path / "bob")
            bob = await start_node(nursery, net, tmp_path, "bob", 2, services=[mcp, agents], plugins=[RAG_PLUGIN])
            caller = Caller("gateway", "key:3f2a", tool_scopes(frozenset({"rag:query"})))
            with pytest.raises(ToolError) as mcp_seen:
                assert mcp.registry is not None
                await mcp.registry.call("rag_query", {"text": "pump"}, caller=caller)
            assert "could not be loaded on this node" in str(mcp_seen.value) and BROKEN not in str(mcp_seen.value)
            asker = Caller("gateway", "key:3f2b", tool_scopes(frozenset({"agents:ask"})))
            try:
                seen = str(await ask(bob, "what does the pump guide say", access=Access(asker)))
            except NodeError as exc:  # what anchor/gateway/ask_route.py hands the client
                seen = str(exc)
            assert BROKEN not in seen and "import of" not in seen, seen
            assert any(BROKEN in r.getMessage() for r in caplog.records)
            nursery.cancel_scope.cancel()


@pytest.mark.timeout(120)
async def test_a_broken_knowledge_base_does_not_stop_the_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The agents borrow the knowledge base's embedder for their router; when it cannot load they route with their
    own copy of the model, so an agent that needs no knowledge base still answers (review fix1, item 4)."""
    from node.rag.plugin import PLUGIN as RAG_PLUGIN

    monkeypatch.setitem(sys.modules, BROKEN, None)
    caplog.set_level(logging.WARNING, logger="village")
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=11, queue_frames=4096)
            await nursery.start(net.run)
            svc = AgentsService(AgentsSettings(), LlmSettings(backend="off"), tmp_path / "alice")
            alice = await start_node(nursery, net, tmp_path, "alice", 1, services=[svc], plugins=[RAG_PLUGIN])
            bob = await start_node(nursery, net, tmp_path, "bob", 2)
            net.connect(alice.transports[0], bob.transports[0])  # type: ignore[arg-type]
            await alice.wait_until(lambda: any(p["nickname"] == "bob" and p["reachable"] for p in alice.peers_view()))
            r = await svc.ask("can I reach bob", agent="Navigator")
            assert r["steps"][0]["ok"] and "bob is reachable" in r["answer"], r
            assert any("router uses its own model" in m.getMessage() for m in caplog.records)
            nursery.cancel_scope.cancel()
