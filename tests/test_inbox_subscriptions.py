"""Node.subscribe_inbox / unsubscribe_inbox: a subscription ends at once, not at the next message."""

from __future__ import annotations

from pathlib import Path

from node.identity import create_identity
from node.node import Node
from node.settings import Config


def test_unsubscribing_releases_the_subscription_at_once(tmp_path: Path) -> None:
    node = Node(Config(data_dir=tmp_path), create_identity(tmp_path), control=False, persistent_inbox=False)
    first, second = node.subscribe_inbox(), node.subscribe_inbox()
    assert node.inbox_followers == 2
    node.unsubscribe_inbox(first)
    assert node.inbox_followers == 1  # gone now, with no message having arrived to notice it
    node.unsubscribe_inbox(first)  # twice is harmless
    node.unsubscribe_inbox(second)
    assert node.inbox_followers == 0
