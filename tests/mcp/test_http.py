"""Streamable HTTP MCP served by a node on loopback: bearer token, both protocol eras, tools and resources."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx2
import pytest
import trio

from node.tokenfile import token_path
from tests.mcp.helpers import http_client, mcp_settings, start_node, text_of


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_lists_and_calls_tools_over_http(nursery: trio.Nursery, tmp_path: Path, mode: str) -> None:
    node, service = await start_node(nursery, tmp_path, mcp_settings(http_listen="127.0.0.1:0"))
    assert service.http_url is not None and service.http_url.startswith("http://127.0.0.1:")
    path = token_path(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = path.read_text().strip()
    async with http_client(service.http_url, token, mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"peers_list", "messages_send", "rag_query", "create_entities", "search_nodes", "scratch_set"} <= names
        status = await client.call_tool("node_status", {})
        assert not status.is_error
        assert json.loads(text_of(status))["peer_id"] == node.identity.peer_id_hex
        made = await client.call_tool(
            "create_entities", {"entities": [{"name": "Ada", "entityType": "person", "observations": ["likes trio"]}]}
        )
        assert not made.is_error and made.structured_content == {
            "entities": [{"name": "Ada", "entityType": "person", "observations": ["likes trio"]}]
        }
        found = await client.call_tool("search_nodes", {"query": "TRIO"})
        assert [e["name"] for e in (found.structured_content or {})["entities"]] == ["Ada"]
        bad = await client.call_tool("messages_send", {"peer": "nobody-known", "text": "hi"})
        assert bad.is_error and "Traceback" not in text_of(bad)
        invalid = await client.call_tool("inbox_list", {"limit": "many"})
        assert invalid.is_error and "limit" in text_of(invalid)
        graph = await client.read_resource("memory://knowledge-graph")
        assert json.loads(graph.contents[0].text)["entities"][0]["name"] == "Ada"  # type: ignore[union-attr]
    assert service.audit is not None and service.audit.records >= 6


async def test_http_without_the_token_is_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    _, service = await start_node(nursery, tmp_path, mcp_settings(http_listen="127.0.0.1:0"))
    assert service.http_url is not None
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx2.AsyncClient() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = await http.post(service.http_url, json=body, headers=headers)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")


async def test_state_changing_tools_can_be_denied_over_http(nursery: trio.Nursery, tmp_path: Path) -> None:
    _, service = await start_node(nursery, tmp_path, mcp_settings(http_listen="127.0.0.1:0", deny=("http:*",)))
    assert service.http_url is not None
    async with http_client(service.http_url, token_path(tmp_path).read_text().strip()) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "create_entities" not in names and "messages_send" not in names and "read_graph" in names
        refused = await client.call_tool("create_entities", {"entities": []})
        assert refused.is_error and "not allowed over http" in text_of(refused)


async def test_a_listening_client_hears_of_each_new_inbox_message(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Two nodes linked in memory; a 2026-07-28 client listening to node://inbox on alice's HTTP endpoint is
    told when bob's broadcast lands in alice's inbox, and reads it with inbox_list."""
    from node.identity import Identity
    from node.mcp.plugin import PLUGIN
    from node.mcp.service import McpService
    from node.node import Node
    from node.settings import Config
    from node.transports.memory import MemoryNetwork

    net = MemoryNetwork(seed=3)
    await nursery.start(net.run)
    service = McpService(mcp_settings(http_listen="127.0.0.1:0"))
    ta, tb = net.transport("alice"), net.transport("bob")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alice = Node(
        Config(data_dir=tmp_path / "a"),
        Identity.generate(),
        transports=[ta],
        control=False,
        services=[service],
        plugins=[PLUGIN],
    )
    bob = Node(Config(data_dir=tmp_path / "b"), Identity.generate(), transports=[tb], control=False)
    await nursery.start(alice.run)
    await nursery.start(bob.run)
    net.connect(ta, tb)
    assert service.http_url is not None
    with trio.fail_after(30):
        await alice.wait_until(
            lambda: alice.core is not None and alice.core.peers.get(bob.identity.peer_id) is not None
        )
        async with http_client(service.http_url, token_path(tmp_path / "a").read_text().strip()) as client:
            async with client.listen(resource_subscriptions=["node://inbox"]) as sub:
                bob.broadcast("hello from bob")
                async for event in sub:
                    assert getattr(event, "uri", None) == "node://inbox"
                    break
            listed = await client.call_tool("inbox_list", {})
            assert [m["text"] for m in (listed.structured_content or {})["messages"]] == ["hello from bob"]


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.0.0.2:0"])
async def test_a_foreign_host_or_origin_is_refused_on_every_loopback_address(
    nursery: trio.Nursery, tmp_path: Path, listen: str
) -> None:
    """DNS rebinding: a page on evil.example resolving to our loopback address carries its own Host/Origin."""
    _, service = await start_node(nursery, tmp_path, mcp_settings(http_listen=listen))
    assert service.http_url is not None
    token = token_path(tmp_path).read_text().strip()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient() as http:
        for bad in ({"Host": "evil.example"}, {"Origin": "http://evil.example"}):
            r = await http.post(service.http_url, json=body, headers={**auth, **bad})
            assert r.status_code in (403, 421), (bad, r.status_code, r.text)
    async with http_client(service.http_url, token, mode="legacy") as client:  # its own address still works
        assert (await client.list_tools()).tools


def test_the_token_file_is_never_taken_from_a_symlink_or_a_loose_file(tmp_path: Path) -> None:
    from node.errors import StartupError
    from node.tokenfile import ensure_token

    path = token_path(tmp_path)
    token = ensure_token(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and ensure_token(path) == token
    planted = tmp_path / "planted"
    planted.write_text("attacker-known-token\n")
    planted.chmod(0o600)
    path.unlink()
    path.symlink_to(planted)
    with pytest.raises(StartupError, match="symbolic link"):
        ensure_token(path)
    path.unlink()
    path.write_text("loose-token\n")
    path.chmod(0o644)
    with pytest.raises(StartupError, match="chmod 600"):
        ensure_token(path)
    path.unlink()
    os.mkfifo(path, 0o600)  # would block a plain open
    with pytest.raises(StartupError, match="not a regular file"):
        ensure_token(path)
    path.unlink()
    path.parent.chmod(0o777)
    with pytest.raises(StartupError, match="chmod 700"):
        ensure_token(path)


async def test_a_flood_of_connections_holds_at_most_the_cap(nursery: trio.Nursery, tmp_path: Path) -> None:
    from tests.test_httpserve import flood, http_status

    settings = mcp_settings(http_listen="127.0.0.1:0", http_max_connections=3)
    _, service = await start_node(nursery, tmp_path, settings)
    assert service.http_url is not None and service.http_connections is not None
    cap = service.http_connections
    streams = await flood(service.http_url, cap, 9)
    assert cap.active == 3 and cap.peak == 3 and cap.accepted == 3  # 6 wait in the kernel's backlog
    for stream in streams:
        await stream.aclose()
    assert await http_status(service.http_url) == 401  # served again once they are gone
    assert cap.peak == 3
