"""MCP as a built-in plugin of the composition root: the ``[mcp]`` section, the MCP service, `village mcp` and
`village memory`, and the ``mcp.*``/``memory.*`` control methods.

The service the root starts is :class:`node.mcp.plugin_service.McpPluginService` (imported only when a node runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from node.mcp.settings import McpSettings
from node.plugin import Plugin, Service

if TYPE_CHECKING:
    from node.cli_support import CliRegistry
    from node.control.rpc import Registry as MethodRegistry
    from node.mcp.service import McpService
    from node.node import Node
    from node.settings import Config


def _services(cfg: Config) -> Sequence[Service]:
    from node.mcp.plugin_service import McpPluginService

    settings = cfg.section(McpSettings)
    return [McpPluginService(settings)] if settings.enabled else []


def _cli(cli: CliRegistry) -> None:
    from node.mcp.cli import add_commands

    add_commands(cli)


def _rpc(node: Node, reg: MethodRegistry) -> None:
    from node.mcp.plugin_service import running_service
    from node.mcp.rpc import register

    async def get() -> McpService | None:
        return await running_service(node)

    register(reg, get)


PLUGIN = Plugin(name="mcp", sections=(McpSettings,), services=_services, cli=_cli, rpc=_rpc)
