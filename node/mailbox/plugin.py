"""The offline-peer mailbox client as a plugin of the composition root: the ``[mailbox]`` section, the
``mailbox`` service (with ``mailbox.anchors``) and the ``mailbox.*`` control methods.

The serving side (``mailbox.serve``) belongs to the anchor, which registers a ``mailbox-server`` service through its
own plugin; ``mailbox.status`` shows it through :class:`~node.mailbox.control.MailboxServing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from node.errors import StartupError
from node.mailbox.settings import MailboxSection
from node.plugin import Plugin

if TYPE_CHECKING:
    from node.control.rpc import Registry
    from node.mailbox.client import MailboxClient
    from node.mailbox.control import MailboxServing
    from node.node import Node
    from node.settings import Config

SERVICE_NAME = "mailbox"
SERVER_SERVICE_NAME = "mailbox-server"  # the anchor's (anchor.mailbox), found by name


class MailboxClientService:
    """Deposits sealed envelopes for unreachable peers at the anchors and fetches this node's own
    (:class:`~node.mailbox.client.MailboxClient`); it starts exchanging once the node (BetaNet) is up."""

    name = SERVICE_NAME

    def __init__(self, settings: MailboxSection) -> None:
        self.settings = settings
        self.client: MailboxClient | None = None

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from node.mailbox.client import MailboxClient
        from node.transports.betanet.transport import BetanetTransport

        betanet = next((t for t in node.transports if isinstance(t, BetanetTransport)), None)
        if betanet is None:
            raise StartupError("mailbox.anchors needs BetaNet (betanet.enabled = true)")
        client = MailboxClient(node.identity, self.settings, betanet, node.deliver_mailbox_envelope)
        node.on_envelope_sealed(client.on_sealed)
        node.on_link_up(client.on_link_up)
        self.client = client
        task_status.started()
        await node.wait_ready()
        await client.run()


def mailbox_client(node: Node) -> MailboxClient | None:
    """The running mailbox client of ``node`` (None: no mailbox.anchors, or not started yet)."""
    service = node.service(SERVICE_NAME)
    return service.client if isinstance(service, MailboxClientService) else None


def _services(cfg: Config) -> list[MailboxClientService]:
    settings = cfg.section(MailboxSection)
    return [MailboxClientService(settings)] if settings.anchors else []


def _rpc(node: Node, reg: Registry) -> None:
    from node.mailbox.control import MailboxServing, register

    def serving() -> MailboxServing | None:
        service = node.service(SERVER_SERVICE_NAME)
        return service if isinstance(service, MailboxServing) else None

    register(reg, lambda: mailbox_client(node), serving)


PLUGIN = Plugin(name="mailbox", sections=(MailboxSection,), services=_services, rpc=_rpc)
