"""MCP as a built-in plugin of the composition root: the ``[mcp]`` section, the MCP service, `village mcp` and
`village memory`, and the ``mcp.*``/``memory.*`` control methods.

The service the root starts is :class:`McpPluginService`: it reports ready at once and loads the MCP layer
(pydantic models and schemas: 0.3-0.7 s of imports on a small, busy machine) in a worker thread, so the node's
start (transports, announces) is not held up; control methods wait for it (at most ``LOAD_WAIT_S``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from node.mcp.settings import McpSettings
from node.plugin import Plugin, Service

if TYPE_CHECKING:
    from node.cli_support import CliRegistry
    from node.control.rpc import Registry as MethodRegistry
    from node.mcp.service import McpService
    from node.node import Node
    from node.settings import Config

LOAD_WAIT_S = 60.0  # a control call made while the MCP layer still loads waits this long at most


class McpPluginService:
    name = "mcp"

    def __init__(self, settings: McpSettings) -> None:
        self.settings = settings
        self.service: McpService | None = None
        self.ready = trio.Event()

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        module: Any = await trio.to_thread.run_sync(importlib.import_module, "node.mcp.service")
        service: McpService = module.McpService(self.settings)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run, node)
            self.service = service
            self.ready.set()


async def running_service(node: Node) -> McpService | None:
    """The node's MCP service once loaded (None if the node runs none)."""
    from node.mcp.service import McpService

    found = node.service("mcp")
    if isinstance(found, McpPluginService):
        with trio.move_on_after(LOAD_WAIT_S):
            await found.ready.wait()
        return found.service
    return found if isinstance(found, McpService) else None


def _services(cfg: Config) -> Sequence[Service]:
    settings = cfg.section(McpSettings)
    return [McpPluginService(settings)] if settings.enabled else []


def _cli(cli: CliRegistry) -> None:
    from node.mcp.cli import add_commands

    add_commands(cli)


def _rpc(node: Node, reg: MethodRegistry) -> None:
    from node.mcp.rpc import register

    async def get() -> McpService | None:
        return await running_service(node)

    register(reg, get)


PLUGIN = Plugin(name="mcp", sections=(McpSettings,), services=_services, cli=_cli, rpc=_rpc)
