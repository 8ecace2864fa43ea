"""``ask``: the twin as the entry point. Its personal context (frequent contacts, recent topics) changes what happens
for the owner and for no one else; with the agents off the matching tool runs; the twin learns an ask only from the
control socket. Real in-process nodes over memory links, a real knowledge base (BM25), the real tool registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from node.control.methods import build_registry
from node.mcp.registry import Caller
from node.mcp.service import McpService
from node.mcp.settings import McpSettings
from node.node import Node
from node.rag.plugin import PLUGIN as RAG_PLUGIN
from node.rag.plugin import rag_service
from node.settings import Config
from node.transports.memory import MemoryNetwork
from node.twin.ask import OWNER, Access, ask, pick_tool
from node.twin.personal_context import expand_query, personalize
from node.twin.plugin import PLUGIN as TWIN_PLUGIN
from node.twin.service import TwinService
from node.twin.settings import TwinSettings
from tools.inprocess import start_node as start_shared_node

CAROL = {"peer_id": "c" * 16, "fingerprint": "c" * 64, "nickname": "carol"}
IMPOSTOR = {"peer_id": "d" * 16, "fingerprint": "d" * 64, "nickname": "carol"}  # announces the same nickname
GATEWAY_USER = Caller("gateway", "key:k1", frozenset({"agents:ask", "messages:send", "rag:read", "peers:read"}))


# ------------------------------------------------------------------ the rule itself (pure)
def test_frequent_contact_decides_an_ambiguous_recipient() -> None:
    ctx = {"contacts": [CAROL["peer_id"]]}
    out = personalize("tell carol that the seeds came", ctx, [IMPOSTOR, CAROL])
    assert out.text == f"tell {CAROL['peer_id']}: the seeds came"
    assert out.recipient == {"ref": "carol", "peer_id": CAROL["peer_id"]}


def test_the_twins_short_form_resolves_only_to_a_contact() -> None:
    assert personalize("send hi to carol", {"contacts": [CAROL["peer_id"]]}, [CAROL]).text == f"tell {'c' * 16}: hi"
    # Without history, or with a contact the name does not match, nothing is rewritten.
    assert personalize("send hi to carol", {"contacts": []}, [CAROL]).text == "send hi to carol"
    assert personalize("send hi to carol", {"contacts": ["a" * 16]}, [CAROL]).text == "send hi to carol"
    # A peer the user never wrote to is never chosen, whatever it announces.
    assert personalize("tell carol that hi", {"contacts": ["a" * 16]}, [IMPOSTOR, CAROL]).recipient is None


def test_a_name_that_decides_by_itself_is_left_alone() -> None:
    out = personalize("tell carol that hi", {"contacts": [CAROL["peer_id"]]}, [CAROL])
    assert out.text == "tell carol that hi" and out.recipient is None


def test_topic_only_for_an_underspecified_question() -> None:
    ctx = {"recent_topics": ["old topic", "potato storage"]}
    assert expand_query("how long does it keep?", ctx) == ("how long does it keep? potato storage", "potato storage")
    assert expand_query("what is the nitrate limit for wells", ctx) == ("what is the nitrate limit for wells", None)
    assert pick_tool("send hi to carol") == "search" and pick_tool("tell carol: hi") == "send"
    assert pick_tool("which peers can I reach") == "peers"


# ------------------------------------------------------------------ on real nodes
async def start_node(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    tmp: Path,
    name: str,
    nickname: str,
    seed: int,
    *,
    twin: bool = False,
    extra: list[Any] | None = None,
) -> Node:
    """A node of tools.inprocess; with ``twin``, its knowledge base, the twin and MCP (and ``extra``)."""

    def services(cfg: Config) -> list[Any]:
        twin_service = TwinService(
            TwinSettings(neural=False, actions=False, save_interval_s=3600),
            cfg.data_dir,
            battery_reader=lambda: None,
            thermal_reader=lambda: 35.0,
        )
        return [twin_service, McpService(McpSettings(), persistent=False), *(extra or [])]

    return await start_shared_node(
        nursery,
        net,
        tmp,
        name,
        seed,
        nickname=nickname,
        rag=twin,
        services=services if twin else (),
        plugins=(RAG_PLUGIN, TWIN_PLUGIN) if twin else (),
    )


@pytest.mark.timeout(200)
async def test_personal_context_changes_the_outcome_for_the_owner_only(tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=3, queue_frames=4096)
            await nursery.start(net.run)
            alice = await start_node(nursery, net, tmp_path, "alice", "alice", 1, twin=True)
            carol = await start_node(nursery, net, tmp_path, "carol", "carol", 2)
            impostor = await start_node(nursery, net, tmp_path, "impostor", "carol", 3)
            for other in (carol, impostor):
                net.connect(alice.transports[0], other.transports[0])  # type: ignore[arg-type]
            await alice.wait_until(lambda: sum(p["reachable"] for p in alice.peers_view()) == 2)
            twin = alice.service("twin")
            assert isinstance(twin, TwinService)

            # The user's own control-socket calls, as the control server hands them to its observers: two messages
            # to carol by peer ID (the observer keeps the peer ID the reference resolved to) and a document added.
            reg = build_registry(alice)
            observe = reg.socket_observers[0]
            send = reg.lookup("messages.send")
            for text in ("see you at the well", "the well is fixed"):
                params = reg.bind_params(send, {"peer": carol.identity.peer_id_hex[:8], "text": text})
                observe("messages.send", params)
            add = reg.lookup("rag.add")
            observe("rag.add", reg.bind_params(add, {"paths": ["/home/me/potato_storage.txt"]}))
            await twin.wait_learned(3)
            ctx = await twin.context()
            assert ctx["contacts"] == [carol.identity.peer_id_hex] and ctx["recent_topics"] == ["potato storage"]

            inbox_c, inbox_i = carol.subscribe_inbox(), impostor.subscribe_inbox()

            # A gateway caller (no owner scope): no context; "send hi to carol" is not a send; an ambiguous name
            # is refused by the node's own rule.
            r = await ask(alice, "send hi to carol", access=Access(GATEWAY_USER))
            assert r["via"] == "tool" and r["steps"][0]["tool"] == "search" and "personal_context" not in r
            with pytest.raises(Exception, match="several peers"):
                await ask(alice, "tell carol that hi", access=Access(GATEWAY_USER))

            # The owner: the twin's frequent contact decides, the message reaches the right carol.
            r = await ask(alice, "send hi to carol", access=Access(OWNER))
            assert r["via"] == "tool" and r["steps"][0]["tool"] == "send"
            assert r["personal_context"]["recipient"]["peer_id"] == carol.identity.peer_id_hex
            with trio.fail_after(30):
                msg = await inbox_c.receive()
            assert msg.text == "hi" and msg.private
            r = await ask(alice, "tell carol that the pump needs oil", access=Access(OWNER))
            with trio.fail_after(30):
                msg = await inbox_c.receive()
            assert msg.text == "the pump needs oil"
            with pytest.raises(trio.WouldBlock):
                inbox_i.receive_nowait()

            # Recent topic: a vague question finds the document for the owner (local query), not for others.
            rag = rag_service(alice)
            assert rag is not None
            await rag.add_text(
                "file:///home/me/potato_storage.txt",
                "Potato storage: cool and dark, potatoes stay good for three months.",
                title="potato storage",
                shared=True,
            )
            r = await ask(alice, "how long will it last?", access=Access(OWNER))
            assert r["personal_context"]["topic"] == "potato storage" and "three months" in r["answer"]
            r = await ask(alice, "how long will it last?", access=Access(GATEWAY_USER))
            assert "three months" not in r["answer"] and "personal_context" not in r

            # In-process asks are not the user's socket calls: the twin learned nothing from them.
            assert (await twin.status())["events"] == 3
            nursery.cancel_scope.cancel()


@pytest.mark.timeout(300)
async def test_through_the_agents_context_for_the_owner_and_scopes_for_a_gateway_caller(tmp_path: Path) -> None:
    from node.agents.service import AgentsService
    from node.agents.settings import AgentsSettings, LlmSettings

    with trio.fail_after(280):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=4, queue_frames=4096)
            await nursery.start(net.run)
            agents = AgentsService(AgentsSettings(), LlmSettings(backend="off"), tmp_path / "alice-agents")
            alice = await start_node(nursery, net, tmp_path, "alice", "alice", 1, twin=True, extra=[agents])
            carol = await start_node(nursery, net, tmp_path, "carol", "carol", 2)
            impostor = await start_node(nursery, net, tmp_path, "impostor", "carol", 3)
            for other in (carol, impostor):
                net.connect(alice.transports[0], other.transports[0])  # type: ignore[arg-type]
            await alice.wait_until(lambda: sum(p["reachable"] for p in alice.peers_view()) == 2)
            twin = alice.service("twin")
            assert isinstance(twin, TwinService)
            reg = build_registry(alice)
            send = reg.lookup("messages.send")
            reg.socket_observers[0](
                "messages.send", reg.bind_params(send, {"peer": carol.identity.peer_id_hex, "text": "hello"})
            )
            await twin.wait_learned(1)
            rag = rag_service(alice)
            assert rag is not None
            await rag.add_text("file:///home/me/diary.txt", "Diary: the spare key is under the blue flowerpot.")
            await rag.add_text(
                "file:///shared/well.txt", "The village well: the spare pump is in the shed.", shared=True
            )

            inbox_c = carol.subscribe_inbox()
            r = await ask(alice, "tell carol that the seeds came", access=Access(OWNER))
            assert r["via"] == "agents" and r["steps"][0]["agent"] == "Coordinator", r
            assert r["personal_context"]["recipient"]["peer_id"] == carol.identity.peer_id_hex
            with trio.fail_after(30):
                assert (await inbox_c.receive()).text == "the seeds came"

            # A gateway caller: Sage sees shared documents only, and the traces (the user's requests) are closed.
            r = await ask(alice, "where is the spare key", access=Access(GATEWAY_USER), agent="Sage")
            assert "flowerpot" not in str(r) and "personal_context" not in r
            r = await ask(alice, "where is the spare pump", access=Access(GATEWAY_USER), agent="Sage")
            assert "shed" in r["answer"]
            # ...searched through the registry (audited, rate-limited) as the agent working for that key
            assert agents.registry is not None and agents.registry.audit is not None
            last = agents.registry.audit.last
            assert last is not None and last["tool"] == "rag.query" and last["client"] == "Sage@key:k1" and last["ok"]
            # The document list is filtered too: the Curator, asked by the key, sees no unshared document.
            r = await ask(alice, "list the documents", access=Access(GATEWAY_USER), agent="Curator")
            assert r["steps"][0]["ok"] and "1 document(s)" in r["answer"], r["answer"]
            assert "diary" not in str(r) and "well.txt" in str(r)
            r = await ask(alice, "list the documents", access=Access(OWNER), agent="Curator")
            assert "2 document(s)" in r["answer"] and "diary" in str(r)
            r = await ask(alice, "where is the spare key", access=Access(OWNER), agent="Sage")
            assert "flowerpot" in r["answer"]
            # agents.dispatch runs the Ensemble's sub-agents with the caller's narrowed runner, not the King's full one.
            q = "find the document about the spare key"  # routed to Curator, Sage, Tutor: all read documents
            r = await agents.ask(q, agent="Ensemble", tools=SharedOnly)
            assert len(r["steps"][0]["data"]["answers"]) == 3 and "flowerpot" not in str(r) and "diary" not in str(r)
            r = await agents.ask(q, agent="Ensemble")
            assert "flowerpot" in str(r) and "diary" in str(r)
            r = await ask(alice, "show the audit log", access=Access(GATEWAY_USER), agent="Auditor")
            assert not r["steps"][0]["ok"] and "owner only" in r["answer"]
            nursery.cancel_scope.cancel()


class SharedOnly:
    """A narrowed runner (as a restricted caller's): shared documents only."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def call_as(self, agent: str, allowed: frozenset[str], tool: str, args: Any) -> Any:
        return await self.inner.call_as(
            agent, allowed, tool, {**args, "shared_only": True} if tool == "rag.query" else args
        )


def test_a_steps_node_error_becomes_the_asks_error_and_a_bug_stays_a_bug() -> None:
    from node.errors import MeshError
    from node.twin.ask import _first_error

    assert _first_error(ExceptionGroup("steps", [ExceptionGroup("inner", [MeshError("no route to carol")])])) == (
        "no route to carol"
    )
    with pytest.raises(ExceptionGroup):
        _first_error(ExceptionGroup("steps", [ValueError("a bug")]))


async def test_an_ask_for_another_nodes_agent_skips_the_personal_context() -> None:
    """AGENT@PEER goes as typed: the twin is not even consulted (its context could name a contact's peer ID)."""
    from node.agents.service import AgentsService
    from node.agents.settings import AgentsSettings, LlmSettings
    from node.twin.ask import OWNER, Access, ask
    from node.twin.errors import AskError

    agents = AgentsService(AgentsSettings(), LlmSettings(backend="off"), None)
    asked: list[str] = []

    class Node:  # only what ask() reads before the agents service takes over
        def service(self, name: str) -> object:
            asked.append(name)
            return agents if name == "agents" else None

        def peers_view(self) -> list[dict[str, object]]:
            return []

    with pytest.raises(AskError, match="not running"):  # reached the remote dispatch (not "unknown agent")
        await ask(Node(), "send it to him", access=Access(OWNER), agent="Sage@bob")  # type: ignore[arg-type]
    assert asked == ["agents"]
    with pytest.raises(AskError, match="no agent named"):
        await ask(Node(), "hello", access=Access(OWNER), agent="Nobody@bob")  # type: ignore[arg-type]
