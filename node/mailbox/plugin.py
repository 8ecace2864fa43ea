"""The offline-peer mailbox client as a plugin of the composition root: the ``[mailbox]`` section, the
``mailbox`` service (:mod:`node.mailbox.node_service`, with ``mailbox.anchors``) and the ``mailbox.*`` control
methods. Importing this module is cheap (no trio, no libp2p).

The serving side (``mailbox.serve``) belongs to the anchor, which registers a ``mailbox-server`` service through its
own plugin; ``mailbox.status`` shows it through :class:`~node.mailbox.control.MailboxServing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.mailbox.settings import MailboxSection
from node.plugin import Plugin, Service

if TYPE_CHECKING:
    from node.control.rpc import Registry
    from node.mailbox.client import MailboxClient
    from node.mailbox.control import MailboxServing
    from node.node import Node
    from node.settings import Config

SERVICE_NAME = "mailbox"
SERVER_SERVICE_NAME = "mailbox-server"  # the anchor's (anchor.mailbox), found by name


def mailbox_client(node: Node) -> MailboxClient | None:
    """The running mailbox client of ``node`` (None: no mailbox.anchors, or not started yet)."""
    from node.mailbox.node_service import MailboxClientService

    service = node.service(SERVICE_NAME)
    return service.client if isinstance(service, MailboxClientService) else None


def _services(cfg: Config) -> list[Service]:
    settings = cfg.section(MailboxSection)
    if not settings.anchors:
        return []
    from node.mailbox.node_service import MailboxClientService

    return [MailboxClientService(settings)]


def _rpc(node: Node, reg: Registry) -> None:
    from node.mailbox.control import MailboxServing, register

    def serving() -> MailboxServing | None:
        service = node.service(SERVER_SERVICE_NAME)
        return service if isinstance(service, MailboxServing) else None

    register(reg, lambda: mailbox_client(node), serving)


PLUGIN = Plugin(name="mailbox", sections=(MailboxSection,), services=_services, rpc=_rpc)
