"""A plugin the gateway serves that cannot load on first use (a broken install, review of idle5): the client gets the
gateway's 503 with a generic message, never a 500 nor the node's internal error text (paths, module names)."""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio

from node.mcp import plugin_service
from node.mcp.settings import McpSettings
from node.rag.settings import RagSection
from tests.anchor.gateway.conftest import StartGateway

SECRET = "/home/alice/.venv/lib/python3.12/site-packages/hnswlib.so: undefined symbol"


async def test_a_knowledge_base_that_cannot_load_is_503_without_why(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await start_gateway(rag=RagSection(mode="bm25"))
    monkeypatch.setitem(sys.modules, "node.rag.service", None)  # its first use: the import fails
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, secret = await gateway.key("user")
        auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
        r = await client.post("/v1/rag/query", headers=auth, json={"text": "anything"})
    assert (r.status_code, r.json()["error"]) == (503, "rag_unavailable"), r.text
    assert r.json()["detail"] == "the knowledge base could not be loaded on this node"


async def test_an_mcp_layer_that_cannot_load_is_503_without_why(
    start_gateway: StartGateway, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def broken(name: str, package: str | None = None) -> Any:
        if name == "node.mcp.service":
            raise ImportError(SECRET)
        return real(name, package)

    gateway = await start_gateway()
    monkeypatch.setattr(importlib, "import_module", broken)  # what the plugin loads the layer with
    lazy = plugin_service.McpPluginService(McpSettings())
    # An anchor offers MCP memory, so its MCP layer loads at start (and a failure fails the start); a node serving
    # nothing from the start loads it at the first call, which is the failure the gateway must map.
    await nursery.start(lazy.run, SimpleNamespace(services=[]))
    others = gateway.node.service
    monkeypatch.setattr(gateway.node, "service", lambda name: lazy if name == "mcp" else others(name))
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        _key, secret = await gateway.key("user", frozenset({"node:read"}))
        auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        r = await client.post("/mcp", json=body, headers=auth)
    assert (r.status_code, r.json()["error"]) == (503, "node_unavailable"), r.text
    assert r.json()["detail"] == "MCP could not be loaded on this node"
    assert lazy.load_error is not None and SECRET in lazy.load_error  # the node's log and status say why
