"""The MCP knowledge-graph memory on the real Bolt graph server (FalkorDB from ``scripts/services``): what is written
is what a fresh load reads back (exact strings: NUL, non-BMP, newlines; empty lists; order), namespaces are apart,
forget wipes only its own, a write the server refuses or cannot take changes nothing, and an anchor's MCP service
keeps its memory there (the registry's tools, ``memory.export``/``memory.forget`` as `village memory` calls them)."""

from __future__ import annotations

import pytest
import trio

from anchor.mcp_memory import BoltMemoryStorage
from anchor.services_settings import ServiceSettings
from anchor.stores.errors import StoreUnavailable
from node.mcp.graph import KnowledgeGraph
from tests.anchor.gateway.proxy import TcpProxy
from tests.mcp.helpers import mcp_settings


def ent(name: str, etype: str = "person", *obs: str) -> dict[str, object]:
    return {"name": name, "entityType": etype, "observations": list(obs)}


def rel(a: str, b: str, t: str = "knows") -> dict[str, str]:
    return {"from": a, "to": b, "relationType": t}


def storage(services: ServiceSettings, ns: str, url: str | None = None) -> BoltMemoryStorage:
    return BoltMemoryStorage(url or services.graph.bolt_url, namespace=ns, timeout_s=2.0)


def test_the_graph_read_back_from_bolt_is_the_graph_written(services: ServiceSettings, graph_ns: str) -> None:
    g = KnowledgeGraph(storage(services, graph_ns), mcp_settings())
    g.create_entities([ent("Ada", "person", "a\0b", "🦉 owl", "line\nbreak"), ent("Bob"), ent("Bob", "dup")])
    g.create_entities([ent("", "", "")])
    g.create_relations([rel("Ada", "Bob"), rel("Zed", "Ada", "admires"), rel("Bob", "Cy")])
    g.add_observations([{"entityName": "Bob", "contents": ["x", "y"]}])
    g.delete_observations([{"entityName": "Ada", "observations": ["🦉 owl"]}])
    g.delete_relations([rel("Bob", "Cy")])
    g.delete_entities(["Cy"])
    written = g.read_graph()
    g.close()

    again = KnowledgeGraph(storage(services, graph_ns), mcp_settings())
    assert again.read_graph() == written
    assert written["entities"][0] == ent("Ada", "person", "a\0b", "line\nbreak")
    assert again.stats()["backend"] == "bolt"
    other = KnowledgeGraph(storage(services, graph_ns + "other"), mcp_settings())
    assert other.read_graph() == {"entities": [], "relations": []}  # another node's namespace
    other.create_entities([ent("Eve")])
    assert again.forget() == {"entities": 4, "relations": 2}
    assert KnowledgeGraph(storage(services, graph_ns), mcp_settings()).read_graph() == {"entities": [], "relations": []}
    assert [
        e["name"]
        for e in KnowledgeGraph(storage(services, graph_ns + "other"), mcp_settings()).read_graph()["entities"]
    ] == ["Eve"]
    other.forget()
    assert isinstance(other.storage, BoltMemoryStorage) and other.storage.count() == 0


async def test_a_write_the_server_cannot_take_changes_nothing(
    services: ServiceSettings, graph_ns: str, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy(services.graph.host, services.graph.bolt_port)
    await nursery.start(proxy.run)
    url = f"bolt://127.0.0.1:{proxy.port}"
    g = await trio.to_thread.run_sync(lambda: KnowledgeGraph(storage(services, graph_ns, url), mcp_settings()))
    await trio.to_thread.run_sync(g.create_entities, [ent("Ada", "person", "x")])
    before = g.read_graph()
    proxy.down()
    try:
        with pytest.raises(StoreUnavailable):
            await trio.to_thread.run_sync(g.add_observations, [{"entityName": "Ada", "contents": ["y"]}])
        with pytest.raises(StoreUnavailable):
            await trio.to_thread.run_sync(g.delete_entities, ["Ada"])
        assert g.read_graph() == before and g.bytes == len("Ada") + len("person") + 1
    finally:
        await proxy.up()
    await trio.to_thread.run_sync(g.add_observations, [{"entityName": "Ada", "contents": ["y"]}])
    fresh = await trio.to_thread.run_sync(lambda: KnowledgeGraph(storage(services, graph_ns), mcp_settings()))
    assert fresh.read_graph() == {"entities": [ent("Ada", "person", "x", "y")], "relations": []}
    await trio.to_thread.run_sync(fresh.forget)
    g.close()
    fresh.close()
