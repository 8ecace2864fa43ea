"""Roles and scopes (no dependencies: the CLI's parser imports this even without the anchor extra)."""

from __future__ import annotations

# Scopes, one per kind of thing a route does.
SCOPE_NODE_READ = "node:read"  # GET /v1/node, GET /v1/peers
SCOPE_MESSAGES_SEND = "messages:send"  # POST /v1/messages
SCOPE_EVENTS_READ = "events:read"  # WS /v1/events (the node's inbox)
SCOPE_MAILBOX_READ = "mailbox:read"  # GET /v1/mailbox
SCOPE_KEYS_ADMIN = "keys:admin"  # /v1/keys: create, list, revoke API keys
SCOPE_RAG_QUERY = "rag:query"  # POST /v1/rag/query (shared documents only)
SCOPE_METRICS_READ = "metrics:read"  # GET /metrics (Prometheus text: the node's and the gateway's counters)
SCOPE_RAG_PRIVATE = "rag:private"  # with rag:query, also unshared documents (granted only explicitly, to admin keys)
SCOPE_ASK = "agents:ask"  # POST /v1/ask (the agents' tools narrowed to the key's other scopes; no personal context)
# The device's owner: POST /v1/twin/suggest, the personal context in /v1/ask, the twin's and the agents' traces over
# /mcp. Granted only explicitly, to admin keys.
SCOPE_TWIN_OWNER = "twin:owner"
SCOPE_VOTE_READ = "vote:read"  # GET /v1/proposals[/{id}]
SCOPE_VOTE_PROPOSE = "vote:propose"  # POST /v1/proposals (granted only explicitly, to admin keys)
SCOPE_VOTE_CAST = "vote:cast"  # POST /v1/proposals/{id}/votes (votes as the anchor's node; only explicitly)

ALL_SCOPES = (
    SCOPE_NODE_READ,
    SCOPE_MESSAGES_SEND,
    SCOPE_EVENTS_READ,
    SCOPE_MAILBOX_READ,
    SCOPE_KEYS_ADMIN,
    SCOPE_RAG_QUERY,
    SCOPE_RAG_PRIVATE,
    SCOPE_METRICS_READ,
    SCOPE_ASK,
    SCOPE_TWIN_OWNER,
    SCOPE_VOTE_READ,
    SCOPE_VOTE_PROPOSE,
    SCOPE_VOTE_CAST,
)

# What each role may be granted; a key may be narrowed to a subset at creation, a token at issue.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset(ALL_SCOPES),
    "user": frozenset(
        {SCOPE_NODE_READ, SCOPE_MESSAGES_SEND, SCOPE_EVENTS_READ, SCOPE_RAG_QUERY, SCOPE_ASK, SCOPE_VOTE_READ}
    ),
    "node": frozenset({SCOPE_NODE_READ, SCOPE_MESSAGES_SEND, SCOPE_MAILBOX_READ}),
}
# Granted only when asked for by name (to admin keys): unshared documents, the owner's personal data, and
# proposing/voting as this node in the village's governance.
EXPLICIT_SCOPES = frozenset({SCOPE_RAG_PRIVATE, SCOPE_TWIN_OWNER, SCOPE_VOTE_PROPOSE, SCOPE_VOTE_CAST})
# What a key of each role gets when its scopes are not named: never an explicit-only scope.
ROLE_DEFAULT_SCOPES: dict[str, frozenset[str]] = {
    role: scopes - EXPLICIT_SCOPES for role, scopes in ROLE_SCOPES.items()
}
ROLES = tuple(ROLE_SCOPES)
