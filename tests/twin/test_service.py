"""TwinService under trio: learning, the governor pausing and resuming it, persistence, forget, the observer."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from node.control.rpc import NoParams, Notify, Registry, param
from node.control.server import ControlServer
from node.mcp.node_tools import node_tools
from node.mcp.registry import Caller
from node.mcp.registry import Registry as ToolRegistry
from node.mcp.service import McpService
from node.mcp.settings import McpSettings
from node.transports.ble.power import BatteryState
from node.twin import rpc as twin_rpc
from node.twin.service import TwinService
from node.twin.settings import TwinSettings


def fake_embed(texts: Sequence[str]) -> np.ndarray[Any, Any]:
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, t in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "big")
        v = np.random.default_rng(seed).standard_normal(384)
        out[i] = v / np.linalg.norm(v)
    return out


class Power:
    def __init__(self, percent: int, external: bool) -> None:
        self.state = BatteryState(percent, external, "sysfs")

    def __call__(self) -> BatteryState | None:
        return self.state


def make(tmp_path: Path, power: Power, **kw: Any) -> TwinService:
    settings = TwinSettings(neural=False, poll_interval_s=60, save_interval_s=3600, **kw)
    return TwinService(settings, tmp_path, battery_reader=power, thermal_reader=lambda: 35.0, embed=fake_embed)


async def learned(svc: TwinService) -> int:
    await svc.idle.wait()
    return int((await svc.status())["messages_learned"])


async def test_learns_persists_0600_and_reloads(tmp_path: Path) -> None:
    power = Power(80, False)
    svc = make(tmp_path, power)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        for _ in range(4):
            svc.record("message", "see you at the vorpal lounge", action="messages.send")
        assert await learned(svc) == 4
        assert (await svc.suggest("see you at the "))[0]["token"] == "vorpal"
        n.cancel_scope.cancel()
    assert stat.S_IMODE(svc.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(svc.dir.stat().st_mode) == 0o700
    again = make(tmp_path, power)
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        st = await again.status()
        assert st["messages_learned"] == 4 and st["state_bytes"] > 0
        assert (await again.suggest("see you at the "))[0]["token"] == "vorpal"
        n.cancel_scope.cancel()


async def test_status_wait_counts_events_recorded_just_before(tmp_path: Path) -> None:
    """`twin status --wait`: events recorded right before the call are learned before it answers; without the wait
    the answer may come while they are still queued (and says how many)."""
    svc = make(tmp_path, Power(80, False))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        await svc.status()  # the engine is loaded: what follows measures the queue only
        for _ in range(20):
            svc.record("message", "the snorkel club meets at dawn")
        st = await svc.status()
        assert st["messages_learned"] + st["queued_events"] <= 20 and st["queued_events"] >= 1
        st = await svc.status(wait_s=10)
        assert st["messages_learned"] == 20 and st["queued_events"] == 0
        n.cancel_scope.cancel()


async def test_paused_on_low_battery_then_drained_when_charging(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    power = Power(10, False)
    svc = make(tmp_path, power, min_battery_percent=30)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "hello from a tired phone", action="messages.send")
        svc.record("query", "battery saving tips", action="rag.query")
        await svc.idle.wait()
        st = await svc.status()
        assert st["learning"] == "paused" and "battery 10 %" in st["reason"]
        assert st["deferred_events"] == 2 and st["messages_learned"] == 0
        power.state = BatteryState(10, True, "sysfs")  # plugged in
        # The next poll is 60 s later (MockClock: instant). No fail_after here: the autojump clock also jumps
        # while a learning thread runs, so a deadline would fire spuriously; pytest's timeout catches a hang.
        await svc.wait_learned(2)
        st = await svc.status()
        assert st["learning"] == "allowed" and st["deferred_events"] == 0 and st["messages_learned"] == 2
        n.cancel_scope.cancel()


async def test_forget_erases_every_learned_byte(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    svc = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "my canary plumtree-4711", action="messages.send")
        await learned(svc)
        assert await svc.save_now() > 0
        out = await svc.forget()
        assert out["erased_bytes"] > 0 and not svc.dir.exists()
        st = await svc.status()
        assert st["messages_learned"] == 0 and st["personal_words"] == 0
        exported = await svc.export()
        assert "plumtree" not in repr(exported)
        n.cancel_scope.cancel()
    assert not svc.path.exists()  # nothing learned since: nothing written at shutdown


async def test_forget_drops_events_still_queued(tmp_path: Path) -> None:
    """Events recorded just before `twin forget` (still in the learner's channel) are not learned after the wipe,
    and nothing is written back to disk (the review's race: they were learned and saved again)."""
    svc = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "warmup", action="messages.send")
        assert await learned(svc) == 1
        for i in range(20):
            svc.record("message", f"my secret diagnosis is zorblax {i}", action="messages.send")
        await svc.forget()
        await svc.idle.wait()
        st = await svc.status()
        assert st["messages_learned"] == 0 and st["events"] == 0 and st["deferred_events"] == 0
        assert "zorblax" not in json.dumps(await svc.export())
        n.cancel_scope.cancel()  # the shutdown save: nothing learned since the forget, nothing written
    assert not svc.dir.exists()


async def test_forget_drops_an_event_waiting_for_the_worker(tmp_path: Path) -> None:
    """An event the learner already took, waiting for the worker thread when forget comes, is not learned, and
    learning goes on after the forget (the generation check drops only what came before)."""
    svc = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "warmup", action="messages.send")
        assert await learned(svc) == 1
        forgotten = trio.Event()

        async def forget() -> None:
            await svc.forget()
            forgotten.set()

        async with svc._limiter:  # the worker is busy (say, a suggestion being computed)
            svc.record("message", "my secret diagnosis is zorblax", action="messages.send")
            await trio.testing.wait_all_tasks_blocked()  # the learner holds the event, waiting for the worker
            n.start_soon(forget)
            await trio.testing.wait_all_tasks_blocked()
        await forgotten.wait()
        await svc.idle.wait()
        st = await svc.status()
        assert st["messages_learned"] == 0 and st["events"] == 0
        assert "zorblax" not in json.dumps(await svc.export())
        svc.record("message", "after the forget", action="messages.send")
        assert await learned(svc) == 1  # learning goes on
        n.cancel_scope.cancel()
    assert svc.path.exists()


@dataclass(frozen=True, slots=True)
class _SendParams:
    peer: str = param(doc="peer")
    text: str = param(doc="text")


async def _socket_call(path: Path, method: str, **params: Any) -> Any:
    """One JSON-RPC call on a real control socket (what `village` does)."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        req = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        await stream.send_all(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = await stream.receive_some(65536)
            assert chunk, "control server closed the connection"
            buf += chunk
    reply = json.loads(buf)
    assert "error" not in reply, reply
    return reply["result"]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vtw-", dir="/tmp"))  # Unix socket paths are limited to 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _registry(svc: TwinService) -> tuple[Registry, list[str]]:
    reg = Registry()
    received: list[str] = []

    async def send(p: _SendParams, notify: Notify) -> Any:
        return {"id": "x", "to": "00" * 8, "state": "pending"}  # messages.send's answer (node/control/methods.py)

    async def inbox(_: NoParams, notify: Notify) -> Any:
        received.append("a message from someone else: secret-from-peer")
        return received

    reg.add("messages.send", _SendParams, "send", send)
    reg.add("inbox.list", NoParams, "inbox", inbox)
    twin_rpc.observe_socket_calls(reg, svc)
    twin_rpc.register(reg, svc)
    return reg, received


async def test_observer_feeds_the_users_calls_only(tmp_path: Path, sock_dir: Path) -> None:
    svc = make(tmp_path, Power(90, True))
    reg, _ = _registry(svc)
    server = ControlServer(sock_dir / "c.sock", reg, max_request_bytes=65536, max_connections=4)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        await n.start(server.run)
        for _ in range(3):
            await _socket_call(server.path, "messages.send", peer="alice", text="lunch at the quokka bar")
            await _socket_call(server.path, "inbox.list")
        await svc.idle.wait()
        exported = await _socket_call(server.path, "twin.export")
        words = exported["personal_words"]
        assert "quokka" in words and not any("secret" in w for w in words)
        assert set(exported["actions"]) == {"messages.send", "inbox.list"}
        assert exported["context"]["contacts"] == ["alice"]
        nxt = await _socket_call(server.path, "twin.actions", k=1)
        assert nxt[0]["action"] == "messages.send"  # after inbox.list the user sent a message, every time
        n.cancel_scope.cancel()


async def test_mcp_clients_calls_are_not_learned(tmp_path: Path, sock_dir: Path) -> None:
    """MCP tools (remote gateway clients, HTTP/stdio MCP clients, agents) call the control methods in-process:
    their text is not the user's, so the twin learns none of it; the user's own socket call still is."""
    svc = make(tmp_path, Power(90, True))
    reg, _ = _registry(svc)
    server = ControlServer(sock_dir / "c.sock", reg, max_request_bytes=65536, max_connections=4)
    mcp = McpService(McpSettings(), persistent=False)
    mcp.node = SimpleNamespace(control_server=server)  # type: ignore[assignment]  # what _invoke reads
    tools = ToolRegistry(McpSettings(), now=trio.current_time)
    tools.extend(node_tools(mcp._invoke, rag_roots=()))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        await n.start(server.run)
        for transport in ("gateway", "http", "stdio", "local"):
            out = await tools.call(
                "messages_send",
                {"peer": "mallory", "text": "wire the xylophonic escrow today"},
                caller=Caller(transport, "remote-api-key-17"),
            )
            assert out.structured["id"] == "x"  # the call reached the handler and succeeded
        await svc.idle.wait()
        st = await svc.status()
        assert st["messages_learned"] == 0 and st["events"] == 0
        await _socket_call(server.path, "messages.send", peer="alice", text="the quokka bar at noon")
        await svc.idle.wait()
        exported = await svc.export()
        assert exported["status"]["messages_learned"] == 1 and "quokka" in exported["personal_words"]
        assert "xylophonic" not in json.dumps(exported) and exported["context"]["contacts"] == ["alice"]
        n.cancel_scope.cancel()


def test_every_twin_method_is_documented(tmp_path: Path) -> None:
    reg = Registry()
    twin_rpc.register(reg, make(tmp_path, Power(90, True)))
    names = [n for n in reg.methods if n.startswith("twin.")]
    assert set(names) == {"twin.status", "twin.suggest", "twin.actions", "twin.observe", "twin.export", "twin.forget"}
    assert all(reg.methods[n].doc for n in names)


async def test_a_failing_event_is_counted_not_fatal(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    def broken_embed(texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return np.zeros((len(texts), 7), dtype=np.float32)  # wrong dimension: the action head refuses it

    settings = TwinSettings(neural=False, save_interval_s=3600)
    svc = TwinService(settings, tmp_path, battery_reader=lambda: None, thermal_reader=lambda: None, embed=broken_embed)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("query", "first question", action="rag.query")
        svc.record("query", "second question", action="rag.query")  # the head now sees a 7-d vector
        svc.record("message", "still learning messages", action="messages.send")
        await svc.idle.wait()
        st = await svc.status()
        assert st["learn_errors"] >= 1 and st["messages_learned"] >= 2
        n.cancel_scope.cancel()


async def test_loading_the_engine_caps_the_blas_pool(tmp_path: Path) -> None:
    """``[twin] blas_threads`` caps numpy's BLAS pool when the engine loads (and 0 leaves it alone)."""
    from threadpoolctl import threadpool_limits

    from node.twin.threads import blas_threads

    before = blas_threads()
    threadpool_limits(limits=2, user_api="blas")
    try:
        loose = make(tmp_path / "a", Power(90, True), blas_threads=0)
        async with trio.open_nursery() as n:
            await n.start(loose.run, None)
            assert (await loose.status())["blas_threads"] is None
            n.cancel_scope.cancel()
        two = blas_threads()
        assert two and all(t == two[0] for t in two)
        pinned = make(tmp_path / "b", Power(90, True), blas_threads=1)
        async with trio.open_nursery() as n:
            await n.start(pinned.run, None)
            assert (await pinned.status())["blas_threads"] == 1
            n.cancel_scope.cancel()
        assert blas_threads() == [1] * len(two)
    finally:
        threadpool_limits(limits=max(before or [1]), user_api="blas")


async def test_the_action_head_shares_the_knowledge_bases_model(tmp_path: Path) -> None:
    """One MiniLM in the daemon: the twin's action head embeds with the running knowledge base's embedder, found
    when the engine loads (the rag service may start after the twin), not a second model of its own."""
    from node.rag.node_service import SERVICE_NAME, RagNodeService
    from node.rag.service import RagService
    from node.rag.settings import RagSection
    from tests.rag.helpers import HashEmbedder

    seen: list[str] = []

    class Spy(HashEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
            seen.extend(texts)
            return super().embed(texts)

    rag_node = RagNodeService(RagSection())
    node = SimpleNamespace(service=lambda name: rag_node if name == SERVICE_NAME else None)
    settings = TwinSettings(neural=False, poll_interval_s=60, save_interval_s=3600)
    svc = TwinService(settings, tmp_path, battery_reader=Power(80, True), thermal_reader=lambda: 35.0)
    async with trio.open_nursery() as n:
        await n.start(svc.run, node)
        rag_node.rag = RagService(RagSection(), None, embedder=Spy())  # started after the twin
        svc.record("query", "when does the train to paris leave", action="rag.query")
        svc.record("query", "how long should sourdough rise", action="rag.query")
        await svc.idle.wait()
        assert "when does the train to paris leave" in seen
        assert svc.actions_note is None
        n.cancel_scope.cancel()


async def test_the_action_heads_model_calls_wait_for_the_knowledge_bases_limiter(tmp_path: Path) -> None:
    """The twin's embedding takes the knowledge base's model limiter, so it never runs beside an ingest's model call
    (memory and CPU): while an ingest holds the limiter the twin's event waits, and is learned once it is free."""
    from node.rag.node_service import SERVICE_NAME, RagNodeService
    from node.rag.service import RagService
    from node.rag.settings import RagSection
    from tests.rag.helpers import HashEmbedder

    seen: list[str] = []
    asked = trio.Event()  # set when the twin asks for the limiter, or (wrongly) runs the model without it

    class Spy(HashEmbedder):
        def embed_group(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
            seen.extend(texts)
            trio.from_thread.run_sync(asked.set)
            return super().embed_group(texts)

    class Watched:
        def __init__(self, inner: trio.CapacityLimiter) -> None:
            self.inner = inner

        async def acquire_on_behalf_of(self, borrower: object) -> None:
            asked.set()
            await self.inner.acquire_on_behalf_of(borrower)

        def release_on_behalf_of(self, borrower: object) -> None:
            self.inner.release_on_behalf_of(borrower)

    rag = RagService(RagSection(), None, embedder=Spy())
    limiter = rag._embed_limiter
    rag._embed_limiter = Watched(limiter)  # type: ignore[assignment]
    rag_node = RagNodeService(RagSection())
    rag_node.rag = rag
    node = SimpleNamespace(service=lambda name: rag_node if name == SERVICE_NAME else None)
    settings = TwinSettings(neural=False, poll_interval_s=60, save_interval_s=3600)
    svc = TwinService(settings, tmp_path, battery_reader=Power(80, True), thermal_reader=lambda: 35.0)
    async with trio.open_nursery() as n:
        await n.start(svc.run, node)
        with trio.fail_after(30):
            async with limiter:  # an ingest's model call is running
                svc.record("query", "when does the train to paris leave", action="rag.query")
                await asked.wait()
                assert seen == []  # the twin waits for the limiter
                assert limiter.statistics().tasks_waiting == 1
            await svc.idle.wait()
        assert seen == ["when does the train to paris leave"]
        assert (await svc.status())["messages_learned"] >= 1 and svc.actions_note is None
        n.cancel_scope.cancel()


async def test_status_says_a_set_aside_state_file_is_there_after_restarts(tmp_path: Path) -> None:
    """A file this node cannot read (here a newer format, as after a downgrade) is set aside once; every later
    status, after any restart, still says it is there (how many, bytes, age), until forget deletes it."""
    newer = b"AVTS" + (3).to_bytes(2, "big") + bytes(8) + b"what a newer node learned"
    twin_dir = tmp_path / "twin"
    twin_dir.mkdir(mode=0o700)
    (twin_dir / "state.bin").write_bytes(newer)
    (twin_dir / "state.bin").chmod(0o600)
    power = Power(90, True)
    svc = make(tmp_path, power)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        st = await svc.status()
        assert "format version 3" in st["load_error"] and st["set_aside"]["count"] == 1, st
        n.cancel_scope.cancel()
    for _ in range(2):  # restarts: the load error is over, the file set aside is still said
        again = make(tmp_path, power)
        async with trio.open_nursery() as n:
            await n.start(again.run, None)
            again.record("command", "", action="node.status")
            await again.idle.wait()
            assert await again.save_now() > 0
            st = await again.status()
            assert st["load_error"] is None
            assert st["set_aside"] == {
                "count": 1,
                "bytes": len(newer),
                "files": [
                    {"name": "state.bin.bad", "bytes": len(newer), "age_s": st["set_aside"]["files"][0]["age_s"]}
                ],
            }
            assert 0 <= st["set_aside"]["files"][0]["age_s"] < 3600
            n.cancel_scope.cancel()
    last = make(tmp_path, power)
    async with trio.open_nursery() as n:
        await n.start(last.run, None)
        await last.forget()
        assert (await last.status())["set_aside"] is None and not (twin_dir / "state.bin.bad").exists()
        n.cancel_scope.cancel()
