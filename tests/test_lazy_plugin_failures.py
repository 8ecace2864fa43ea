"""The default plugins load on first use (tests/test_lazy_plugins.py); here, what happens when that first use fails or
comes late (review of idle5): a remote peer never sees why a module could not load on this node (only its log
does), a broken knowledge base does not stop the twin (learning, status, forget), a knowledge base is never built
or reopened after its node stopped."""

from __future__ import annotations

import logging
import sys
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
    return SimpleNamespace(
        config=SimpleNamespace(data_dir=data_dir),
        persistent=True,
        clock=SimpleNamespace(wall_ms=lambda: 1_700_000_000_000),
        register_app_handler=lambda _name, _handler: None,
        **kw,
    )


@pytest.mark.timeout(120)
async def test_a_peer_asking_an_agent_that_cannot_load_sees_a_generic_error_and_the_log_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, BROKEN, None)
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
            net.connect(alice.transports[0], bob.transports[0])  # type: ignore[arg-type]
            await alice.wait_until(lambda: any(p["nickname"] == "bob" and p["reachable"] for p in alice.peers_view()))
            with pytest.raises(AgentError) as seen:
                await a_svc.ask("what does the pump guide say", agent="Sage@bob")
            text = str(seen.value)
            assert text.endswith("answered 'agents.ask' with an error: the agents could not answer"), text
            assert BROKEN not in text and "loaded" not in text
            assert b_svc.remote is not None and b_svc.remote.counters["failed"] == 1
            assert any(BROKEN in r.getMessage() for r in caplog.records if r.name == "village.agents")
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
            await twin.wait_learned(3)
            status = await twin.status()
            assert status["load_error"] is None and status["learn_errors"] == 0
            assert status["messages_learned"] == 3, status
            assert twin.actions_note is not None and "the twin uses its own model" in twin.actions_note
            nursery.cancel_scope.cancel()
