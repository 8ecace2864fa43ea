"""The anchor's shared stores: PostgreSQL (:class:`PostgresStore`), Redis (:class:`RedisStore`) and a Bolt graph
server — Neo4j 5, or FalkorDB here (:class:`GraphStore`). Connection settings come from ``scripts/services up``
(:func:`anchor.services_settings.load_settings`) or from ``anchor/compose.yaml``.

Every store is used from trio: blocking drivers run in worker threads through bounded limiters; a server that is
down raises :class:`StoreUnavailable` (HTTP 503 at the gateway) and the store recovers when it is back.
"""

from anchor.stores.errors import MigrationError, StoreError, StoreUnavailable
from anchor.stores.graph import ChunkHit, ClaimRecord, EntityRef, GraphStore, Trust
from anchor.stores.postgres import AgentState, ApiKey, AuditEntry, MailboxEnvelope, PostgresStore, Session
from anchor.stores.redis_store import RateDecision, RedisStore, StreamEntry

__all__ = [
    "AgentState",
    "ApiKey",
    "AuditEntry",
    "ChunkHit",
    "ClaimRecord",
    "EntityRef",
    "GraphStore",
    "MailboxEnvelope",
    "MigrationError",
    "PostgresStore",
    "RateDecision",
    "RedisStore",
    "Session",
    "StoreError",
    "StoreUnavailable",
    "StreamEntry",
    "Trust",
]
