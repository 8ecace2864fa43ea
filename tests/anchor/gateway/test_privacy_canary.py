"""Privacy proof (issue 15): canaries planted in a node's private documents and in its twin's personal text never
leave the node — not in a frame any transport is handed, not in the bytes on the wire, not in a Noise plaintext
the mesh encrypts, not in a gateway response to a key without the owner's scopes, not in a log line.

Node A is the user's node and an anchor (real gateway, real PostgreSQL/Redis), with three transports:
a memory link to B, BetaNet (libp2p over loopback TCP, Noise) to C through a recording TCP proxy, and BLE over
Bumble virtual radios to D. On A: the twin learns (the user's messages and a typed text with a canary, a document
whose title is a canary), ``ask`` runs (owner and gateway keys; agents and personal context), RAG searches
private (unshared) documents holding a canary, and federated queries run both ways across all four nodes.

What is captured, every byte of every node (a canary is A's only, so any node's capture counts):
* ``Link.send`` of the memory, BetaNet and BLE links: the frames handed to each transport;
* the wire: the memory link's frames are its wire; BetaNet's TCP bytes both ways at the proxy; BLE's on-air
  writes (``BumbleAdapter.send``: the fragments, searched by overlapping windows so a canary split across two
  fragments is still found);
* A's mesh core's Noise plaintexts (``send_encrypted``): what A would send inside any encrypted channel;
* every gateway response to a key without ``twin:owner``/``rag:private`` (REST and /mcp);
* every log record (caplog at DEBUG) and the daemon's log handler writing to a file.

Positive controls prove each capture sees what it should: a public broadcast is found in the frames and on the
memory wire and BLE air, never in the encrypted TCP bytes; a private message's text is found in A's Noise
plaintexts, never in a frame; the owner's own gateway query does return the private canary.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import nacl.signing
import pytest
import trio
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from node.control.methods import build_registry
from node.identity import Identity, create_identity
from node.logs import install_log_handler
from node.node import Node
from node.rag import federated
from node.rag.plugin import PLUGIN as RAG_PLUGIN
from node.rag.plugin import rag_service
from node.rag.settings import RagSection
from node.settings import Config, NodeSection
from node.transports.betanet.link import BetanetLink
from node.transports.betanet.settings import BetanetSection
from node.transports.betanet.transport import BetanetTransport
from node.transports.ble.bumble_adapter import BumbleAdapter, BumbleWorld, open_bumble_world
from node.transports.ble.core import BleSettings
from node.transports.ble.transport import BleLink, BleTransport
from node.transports.memory import MemoryLink, MemoryNetwork
from node.twin.ask import OWNER, Access, ask
from node.twin.service import TwinService
from tests.anchor.gateway.conftest import StartGateway

pytestmark = pytest.mark.timeout(600)

WAIT_S = 120.0
WINDOW = 9  # a canary (18 chars) split in two anywhere keeps >= 9 contiguous characters on one side
LOOPBACK_TCP = BetanetSection(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, dial_timeout_s=10.0)


def canary(kind: str) -> str:
    return f"c{kind}{secrets.token_hex(8)}"  # lowercase: survives the twin's tokenizer unchanged


CANARY_DOC = canary("d")  # in an unshared document
CANARY_TWIN = canary("t")  # text the user typed (the twin's personal language model)
CANARY_TOPIC = canary("p")  # the title of a document the user added (the twin's recent topics)
CANARIES = (CANARY_DOC, CANARY_TWIN, CANARY_TOPIC)
PUBLIC_MARK = canary("b")  # control: a public broadcast (signed, not encrypted)
PRIVATE_MARK = canary("m")  # control: a private message (end-to-end encrypted)


def windows(needle: str) -> list[bytes]:
    return [needle[i : i + WINDOW].encode() for i in range(len(needle) - WINDOW + 1)]


def found(needle: str, haystacks: Iterable[bytes]) -> bool:
    parts = windows(needle)
    return any(p in h or p in h.lower() for h in haystacks for p in parts)


class Capture:
    def __init__(self) -> None:
        self.frames: dict[str, list[bytes]] = {"memory": [], "betanet": [], "ble": []}
        self.ble_air: list[bytes] = []
        self.tcp_wire: list[bytearray] = []
        self.plaintexts: list[bytes] = []
        self.http: list[bytes] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for cls, name in ((MemoryLink, "memory"), (BetanetLink, "betanet"), (BleLink, "ble")):
            original = cls.send

            async def send(self_: Any, frame: bytes, _orig: Any = original, _name: str = name) -> None:
                self.frames[_name].append(bytes(frame))
                await _orig(self_, frame)

            monkeypatch.setattr(cls, "send", send)
        air_send = BumbleAdapter.send

        async def on_air(self_: Any, conn_id: str, data: bytes) -> None:
            self.ble_air.append(bytes(data))
            await air_send(self_, conn_id, data)

        monkeypatch.setattr(BumbleAdapter, "send", on_air)

    def spy_plaintexts(self, node: Node) -> None:
        core = node.core
        assert core is not None
        original = core.delivery.send_encrypted

        def spy(peer_id: bytes, plaintext: bytes, now: float, **kw: Any) -> None:
            self.plaintexts.append(bytes(plaintext))
            original(peer_id, plaintext, now, **kw)

        core.delivery.send_encrypted = spy  # type: ignore[method-assign]

    def outside(self) -> dict[str, list[bytes]]:
        return {
            **{f"frames:{k}": v for k, v in self.frames.items()},
            "wire:memory": self.frames["memory"],
            "wire:ble-air": self.ble_air,
            "wire:betanet-tcp": [bytes(b) for b in self.tcp_wire],
            "noise-plaintexts:A": self.plaintexts,
            "gateway-responses": self.http,
        }


async def recording_proxy(nursery: trio.Nursery, target_port: int, sink: list[bytearray]) -> int:
    """A loopback TCP proxy to ``target_port`` recording the bytes of each direction of each connection."""

    async def handle(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", target_port)
        async with client, server, trio.open_nursery() as inner:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                buf = bytearray()
                sink.append(buf)
                try:
                    while data := await src.receive_some(65_536):
                        buf += data
                        await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                inner.cancel_scope.cancel()

            inner.start_soon(pump, client, server)
            inner.start_soon(pump, server, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return port


def peer_identity(i: int) -> Identity:
    rng = random.Random(500 + i)
    return Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))


async def start_peer(
    nursery: trio.Nursery, tmp: Path, name: str, transport: Any, ident: Identity, shared_doc: str
) -> Node:
    cfg = Config(data_dir=tmp / name, node=NodeSection(nickname=name), rag=RagSection(mode="bm25"))
    cfg.data_dir.mkdir(parents=True, mode=0o700)
    assert RAG_PLUGIN.services is not None
    node = Node(
        cfg,
        ident,
        transports=[transport],
        control=False,
        rng=random.Random(ord(name[0])),
        services=list(RAG_PLUGIN.services(cfg)),
    )
    await nursery.start(node.run)
    rag = rag_service(node)
    assert rag is not None
    await rag.add_text(f"note:{name}-well", shared_doc, title=f"{name} well notes", shared=True)
    return node


def ble(world: BumbleWorld, x_m: float) -> BleTransport:
    return BleTransport(BumbleAdapter(world, position=(x_m, 0.0)), BleSettings(rssi_min_dbm=-72, connect_backoff_s=1.0))


async def test_no_canary_leaves_the_node(
    start_gateway: StartGateway,
    nursery: trio.Nursery,
    short_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    log_path = short_tmp / "daemon.log"
    log_file = log_path.open("w", encoding="utf-8")
    handler = install_log_handler(logging.DEBUG, log_file)  # what `village run` writes to its log
    cap = Capture()
    cap.install(monkeypatch)
    try:
        await _scenario(start_gateway, nursery, short_tmp, cap)
    finally:
        logging.getLogger().removeHandler(handler)
        log_file.close()

    outside = cap.outside()
    outside["logs:caplog"] = [caplog.text.encode()] + [r.getMessage().encode() for r in caplog.records]
    outside["logs:file"] = [log_path.read_bytes()]
    assert all(
        outside[k] for k in ("frames:memory", "frames:betanet", "frames:ble", "wire:betanet-tcp", "wire:ble-air")
    )
    assert len(outside["gateway-responses"]) >= 8 and outside["logs:file"][0]

    leaks = [(c, where) for c in CANARIES for where, hay in outside.items() if found(c, hay)]
    assert leaks == [], leaks

    # Controls: each capture sees what it should see.
    assert found(PUBLIC_MARK, cap.frames["memory"]) and found(PUBLIC_MARK, cap.frames["betanet"])
    assert found(PUBLIC_MARK, cap.ble_air)
    assert not found(PUBLIC_MARK, outside["wire:betanet-tcp"])  # libp2p's Noise: nothing readable on the wire
    assert found(PRIVATE_MARK, cap.plaintexts)
    assert not any(found(PRIVATE_MARK, v) for k, v in outside.items() if k.startswith(("frames", "wire")))


async def _scenario(start_gateway: StartGateway, nursery: trio.Nursery, tmp: Path, cap: Capture) -> None:
    a_dir = tmp / "a"
    a_dir.mkdir(mode=0o700)
    a_id = create_identity(a_dir)
    net = MemoryNetwork(seed=9, queue_frames=4096)
    await nursery.start(net.run)
    async with open_bumble_world() as world, trio.open_nursery() as peers:
        mem_a, mem_b = net.transport("a"), net.transport("b")
        betanet_a = BetanetTransport(a_id, LOOPBACK_TCP)
        c_id = peer_identity(3)
        betanet_c = BetanetTransport(c_id, LOOPBACK_TCP)
        gateway = await start_gateway(
            transports=[mem_a, betanet_a, ble(world, 0.0)], data_dir=a_dir, rag=RagSection(mode="bm25")
        )
        a = gateway.node
        b = await start_peer(peers, tmp, "b", mem_b, peer_identity(2), "The east well water is clean and cold.")
        c = await start_peer(peers, tmp, "c", betanet_c, c_id, "The west well water tastes of iron.")
        d = await start_peer(peers, tmp, "d", ble(world, 3.0), peer_identity(4), "The north well water needs boiling.")
        net.connect(mem_a, mem_b)
        c_addr = betanet_c.listen_addresses()[0]
        c_port = int(c_addr.split("/tcp/")[1].split("/")[0])
        proxy_port = await recording_proxy(nursery, c_port, cap.tcp_wire)
        with trio.fail_after(WAIT_S):
            await a.connect(c_addr.replace(f"/tcp/{c_port}/", f"/tcp/{proxy_port}/"))
            for other in (b, c, d):
                await a.wait_until(
                    lambda o=other: any(  # type: ignore[misc]
                        p["peer_id"] == o.identity.peer_id_hex and p["reachable"] for p in a.peers_view()
                    )
                )
                await other.wait_until(
                    lambda o=other: any(  # type: ignore[misc]
                        p["peer_id"] == a.identity.peer_id_hex and p["reachable"] for p in o.peers_view()
                    )
                )
        cap.spy_plaintexts(a)

        # --- A's private data: an unshared document, a shared one, the twin's personal text and topics.
        rag_a = rag_service(a)
        assert rag_a is not None
        await rag_a.add_text(
            "file:///home/me/diary.txt",
            f"Diary: the safe combination is {CANARY_DOC}. The well is near.",
            title="diary",
        )
        await rag_a.add_text(f"file:///home/me/{CANARY_TOPIC}.txt", f"Plans for {CANARY_TOPIC}: grow beans.")
        await rag_a.add_text("note:a-well", "The south well water is fine after rain.", title="south well", shared=True)
        twin = a.service("twin")
        assert isinstance(twin, TwinService)
        await twin.ready.wait()
        observe = build_registry(a).socket_observers[0]  # what the control socket hands the twin
        reg = build_registry(a)
        send = reg.lookup("messages.send")
        mid = a.send_private(b.identity.peer_id_hex, f"meet at the well {PRIVATE_MARK}")
        observe("messages.send", reg.bind_params(send, {"peer": b.identity.peer_id_hex, "text": "meet at the well"}))
        observe("rag.add", reg.bind_params(reg.lookup("rag.add"), {"paths": [f"/home/me/{CANARY_TOPIC}.txt"]}))
        for _ in range(3):
            twin.record("message", f"my secret word is {CANARY_TWIN} remember it", action=None)
        await twin.wait_learned(5)
        ctx = await twin.context()
        assert CANARY_TOPIC in json.dumps(ctx) and CANARY_TWIN in json.dumps(await twin.export())
        a.broadcast(f"public notice {PUBLIC_MARK}")
        with trio.fail_after(WAIT_S):
            await a.wait_until(lambda: a.outgoing[mid].state == "delivered")

        # --- ask as the owner, on the node: personal context used locally (the answer stays here).
        r = await ask(a, f"tell {b.identity.peer_id_hex[:8]} that the beans are planted", access=Access(OWNER))
        assert r["via"] == "agents"
        r = await ask(a, "what does my diary say about the safe combination", access=Access(OWNER), agent="Sage")
        assert CANARY_DOC in r["answer"]  # the owner's own knowledge base, on the device
        hits = await rag_a.query("safe combination diary", k=5)
        assert any(CANARY_DOC in h.snippet for h in hits)

        # --- federated queries, both ways, over all three transports.
        out = await federated.mesh_query(a, rag_a, "well water", k=10)
        assert all(w in json.dumps(out) for w in ("east well", "west well", "north well")), out
        for peer in (b, c, d):
            rag_p = rag_service(peer)
            assert rag_p is not None
            answer = await federated.mesh_query(peer, rag_p, "diary safe combination well beans", k=10)
            text = json.dumps(answer)
            assert "south well" in text or "south" in text, text  # A answered with its shared document
            for cnr in CANARIES:
                assert cnr not in text
            for word in ("secret", "remember"):  # the twin's words are never part of an answer
                assert word not in text

        # --- the gateway: keys without the owner's scopes (every response captured), then the owner (control).
        async with httpx.AsyncClient(base_url=gateway.url, timeout=120.0) as client:

            async def keep(resp: httpx.Response) -> httpx.Response:
                cap.http.append(resp.content + json.dumps(dict(resp.headers)).encode())
                return resp

            _k, user_secret = await gateway.key("user")
            token = await gateway.token(client, user_secret)
            user = {"Authorization": f"Bearer {token}"}
            for body in (
                {"text": "what does my diary say about the safe combination"},
                {"text": "what does my diary say about the safe combination", "agent": "Sage"},
                {"text": "how long will it last?"},
                {"text": "show the audit log", "agent": "Auditor"},
                {"text": "show the recent requests", "agent": "Auditor"},
            ):
                await keep(await client.post("/v1/ask", headers=user, json=body))
            await keep(await client.post("/v1/rag/query", headers=user, json={"text": "safe combination diary"}))
            await keep(await client.post("/v1/twin/suggest", headers=user, json={"text": "my secret word is "}))
            await keep(await client.get("/v1/peers", headers=user))
            await keep(await client.get("/v1/node", headers=user))
            http = httpx2.AsyncClient(headers=user, timeout=120.0)
            async with Client(streamable_http_client(gateway.url + "/mcp", http_client=http)) as mcp_client:
                listed = await mcp_client.list_tools()
                cap.http.append(listed.model_dump_json().encode())
                for tool, args in (
                    ("ask", {"text": "what does my diary say about the safe combination"}),
                    ("ask", {"text": "where is the diary", "agent": "Sage"}),
                    ("rag_query", {"text": "safe combination diary"}),
                    ("twin_suggest", {"text": "my secret word is "}),
                    ("agents_trace", {}),
                ):
                    result = await mcp_client.call_tool(tool, args)
                    cap.http.append(result.model_dump_json().encode())

            _k, owner_secret = await gateway.key("admin", frozenset({"rag:query", "rag:private", "twin:owner"}))
            owner = {"Authorization": f"Bearer {await gateway.token(client, owner_secret)}"}
            resp = await client.post("/v1/rag/query", headers=owner, json={"text": "safe combination diary"})
            assert CANARY_DOC in resp.text  # control: the owner's key does see it (so the capture above could)
            resp = await client.post("/v1/twin/suggest", headers=owner, json={"text": "my secret word is "})
            assert CANARY_TWIN in resp.text
        # Stop every node on the virtual radios before the radios go (the peers' nursery then ends).
        for n in (a, b, c, d):
            n.request_stop()
        with trio.fail_after(WAIT_S):
            await gateway.stopped.wait()
