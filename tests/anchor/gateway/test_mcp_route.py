"""/mcp on the anchor gateway: the node's MCP tools for remote clients behind the gateway's auth (401 without a
token, 403 without any scope opening a tool, each tool behind its own scope), over mcp.Client in both eras."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import trio

from anchor.gateway.mcp_route import SCOPE_MAP
from anchor.mcp_memory import BoltMemoryStorage
from anchor.services_settings import ServiceSettings
from node.mcp.audit import args_digest
from node.mcp.graph import KnowledgeGraph
from node.mcp.registry import Caller
from node.mcp.service import McpService
from node.rag.plugin import rag_service
from node.rag.settings import RagSection
from tests.anchor.gateway.conftest import Gateway, StartGateway
from tests.mcp.helpers import http_client, mcp_settings, text_of


async def with_mcp(start_gateway: StartGateway, nursery: trio.Nursery) -> Gateway:
    gateway = await start_gateway()
    service = McpService(mcp_settings(), persistent=False)
    await nursery.start(service.run, gateway.node)
    gateway.node.services.append(service)  # what the composition root does for a configured node
    return gateway


async def test_mcp_needs_a_token_with_a_tool_scope(start_gateway: StartGateway, nursery: trio.Nursery) -> None:
    gateway = await with_mcp(start_gateway, nursery)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        r = await client.post("/mcp", json=body)
        assert r.status_code == 401
        _, secret = await gateway.key("admin", frozenset({"mailbox:read"}))
        token = await gateway.token(client, secret)
        r = await client.post("/mcp", json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and "no scope that opens an MCP tool" in r.text


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_each_tool_requires_its_scope(start_gateway: StartGateway, nursery: trio.Nursery, mode: str) -> None:
    gateway = await with_mcp(start_gateway, nursery)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _, secret = await gateway.key("user", frozenset({"node:read"}))
        token = await gateway.token(client, secret)
    async with http_client(gateway.url + "/mcp", token, mode=mode) as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        assert names == {"node_status", "peers_list", "routes_list"}
        peers = await mcp.call_tool("peers_list", {})
        assert not peers.is_error and peers.structured_content == {"peers": []}
        refused = await mcp.call_tool("messages_send", {"peer": "x", "text": "hi"})
        assert refused.is_error and "messages:send" in text_of(refused)
        memory = await mcp.call_tool("read_graph", {})
        assert memory.is_error and "memory:read" in text_of(memory)


async def test_node_role_never_reads_the_inbox(start_gateway: StartGateway, nursery: trio.Nursery) -> None:
    """Role node (other villages' mailbox key: messages:send, no events:read) is refused the inbox over REST and
    must be over /mcp too: inbox_list and node://inbox are behind events:read; messages_status stays open."""
    gateway = await with_mcp(start_gateway, nursery)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _, secret = await gateway.key("node", None)
        token = await gateway.token(client, secret)
        _, user_secret = await gateway.key("user", None)
        user_token = await gateway.token(client, user_secret)
    async with http_client(gateway.url + "/mcp", token, mode="legacy") as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        assert "inbox_list" not in names and {"messages_send", "messages_status"} <= names
        refused = await mcp.call_tool("inbox_list", {})
        assert refused.is_error and "messages:read" in text_of(refused)
        uris = {str(r.uri) for r in (await mcp.list_resources()).resources}
        assert "node://inbox" not in uris
        with pytest.raises(Exception, match="messages:read"):
            await mcp.read_resource("node://inbox")
        status = await mcp.call_tool("messages_status", {"id": "0" * 32})
        assert "messages:status" not in text_of(status)
    async with http_client(gateway.url + "/mcp", user_token, mode="legacy") as mcp:  # events:read opens it
        inbox = await mcp.call_tool("inbox_list", {})
        assert not inbox.is_error and inbox.structured_content == {"messages": []}


async def test_rag_query_over_mcp_is_shared_only_without_rag_private(
    start_gateway: StartGateway, nursery: trio.Nursery
) -> None:
    gateway = await start_gateway(rag=RagSection(mode="bm25"))
    service = McpService(mcp_settings(), persistent=False)
    await nursery.start(service.run, gateway.node)
    gateway.node.services.append(service)
    rag = rag_service(gateway.node)
    assert rag is not None
    await rag.add_text("note:garden", "My garden diary: tomatoes planted", title="garden", shared=True)
    await rag.add_text("note:diary", "My private diary: the door code is 4921", title="diary")
    for role, scopes, want in (
        ("user", None, ["note:garden"]),
        ("admin", frozenset({"rag:query", "rag:private"}), ["note:diary", "note:garden"]),
    ):
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            _, secret = await gateway.key(role, scopes)
            token = await gateway.token(client, secret)
        async with http_client(gateway.url + "/mcp", token, mode="legacy") as mcp:
            out = await mcp.call_tool("rag_query", {"text": "diary", "k": 5})
            assert not out.is_error, text_of(out)
            assert out.structured_content is not None
            assert sorted(h["source"] for h in out.structured_content["results"]) == want, role


async def test_state_changing_calls_are_audited_in_postgresql_before_they_run(
    start_gateway: StartGateway, nursery: trio.Nursery
) -> None:
    """A state-changing tool through /mcp writes its row (actor key:<id>, action mcp.<tool>, arguments hashed)
    before it runs; a read writes none (as over REST). With PostgreSQL cut off the tool does not run."""
    gateway = await with_mcp(start_gateway, nursery)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        key_id, secret = await gateway.key("user", frozenset({"messages:send", "node:read"}))
        token = await gateway.token(client, secret)
    args = {"text": "the audited broadcast"}
    async with http_client(gateway.url + "/mcp", token, mode="legacy") as mcp:
        sent = await mcp.call_tool("messages_broadcast", args)
        assert not sent.is_error, text_of(sent)
        assert not (await mcp.call_tool("peers_list", {})).is_error
        rows = [r for r in await gateway.audit_of(key_id) if r.action.startswith("mcp.")]
        assert [(r.action, r.target) for r in rows] == [("mcp.messages_broadcast", "mcp")]
        digest, size = args_digest(args)
        assert rows[0].detail == {"args_sha256": digest, "args_bytes": size}
        assert "audited broadcast" not in json.dumps(rows[0].detail)
        assert [m.text for m in gateway.node.outgoing.values()] == ["the audited broadcast"]

        gateway.pg_proxy.down()
        try:
            refused = await mcp.call_tool("messages_broadcast", {"text": "never sent"})
            assert refused.is_error and "was not run" in text_of(refused) and "audit" in text_of(refused)
            assert not (await mcp.call_tool("peers_list", {})).is_error  # reads need no audit row
        finally:
            await gateway.pg_proxy.up()
        assert [m.text for m in gateway.node.outgoing.values()] == ["the audited broadcast"]
        assert [r.action for r in await gateway.audit_of(key_id) if r.action.startswith("mcp.")] == [
            "mcp.messages_broadcast"
        ]


async def _rpc(http: httpx.AsyncClient, token: str, sid: str | None, method: str, params: dict[str, Any]) -> Any:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    if sid is not None:
        headers["Mcp-Session-Id"] = sid
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if not method.startswith("notifications/"):
        body["id"] = 1
    r = await http.post("/mcp", json=body, headers=headers)
    assert r.status_code in (200, 202), r.text
    if method == "initialize":
        return r.headers["mcp-session-id"]
    if r.status_code == 202:
        return None
    data = [line[5:] for line in r.text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1] if data else r.text)["result"]


async def _session(http: httpx.AsyncClient, token: str) -> str:
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    sid: str = await _rpc(http, token, None, "initialize", init)
    await _rpc(http, token, sid, "notifications/initialized", {})
    return sid


async def test_scratch_is_per_key_and_session_even_when_a_session_id_is_presented_by_another_key(
    start_gateway: StartGateway, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Working memory is keyed by the authenticated key plus the session: key B presenting key A's session id
    reaches B's own (empty) scratch, and A's second session does not see its first. (No gateway scope opens
    scratch today; this test opens it with node:read to check the namespace a future scope would get.)"""
    monkeypatch.setitem(SCOPE_MAP, "node:read", SCOPE_MAP["node:read"] | {"memory:scratch"})
    gateway = await with_mcp(start_gateway, nursery)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30.0) as http:
        tokens = []
        for _ in range(2):
            _, secret = await gateway.key("user", frozenset({"node:read"}))
            tokens.append(await gateway.token(http, secret))
        a, b = tokens
        sid_a = await _session(http, a)

        async def call(token: str, sid: str, tool: str, args: dict[str, Any]) -> Any:
            result = await _rpc(http, token, sid, "tools/call", {"name": tool, "arguments": args})
            assert not result.get("isError"), result
            return result["structuredContent"]

        await call(a, sid_a, "scratch_set", {"key": "plan", "value": "A's secret plan"})
        assert (await call(a, sid_a, "scratch_get", {"key": "plan"}))["value"] == "A's secret plan"
        assert (await call(b, sid_a, "scratch_get", {"key": "plan"}))["found"] is False  # B with A's session id
        assert (await call(b, sid_a, "scratch_list", {}))["keys"] == []
        sid_a2 = await _session(http, a)
        assert (await call(a, sid_a2, "scratch_get", {"key": "plan"}))["found"] is False  # A's other session


def _ent(name: str, etype: str = "person", *obs: str) -> dict[str, object]:
    return {"name": name, "entityType": etype, "observations": list(obs)}


def _rel(a: str, b: str, t: str = "knows") -> dict[str, str]:
    return {"from": a, "to": b, "relationType": t}


async def test_an_anchors_mcp_memory_lives_in_the_graph_store(
    start_gateway: StartGateway, nursery: trio.Nursery, services: ServiceSettings
) -> None:
    gateway = await start_gateway(mcp_memory="graph")
    service = McpService(mcp_settings())  # persistent: the node's own data dir
    await nursery.start(service.run, gateway.node)
    assert service.registry is not None and service.graph is not None
    me = Caller("local", "test")
    await service.registry.call("create_entities", {"entities": [_ent("Ada", "person", "x")]}, caller=me)
    await service.registry.call("create_relations", {"relations": [_rel("Ada", "Bob")]}, caller=me)
    assert (await service.graph.run("stats"))["backend"] == "bolt"
    assert not (gateway.cfg.data_dir / "mcp" / "memory.sqlite3").exists()  # nothing in the local file
    ns = f"mcp:{gateway.node.identity.peer_id_hex}"

    def load(ns: str) -> KnowledgeGraph:  # what a fresh load of the server holds
        key = (gateway.cfg.data_dir / "anchor" / "mcp-memory.key").read_bytes()
        return KnowledgeGraph(BoltMemoryStorage(services.graph.bolt_url, namespace=ns, key=key), mcp_settings())

    on_server = await trio.to_thread.run_sync(lambda: load(ns))
    assert on_server.read_graph() == {"entities": [_ent("Ada", "person", "x")], "relations": [_rel("Ada", "Bob")]}
    exported = await service.export()  # what `village memory export` returns (memory.export)
    assert exported["knowledge_graph"] == on_server.read_graph()
    assert (await service.forget())["knowledge_graph"] == {"entities": 1, "relations": 1}  # `village memory forget`
    reloaded = await trio.to_thread.run_sync(lambda: load(ns))
    assert reloaded.read_graph() == {"entities": [], "relations": []}
    on_server.close()
    reloaded.close()


async def test_forget_erases_the_copy_in_the_other_store_and_a_stale_copy_is_warned_about(
    start_gateway: StartGateway, nursery: trio.Nursery, services: ServiceSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """With the memory local (the default), rows of this node's namespace left on the graph server by an earlier
    ``mcp_memory = "graph"`` are warned about at start and erased by `village memory forget` with the local file;
    export names the store it exported and carries the other store's copy under ``other``."""
    gateway = await start_gateway()
    ns = f"mcp:{gateway.node.identity.peer_id_hex}"
    key = bytes(range(1, 33))
    key_file = gateway.cfg.data_dir / "anchor" / "mcp-memory.key"  # the key the earlier setting made
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    stale = BoltMemoryStorage(services.graph.bolt_url, namespace=ns, key=key)
    await trio.to_thread.run_sync(KnowledgeGraph(stale, mcp_settings()).create_entities, [_ent("Old", "x", "left")])
    service = McpService(mcp_settings())
    with caplog.at_level(logging.WARNING, logger="village.mcp"):
        await nursery.start(service.run, gateway.node)
        assert service.registry is not None and service.graph is not None
        with trio.fail_after(20):
            await service.stale_checked.wait()
    assert "the bolt store still holds 1 rows" in caplog.text
    await service.registry.call("create_entities", {"entities": [_ent("Ada")]}, caller=Caller("local", "t"))
    exported = await service.export()
    assert exported["store"] == "sqlite" and exported["knowledge_graph"]["entities"] == [_ent("Ada")]
    assert exported["other"] == {  # review leftover: export covers the other store too
        "store": "bolt",
        "knowledge_graph": {"entities": [_ent("Old", "x", "left")], "relations": []},
        "refused": 0,
    }
    erased = await service.forget()
    assert erased["knowledge_graph"] == {"entities": 1, "relations": 0}
    assert erased["other"] == {"store": "bolt", "rows": 1}
    assert await trio.to_thread.run_sync(stale.count) == 0
    stale.close()
