"""The offline-peer mailbox client as a plugin of the composition root: the ``[mailbox]`` section."""

from __future__ import annotations

from node.config import MailboxSection
from node.plugin import Plugin

PLUGIN = Plugin(name="mailbox", sections=(MailboxSection,))
