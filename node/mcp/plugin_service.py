"""The MCP service the root starts (:class:`McpPluginService`): it reports ready at once and loads the MCP layer
(pydantic models and schemas: 0.3-0.7 s of imports on a small, busy machine) in a worker thread, so the node's
start (transports, announces) is not held up; control methods wait for it (at most ``LOAD_WAIT_S``). Kept apart
from :mod:`node.mcp.plugin` so that loading settings sections imports no trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import trio

from node.mcp.settings import McpSettings

if TYPE_CHECKING:
    from node.mcp.service import McpService
    from node.node import Node

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
