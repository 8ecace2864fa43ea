"""MCP as a built-in plugin of the composition root: the ``[mcp]`` section, the MCP service, `village mcp` and
`village memory`, and the ``mcp.*``/``memory.*`` control methods."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from node.mcp.settings import McpSettings
from node.plugin import Plugin, Service

if TYPE_CHECKING:
    from node.cli_support import CliRegistry
    from node.control.rpc import Registry as MethodRegistry
    from node.node import Node
    from node.settings import Config


def _services(cfg: Config) -> Sequence[Service]:
    settings = cfg.section(McpSettings)
    if not settings.enabled:
        return []
    from node.mcp.service import McpService

    return [McpService(settings)]


def _cli(cli: CliRegistry) -> None:
    from node.mcp.cli import add_commands

    add_commands(cli)


def _rpc(node: Node, reg: MethodRegistry) -> None:
    from node.mcp.rpc import register
    from node.mcp.service import McpService

    def get() -> McpService | None:
        service = node.service("mcp")
        return service if isinstance(service, McpService) else None

    register(reg, get)


PLUGIN = Plugin(name="mcp", sections=(McpSettings,), services=_services, cli=_cli, rpc=_rpc)
