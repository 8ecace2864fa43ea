"""Remote dispatch: the King asks an agent on another node over the encrypted app channel — capabilities signed
by the node, only advertised agents served, read-only tools over shared documents only, personal data held
back, bounded, traced and audited — on an in-process mesh of three real nodes."""

from __future__ import annotations

import dataclasses
import functools
import json
import types
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio
from trio.testing import MockClock

from node.agents.errors import AgentError
from node.agents.remote import (
    ASK_SERVICE,
    CAPS_NAMESPACE,
    CAPS_PUSH_SERVICE,
    CAPS_TTL_MS,
    MAX_CAPS_PEERS,
    PUSH_BURST,
    PUSH_CONCURRENCY,
    PUSH_TIMEOUT_S,
    CapsCache,
    PeerBuckets,
    _canonical,
    answer_from_untrusted,
    caps_from_untrusted,
    encode_request,
    request_from_untrusted,
    sign_caps,
)
from node.agents.remote_service import RemoteAgents
from node.agents.roster import load_roster
from node.agents.service import AgentsService
from node.agents.settings import AgentsSettings, LlmSettings
from node.agents.trace import Trace, TraceStore
from node.rag.plugin import rag_service
from node.routing.app import AppRemoteError, AppTimeout
from node.transports.memory import MemoryNetwork
from node.twin.ask import OWNER, Access
from node.twin.ask import ask as twin_ask
from node.twin.errors import AskError
from node.wire.errors import MalformedFrame
from tools.inprocess import start_node

CANARY = "CANARY-7731"


def test_capabilities_are_signed_for_one_peer_and_expire() -> None:
    key = nacl.signing.SigningKey(b"k" * 32)
    pub = bytes(key.verify_key)
    specs = [load_roster().get("Sage")]
    body = sign_caps(key, "aa" * 8, specs, 1_000_000)
    caps = caps_from_untrusted(body, pub, "aa" * 8, 1_000_000)
    assert caps.names() == ["Sage"]
    doc = json.loads(body)
    doc["doc"]["agents"].append(["Coordinator", "sends messages"])  # a relay adding an agent
    with pytest.raises(MalformedFrame, match="BadSignatureError"):
        caps_from_untrusted(json.dumps(doc).encode(), pub, "aa" * 8, 1_000_000)
    with pytest.raises(MalformedFrame, match="another peer"):
        caps_from_untrusted(body, pub, "bb" * 8, 1_000_000)
    with pytest.raises(MalformedFrame, match="expired"):
        caps_from_untrusted(body, pub, "aa" * 8, 1_000_000 + 3_600_000)
    other = bytes(nacl.signing.SigningKey(b"o" * 32).verify_key)
    with pytest.raises(MalformedFrame):
        caps_from_untrusted(body, other, "aa" * 8, 1_000_000)
    with pytest.raises(MalformedFrame, match="too large"):
        caps_from_untrusted(b" " * 9000, pub, "aa" * 8, 0)


def test_requests_are_bounded() -> None:
    assert request_from_untrusted(encode_request("Sage", "hello")) == ("Sage", "hello")
    for bad in (b"x" * 5000, b"{}", b"[1]", encode_request("Sage", ""), encode_request("Sage", "x" * 1001)):
        with pytest.raises(MalformedFrame):
            request_from_untrusted(bad)


@pytest.mark.timeout(300)
async def test_the_king_dispatches_to_an_agent_on_another_node(tmp_path: Path) -> None:
    with trio.fail_after(280):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=11, queue_frames=4096)
            await nursery.start(net.run)
            off = LlmSettings(backend="off")
            a_svc = AgentsService(AgentsSettings(), off, tmp_path / "alice")
            b_svc = AgentsService(AgentsSettings(remote_max_concurrent=1), off, tmp_path / "bob")
            c_svc = AgentsService(dataclasses.replace(AgentsSettings(), remote_agents=()), off, tmp_path / "carol")
            alice = await start_node(nursery, net, tmp_path, "alice", 1, services=[a_svc])
            bob = await start_node(nursery, net, tmp_path, "bob", 2, services=[b_svc])
            carol = await start_node(nursery, net, tmp_path, "carol", 3, services=[c_svc])
            net.connect(alice.transports[0], bob.transports[0])  # type: ignore[arg-type]
            net.connect(alice.transports[0], carol.transports[0])  # type: ignore[arg-type]
            for who in ("bob", "carol"):
                await alice.wait_until(
                    functools.partial(
                        lambda w: any(p["nickname"] == w and p["reachable"] for p in alice.peers_view()), who
                    )
                )
            rag = rag_service(bob)
            assert rag is not None
            await rag.add_text(
                "file:///docs/pump.txt", "Pump guide: replace the pump washer every spring.", title="Pump", shared=True
            )
            await rag.add_text(
                "file:///docs/pump-notes.txt",
                f"My private pump notes {CANARY}: the pump washer cost me a lot, spring washer pump.",
                title="notes",
            )

            # Sage on bob answers alice's King from bob's shared documents only.
            r = await a_svc.ask("what does the pump guide say about the washer", agent="Sage@bob")
            step = r["steps"][0]
            assert step["agent"] == "Sage@bob" and step["ok"] and step["remote"] == bob.identity.peer_id_hex
            assert [s["source"] for s in step["sources"]] == ["file:///docs/pump.txt"]
            assert CANARY not in json.dumps(r)
            # Traced on both sides; audited on bob's registry as the remote caller's agent.
            mine = await a_svc.trace(r["id"])
            assert mine is not None and any(s["kind"] == "remote" for s in mine["steps"])
            assert b_svc.traces is not None
            theirs = await b_svc.trace(b_svc.traces.recent(1)[0]["id"])
            assert theirs is not None and theirs["caller"] == alice.identity.peer_id_hex
            assert any(s["kind"] == "remote" and alice.identity.peer_id_hex in s["detail"] for s in theirs["steps"])
            assert b_svc.registry is not None and b_svc.registry.audit is not None
            last = b_svc.registry.audit.last
            assert last is not None and last["client"] == f"Sage@{alice.identity.peer_id_hex}" and last["ok"]
            assert b_svc.remote is not None and b_svc.remote.counters["served"] == 1

            # `village ask --agent Sage@bob` (the twin's entry point) routes to the same remote dispatch, as typed.
            r2 = await twin_ask(alice, "what does the pump guide say", access=Access(OWNER), agent="sage@bob")
            assert r2["via"] == "agents" and r2["steps"][0]["agent"] == "Sage@bob" and r2["steps"][0]["ok"]
            assert b_svc.traces.recent(1)[0]["request"] == "what does the pump guide say"
            with pytest.raises(AskError, match="AGENT@PEER"):
                await twin_ask(alice, "hi", access=Access(OWNER), agent="Sage@")

            # Only advertised agents: refused by alice's King from bob's signed capabilities, and by bob itself.
            with pytest.raises(AgentError, match="does not offer Coordinator"):
                await a_svc.ask("tell carol hello", agent="Coordinator@bob")
            with pytest.raises(AppRemoteError, match="not offered"):
                await alice.app_request(
                    bob.identity.peer_id, ASK_SERVICE, encode_request("Coordinator", "tell carol hi"), timeout_s=30
                )
            assert not bob.outgoing and b_svc.remote.counters["refused"] == 1
            with pytest.raises(AgentError, match="offers no agents"):
                await a_svc.ask("what is compost", agent="Sage@carol")

            # Personal data never leaves: held back before any request is made.
            assert a_svc.remote is not None
            asked = a_svc.remote.counters["asked"]
            with pytest.raises(AgentError, match="not sent to bob: it involves personal data"):
                await a_svc.ask("what does my diary say about my health", agent="Sage@bob")
            assert a_svc.remote.counters["asked"] == asked and b_svc.remote.counters["served"] == 2

            # Hostile input costs the sender: oversize or malformed bodies are refused and counted.
            with pytest.raises(AppRemoteError):
                await alice.app_request(bob.identity.peer_id, ASK_SERVICE, b"{" * 4500, timeout_s=30)
            assert b_svc.remote.counters["malformed"] == 1
            # Bounded concurrency: with bob's one remote slot taken, the next request is answered busy.
            b_svc.remote.running = 1
            with pytest.raises(AgentError, match="busy"):
                await a_svc.ask("what does the pump guide say", agent="Sage@bob")
            b_svc.remote.running = 0
            assert b_svc.remote.counters["busy"] == 1
            # One peer's share: one request at a time, and a token bucket (here emptied).
            b_svc.remote.running_per_peer[alice.identity.peer_id] = 1
            with pytest.raises(AgentError, match="busy"):
                await a_svc.ask("what does the pump guide say", agent="Sage@bob")
            del b_svc.remote.running_per_peer[alice.identity.peer_id]
            b_svc.remote.buckets = PeerBuckets(rate_per_s=0.0, burst=0)
            with pytest.raises(AgentError, match="rate limited"):
                await a_svc.ask("what does the pump guide say", agent="Sage@bob")
            assert b_svc.remote.counters["rate_limited"] == 1 and b_svc.remote.counters["served"] == 2
            nursery.cancel_scope.cancel()


async def test_a_caller_with_narrowed_tools_cannot_dispatch_to_another_node(tmp_path: Path) -> None:
    """A gateway caller's ask reaches the agents with its tools narrowed (node.twin.ask.RemoteTools); it must not be
    able to make this node ask another node's agent on its behalf — remote dispatch is the owner's."""
    svc = AgentsService(AgentsSettings(), LlmSettings(backend="off"), tmp_path)
    with pytest.raises(AgentError, match="owner only"):
        await svc.ask("what is the weather", agent="Sage@bob", tools=lambda inner: inner)
    with pytest.raises(AgentError, match="not running"):  # the owner gets past the check (and the service is not up)
        await svc.ask("what is the weather", agent="Sage@bob")


def test_one_peer_has_a_bounded_share_of_the_serving_side() -> None:
    b = PeerBuckets(rate_per_s=0.5, burst=3, max_peers=4)
    mallory, bob = b"\x01" * 8, b"\x02" * 8
    assert [b.take(mallory, 0.0) for _ in range(4)] == [True, True, True, False]  # the burst, then refused
    assert b.take(bob, 0.0)  # another peer keeps its own bucket
    assert not b.take(mallory, 1.0) and b.take(mallory, 3.0)  # refills at 0.5/s
    for i in range(10):  # free identities cannot grow the table
        b.take(bytes([9, i]) * 4, 3.0)
    assert len(b) == 4


def test_remote_served_traces_never_evict_the_owners() -> None:
    store = TraceStore(None, max_traces=3, max_remote_per_peer=2, max_remote=5)
    store.save(Trace("own1", "owner: what did I ask yesterday", 1))
    for i in range(40):  # a peer (with many identities) flooding agents.ask
        store.save(Trace(f"r{i}", f"remote {i}", 2 + i, caller=f"{i % 8:016x}"))
    rows = store.recent(100)
    assert "own1" in [r["id"] for r in rows]
    assert len(rows) == 1 + 5  # the owner's one, and at most max_remote served ones
    mine = [r for r in rows if r["id"] != "own1"]
    assert [r["id"] for r in mine] == [f"r{i}" for i in range(39, 34, -1)]
    for i in range(3):
        store.save(Trace(f"peer-a-{i}", "x", 100 + i, caller="aa" * 8))
    assert {r["id"] for r in store.recent(100)} >= {"own1", "peer-a-1", "peer-a-2"}
    assert store.get("peer-a-0") is None  # per-peer bound: 2
    for i in range(4):
        store.save(Trace(f"own{i + 2}", "mine", 200 + i))
    ids = [r["id"] for r in store.recent(100)]
    assert "own1" not in ids and {"own3", "own4", "own5"} <= set(ids)  # the owner's own bound: 3
    assert store.get("peer-a-2") is not None and store.get("peer-a-2")["caller"] == "aa" * 8  # type: ignore[index]


def _signed_caps(key: nacl.signing.SigningKey, doc: dict[str, object]) -> bytes:
    sig = key.sign(CAPS_NAMESPACE + _canonical(doc)).signature
    return _canonical({"v": 1, "doc": doc, "sig": sig.hex()})


def test_hostile_json_is_a_malformed_frame() -> None:
    deep = b"[" * 1999 + b"]" * 1999  # RecursionError inside json.loads
    for parse in (request_from_untrusted, answer_from_untrusted):
        with pytest.raises(MalformedFrame):
            parse(deep)
        with pytest.raises(MalformedFrame):
            parse(b'{"v": 1, "agent": "Sage", "request": "hi", "text": "x", "ok": NaN, "sources": []}')
    with pytest.raises(MalformedFrame):
        answer_from_untrusted(b" " * 70_000)
    key = nacl.signing.SigningKey(b"m" * 32)
    pub = bytes(key.verify_key)
    with pytest.raises(MalformedFrame):
        caps_from_untrusted(deep, pub, "aa" * 8, 1000)
    for expires in (float("inf"), 1e30, True, "9999999999999"):
        body = _signed_caps(
            key, {"peer": "aa" * 8, "agents": [["Sage", "x"]], "issued_ms": 1000, "expires_ms": expires}
        )
        with pytest.raises(MalformedFrame):
            caps_from_untrusted(body, pub, "aa" * 8, 1000)
    # A validly signed expiry far in the future is kept only CAPS_TTL_MS from now.
    body = _signed_caps(key, {"peer": "aa" * 8, "agents": [["Sage", "x"]], "issued_ms": 1000, "expires_ms": 10**15})
    caps = caps_from_untrusted(body, pub, "aa" * 8, 1000)
    assert caps.expires_ms == 1000 + CAPS_TTL_MS
    cache = CapsCache()
    cache.put(caps)
    assert cache.get("aa" * 8, 1000 + CAPS_TTL_MS) is None


@pytest.mark.timeout(300)
async def test_capabilities_are_pushed_when_a_link_comes_up_and_forgeries_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(280):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=12, queue_frames=4096)
            await nursery.start(net.run)
            off = LlmSettings(backend="off")
            none = dataclasses.replace(AgentsSettings(), remote_agents=())
            a_svc = AgentsService(AgentsSettings(), off, tmp_path / "alice")  # serves Sage, Medic, ...
            b_svc = AgentsService(none, off, tmp_path / "bob")
            c_svc = AgentsService(none, off, tmp_path / "carol")
            alice = await start_node(nursery, net, tmp_path, "alice", 1, services=[a_svc])
            bob = await start_node(nursery, net, tmp_path, "bob", 2, services=[b_svc])
            carol = await start_node(nursery, net, tmp_path, "carol", 3, services=[c_svc])
            assert a_svc.remote is not None and b_svc.remote is not None and c_svc.remote is not None
            a_hex = alice.identity.peer_id_hex

            # bob never asks: alice's signed capabilities arrive once the link is up and alice can reach bob.
            net.connect(alice.transports[0], bob.transports[0])  # type: ignore[arg-type]
            await bob.wait_until(lambda: b_svc.remote.caps.get(a_hex, bob.clock.wall_ms()) is not None)  # type: ignore[union-attr]
            caps = b_svc.remote.caps.get(a_hex, bob.clock.wall_ms())
            assert caps is not None and "Sage" in caps.names() and "Coordinator" not in caps.names()
            await alice.wait_until(lambda: a_svc.remote.counters["caps_pushed"] >= 1)  # type: ignore[union-attr]
            assert b_svc.remote.counters["caps_push_received"] == 1
            assert b_svc.remote.counters["caps_push_refused"] == 0
            assert c_svc.remote.counters["caps_pushed"] == 0  # offers nothing, pushes nothing
            # a second pass does not push again while bob's copy is fresh
            assert await a_svc.remote.push_caps() == 0

            # carol replays alice's signed capabilities to bob as her own: refused (signed for another peer).
            net.connect(bob.transports[0], carol.transports[0])  # type: ignore[arg-type]
            await carol.wait_until(lambda: any(p["nickname"] == "bob" and p["reachable"] for p in carol.peers_view()))
            stolen = sign_caps(alice.identity.signing_key, a_hex, [load_roster().get("Sage")], alice.clock.wall_ms())
            with pytest.raises(AppRemoteError, match="BadSignature"):
                await carol.app_request(bob.identity.peer_id, CAPS_PUSH_SERVICE, stolen, timeout_s=30)
            assert b_svc.remote.caps.get(carol.identity.peer_id_hex, bob.clock.wall_ms()) is None
            # her own key but a forged agent list edited after signing, and junk: refused; then rate limited.
            mine = json.loads(
                sign_caps(carol.identity.signing_key, carol.identity.peer_id_hex, [], carol.clock.wall_ms())
            )
            mine["doc"]["agents"] = [["Coordinator", "sends messages"]]
            with pytest.raises(AppRemoteError, match="BadSignature"):
                await carol.app_request(
                    bob.identity.peer_id, CAPS_PUSH_SERVICE, json.dumps(mine).encode(), timeout_s=30
                )
            assert PUSH_BURST == 3
            with pytest.raises(AppRemoteError, match="too large"):
                await carol.app_request(bob.identity.peer_id, CAPS_PUSH_SERVICE, b"[" * 9000, timeout_s=30)
            with pytest.raises(AppRemoteError, match="rate limited"):
                await carol.app_request(bob.identity.peer_id, CAPS_PUSH_SERVICE, stolen, timeout_s=30)
            assert b_svc.remote.counters["caps_push_refused"] == 4
            assert b_svc.remote.caps.get(carol.identity.peer_id_hex, bob.clock.wall_ms()) is None
            assert b_svc.remote.caps.get(a_hex, bob.clock.wall_ms()) is not None  # alice's copy untouched
            nursery.cancel_scope.cancel()


class _PushClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def wall_ms(self) -> int:
        return int(self.t * 1000)


def _push_node(n_peers: int, app_request: Any) -> Any:
    peers = [types.SimpleNamespace(peer_id=i.to_bytes(8, "big")) for i in range(n_peers)]
    core = types.SimpleNamespace(peers=peers, is_reachable=lambda p, now: True)
    key = nacl.signing.SigningKey(b"p" * 32)
    ident = types.SimpleNamespace(signing_key=key, peer_id_hex="ab" * 8)
    return types.SimpleNamespace(core=core, clock=_PushClock(), app_request=app_request, identity=ident)


def test_more_reachable_peers_than_one_pass_are_each_pushed_once_per_half_lifetime() -> None:
    """Review (cleanup_agents 4): the "already pushed" map was cut to MAX_CAPS_PEERS, so with 100 reachable peers
    every pass pushed to 36-64 of them again, every minute, forever."""
    sent: list[bytes] = []

    async def app_request(peer: bytes, service: str, body: bytes, timeout_s: float) -> bytes:
        sent.append(peer)
        return b"{}"

    node = _push_node(100, app_request)
    ra = RemoteAgents(node, load_roster(), AgentsSettings(), king=None, runner=None, traces=None, db_limiter=None)  # type: ignore[arg-type]

    async def main() -> list[int]:
        per_pass = []
        for _ in range(10):  # ten passes a minute apart: well within half the copies' lifetime
            sent.clear()
            await ra.push_caps()
            per_pass.append(len(sent))
            node.clock.t += 60
        return per_pass

    per_pass = trio.run(main)
    assert per_pass == [MAX_CAPS_PEERS, 100 - MAX_CAPS_PEERS] + [0] * 8
    node.core.peers = node.core.peers[:10]  # peers that left the table are forgotten: the map stays bounded by it
    trio.run(ra.push_caps)
    assert set(ra.pushed) == {p.peer_id for p in node.core.peers}


def test_a_pass_over_peers_that_never_answer_is_not_held_for_each_in_turn() -> None:
    async def app_request(peer: bytes, service: str, body: bytes, timeout_s: float) -> bytes:
        await trio.sleep(timeout_s)
        raise AppTimeout("no answer")

    node = _push_node(MAX_CAPS_PEERS, app_request)
    ra = RemoteAgents(node, load_roster(), AgentsSettings(), king=None, runner=None, traces=None, db_limiter=None)  # type: ignore[arg-type]

    async def main() -> float:
        start = trio.current_time()
        assert await ra.push_caps() == 0
        return trio.current_time() - start

    took_s = trio.run(main, clock=MockClock(autojump_threshold=0))
    assert ra.counters["caps_push_failed"] == MAX_CAPS_PEERS
    # (virtual time) one after another this took MAX_CAPS_PEERS x PUSH_TIMEOUT_S = 640 s
    assert took_s == MAX_CAPS_PEERS / PUSH_CONCURRENCY * PUSH_TIMEOUT_S
