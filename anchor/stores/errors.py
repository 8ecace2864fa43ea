"""Store errors::

NodeError (node.errors)
└── StoreError                  a store was misused or holds unexpected data (a bug: reported, not retried)
    ├── StoreUnavailable        the server is down, unreachable or too slow; the gateway answers 503.
    │                           The store recovers by itself: the next call reconnects.
    └── MigrationError          the numbered SQL migrations are inconsistent (gap, duplicate, bad name)

A mailbox deposit over its quota is refused by the quota decision the caller passes in
(:class:`anchor.mailbox_quota.QuotaFull`), not by the store.
"""

from __future__ import annotations

from node.errors import NodeError


class StoreError(NodeError):
    """Base for store failures."""


class StoreUnavailable(StoreError):
    """The server behind ``store`` ("postgres", "redis", "graph") cannot be reached; retry later (HTTP 503)."""

    def __init__(self, store: str, message: str) -> None:
        super().__init__(f"{store} unavailable: {message}")
        self.store = store


class MigrationError(StoreError):
    """The migration files are not a gap-free numbered sequence, or one failed to apply."""
