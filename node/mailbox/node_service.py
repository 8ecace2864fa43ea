"""The ``mailbox`` service of the node (registered by :mod:`node.mailbox.plugin`, with ``mailbox.anchors``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from node.errors import StartupError
from node.mailbox.client import MailboxClient
from node.mailbox.settings import MailboxSection

if TYPE_CHECKING:
    from node.node import Node

SERVICE_NAME = "mailbox"


class MailboxClientService:
    """Deposits sealed envelopes for unreachable peers at the anchors and fetches this node's own
    (:class:`~node.mailbox.client.MailboxClient`); it starts exchanging once the node (BetaNet) is up."""

    name = SERVICE_NAME

    def __init__(self, settings: MailboxSection) -> None:
        self.settings = settings
        self.client: MailboxClient | None = None

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
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
