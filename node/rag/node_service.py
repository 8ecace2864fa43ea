"""The ``rag`` service of the node (registered by :mod:`node.rag.plugin`): the knowledge base and the responder to
peers' federated queries, owned by the Node's root nursery."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from node.rag import federated
from node.rag.service import RagService
from node.rag.settings import RagSection

if TYPE_CHECKING:
    from node.node import Node

SERVICE_NAME = "rag"


class RagNodeService:
    """The node's knowledge base: opened on first use, closed when the node stops. It answers peers' federated
    queries from shared documents only (:mod:`node.rag.federated`)."""

    name = SERVICE_NAME

    def __init__(self, settings: RagSection) -> None:
        self.settings = settings
        self.rag: RagService | None = None

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.rag = RagService(
            self.settings,
            node.config.data_dir / "rag" if node.persistent else None,
            wall_s=lambda: node.clock.wall_ms() / 1000.0,
        )
        federated.serve(node, self.rag)
        await self.rag.run(task_status=task_status)
