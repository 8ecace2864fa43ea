"""The knowledge base as a plugin of the composition root: the ``[rag]`` section, the ``rag`` service
(:mod:`node.rag.node_service`: the :class:`~node.rag.service.RagService` and the responder to peers' federated
queries), the ``rag.*`` control methods and ``village rag``.

Importing this module is cheap (no trio, no onnxruntime): the service's modules load when a node builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.plugin import Plugin, Service
from node.rag.settings import RagSection

if TYPE_CHECKING:
    from node.cli_support import CliRegistry
    from node.control.rpc import Registry
    from node.node import Node
    from node.rag.service import RagService
    from node.settings import Config

SERVICE_NAME = "rag"


def rag_service(node: Node) -> RagService | None:
    """The running knowledge base of ``node`` (None: rag.enabled = false, or not started yet)."""
    from node.rag.node_service import RagNodeService

    service = node.service(SERVICE_NAME)
    return service.rag if isinstance(service, RagNodeService) else None


async def load_rag_service(node: Node) -> RagService | None:
    """:func:`rag_service` for async callers: the knowledge base's modules load in a worker thread on first use
    (the event loop goes on meanwhile). Raises :class:`~node.rag.errors.RagError` when they cannot be loaded."""
    from node.rag.node_service import RagNodeService

    service = node.service(SERVICE_NAME)
    return await service.load() if isinstance(service, RagNodeService) else None


def _services(cfg: Config) -> list[Service]:
    settings = cfg.section(RagSection)
    if not settings.enabled:
        return []
    from node.rag.node_service import RagNodeService

    return [RagNodeService(settings)]


def _rpc(node: Node, reg: Registry) -> None:
    from node.rag.rpc import register

    register(reg, lambda: load_rag_service(node), lambda: node)


def _cli(cli: CliRegistry) -> None:
    from node.rag.cli import add_commands

    add_commands(cli)


PLUGIN = Plugin(name="rag", sections=(RagSection,), services=_services, rpc=_rpc, cli=_cli)
