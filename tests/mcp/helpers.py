"""Shared helpers for the MCP tests: an in-process node with the MCP service, and MCP clients for it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx2
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from node.identity import create_identity
from node.mcp.service import McpService
from node.mcp.settings import McpSettings
from node.node import Node
from node.rag.settings import RagSection
from node.settings import Config


def mcp_settings(**overrides: Any) -> McpSettings:
    return dataclasses.replace(McpSettings(), **overrides)


async def start_node(
    nursery: trio.Nursery, data_dir: Path, settings: McpSettings | None = None, *, control: bool = False
) -> tuple[Node, McpService]:
    """A node running the MCP service as the composition root starts it (a service of the node, its control
    methods registered through the plugin)."""
    from node.mcp.plugin import PLUGIN

    cfg = Config(data_dir=data_dir, rag=RagSection(mode="bm25"))
    service = McpService(settings or mcp_settings())
    node = Node(cfg, create_identity(data_dir), control=control, services=[service], plugins=[PLUGIN])
    await nursery.start(node.run)
    return node, service


def http_client(url: str, token: str | None, *, mode: str = "auto") -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers)), mode=mode)


def text_of(result: Any) -> str:
    """The text of a CallToolResult's first content block (our tools answer with one text block)."""
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text
