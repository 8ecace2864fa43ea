"""The MCP service the root starts (:class:`McpPluginService`): it reports ready at once and loads the MCP layer
(pydantic models and schemas: 0.3-0.7 s of imports on a small, busy machine, ~12 MB) in a worker thread on first
use — the first ``mcp.*`` control call, ``ask``, the agents' first tool call, the gateway's ``/mcp`` — so an idle
node never imports it and the node's start (transports, announces) is not held up; callers wait for it (at most
``LOAD_WAIT_S``). It loads at start when something is served without a caller asking first: the loopback HTTP
endpoint (``[mcp] http_listen``) or memory in a store another service offers (the anchor, whose start-up look at
the other store is kept). Kept apart from :mod:`node.mcp.plugin` so that loading settings sections imports no trio.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

import trio

from node.mcp.errors import McpLoadFailed
from node.mcp.settings import McpSettings

if TYPE_CHECKING:
    from node.mcp.service import McpService
    from node.node import Node

log = logging.getLogger("village.mcp")

LOAD_WAIT_S = 60.0  # a control call made while the MCP layer still loads waits this long at most
# A service offering one of these keeps the MCP memory (or an old copy of it): the MCP layer loads at start.
MEMORY_OFFERS = ("mcp_memory_storage", "mcp_memory_graph")


class McpPluginService:
    name = "mcp"

    def __init__(self, settings: McpSettings) -> None:
        self.settings = settings
        self.service: McpService | None = None
        self.ready = trio.Event()  # set once the layer is loaded (or failed to: load_error)
        self.load_error: str | None = None
        self._wanted = trio.Event()

    def want(self) -> None:
        """Ask for the MCP layer (it loads once; :attr:`ready` is set when it is there)."""
        self._wanted.set()

    def _serves_at_start(self, node: Node) -> bool:
        return bool(self.settings.http_listen) or any(
            callable(getattr(s, offer, None)) for s in node.services for offer in MEMORY_OFFERS
        )

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        at_start = self._serves_at_start(node)
        if not at_start:
            await self._wanted.wait()
        async with trio.open_nursery() as nursery:
            try:
                module: Any = await trio.to_thread.run_sync(importlib.import_module, "node.mcp.service")
                service: McpService = module.McpService(self.settings)
                await nursery.start(service.run, node)
            except Exception as exc:  # on first use, a broken install or store: callers get why, the node goes on
                if at_start:
                    raise  # as before: what the node serves from the start (an HTTP listener) fails the start
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.exception("MCP: the tool layer could not be loaded or started")
                self.ready.set()
                return
            self.service = service
            self.ready.set()


async def running_service(node: Node) -> McpService | None:
    """The node's MCP service, loaded on the first call (None if the node runs none). Raises
    :class:`McpLoadFailed` when the layer could not be loaded."""
    found = node.service("mcp")
    if isinstance(found, McpPluginService):
        found.want()
        with trio.move_on_after(LOAD_WAIT_S):
            await found.ready.wait()
        if found.load_error is not None:
            raise McpLoadFailed("the MCP tool layer could not be loaded on this node (the node's log says why)")
        return found.service
    if found is None:
        return None
    from node.mcp.service import McpService  # a node built with the service itself (tests): loaded already

    return found if isinstance(found, McpService) else None
