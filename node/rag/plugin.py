"""The knowledge base as a plugin of the composition root: the ``[rag]`` section, the ``rag`` service (the
:class:`~node.rag.service.RagService` and the responder to peers' federated queries), the ``rag.*`` control methods
and ``village rag``.

Importing this module is cheap: the service's heavy modules (onnxruntime, hnswlib) load when a node builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from node.plugin import Plugin
from node.rag.settings import RagSection

if TYPE_CHECKING:
    from node.cli_support import CliRegistry
    from node.control.rpc import Registry
    from node.node import Node
    from node.rag.service import RagService
    from node.settings import Config

SERVICE_NAME = "rag"


class RagNodeService:
    """The node's knowledge base: opened on first use, closed when the node stops. It answers peers' federated
    queries from shared documents only (:mod:`node.rag.federated`)."""

    name = SERVICE_NAME

    def __init__(self, settings: RagSection) -> None:
        self.settings = settings
        self.rag: RagService | None = None

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from node.rag import federated
        from node.rag.service import RagService

        self.rag = RagService(
            self.settings,
            node.config.data_dir / "rag" if node.persistent else None,
            wall_s=lambda: node.clock.wall_ms() / 1000.0,
        )
        federated.serve(node, self.rag)
        await self.rag.run(task_status=task_status)


def rag_service(node: Node) -> RagService | None:
    """The running knowledge base of ``node`` (None: rag.enabled = false, or not started yet)."""
    service = node.service(SERVICE_NAME)
    return service.rag if isinstance(service, RagNodeService) else None


def _services(cfg: Config) -> list[RagNodeService]:
    settings = cfg.section(RagSection)
    return [RagNodeService(settings)] if settings.enabled else []


def _rpc(node: Node, reg: Registry) -> None:
    from node.rag.rpc import register

    register(reg, lambda: rag_service(node), lambda: node)


def _cli(cli: CliRegistry) -> None:
    from node.rag.cli import add_commands

    add_commands(cli)


PLUGIN = Plugin(name="rag", sections=(RagSection,), services=_services, rpc=_rpc, cli=_cli)
