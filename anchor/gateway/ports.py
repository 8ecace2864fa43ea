"""What the gateway needs from the world around it, as small typed interfaces.

The app depends on these Protocols only; :mod:`anchor.gateway.stores_adapter` implements
:class:`GatewayStores` over the anchor's real PostgreSQL and Redis stores, and the Mailbox engineer's
``anchor.mailbox`` provides :class:`MailboxPort`. Every method may raise
``anchor.stores.errors.StoreUnavailable`` (the app answers 503).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    key_id: str
    name: str
    role: str
    scopes: frozenset[str]
    created_at_ms: int
    revoked: bool


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: float


class GatewayStores(Protocol):
    async def verify_api_key(self, secret: str) -> ApiKeyInfo | None:
        """The key this secret belongs to (revoked or not), None if it is nobody's."""

    async def key_active(self, key_id: str) -> bool:
        """False once the key is revoked or deleted (checked on every authenticated request)."""

    async def refresh_key_cache(self, key_id: str) -> bool:
        """Renew the key's cached state from the database before the entry expires (one refresh per key at a
        time in this gateway process; other gateways sharing the cache guard their own); True if renewed."""

    async def create_api_key(self, name: str, role: str, scopes: frozenset[str]) -> tuple[ApiKeyInfo, str]:
        """A new key and its secret (shown once; only a hash is kept)."""

    async def list_api_keys(self) -> list[ApiKeyInfo]: ...

    async def revoke_api_key(self, key_id: str) -> bool:
        """True if a live key was revoked now; tokens issued for it stop working at once."""

    async def take_token(self, bucket: str, rate_per_s: float, burst: int) -> RateDecision: ...

    async def audit(self, actor: str, action: str, target: str, detail: Mapping[str, Any]) -> None: ...

    async def health(self) -> dict[str, str]:
        """Store name -> "ok" or a short reason it is down."""


class MailboxPort(Protocol):
    """GET /v1/mailbox: the anchor's offline-peer mailbox (provided by ``anchor.mailbox``).

    ``query`` holds the request's query parameters (the recipient's proof of identity travels there); the
    return value is sent as JSON. Refusals raise :class:`anchor.gateway.errors.GatewayError` subclasses.
    """

    async def gateway_fetch(self, key_id: str, query: Mapping[str, str]) -> Any: ...

    def audit_entry(self, query: Mapping[str, str]) -> tuple[str, str, dict[str, Any]]:
        """(action, target, detail) for the audit row written before ``gateway_fetch`` runs: an ACK is
        ``mailbox.ack`` naming the grant's recipient and how many IDs; a challenge or fetch ``mailbox.fetch``."""
        ...
