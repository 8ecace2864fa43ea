"""Gateway errors, each with the HTTP status it maps to::

    NodeError (node.errors)
    └── GatewayError                 (status 400 unless a subclass says otherwise)
        ├── Unauthenticated          401: no, bad, expired or tampered credentials; revoked key
        ├── Forbidden                403: authenticated, but the token lacks the scope
        ├── RateLimited              429 with Retry-After (seconds)
        ├── NotFound                 404
        ├── BodyTooLarge             413
        ├── NodeUnavailable          503: the node is not running (starting or stopped)
        ├── QueueFull                503: too many messages wait for the node already
        ├── AuditBacklogFull         503: too many audit records wait in Redis for PostgreSQL (is it down?)
        └── RagUnavailable           503: no knowledge base on the node, or its model is not installed

A store that is down raises ``anchor.stores.errors.StoreUnavailable``; the app turns it into 503.
"""

from __future__ import annotations

from node.errors import NodeError


class GatewayError(NodeError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class Unauthenticated(GatewayError):
    status = 401
    code = "unauthenticated"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class BodyTooLarge(GatewayError):
    status = 413
    code = "body_too_large"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NodeUnavailable(GatewayError):
    status = 503
    code = "node_unavailable"


class QueueFull(GatewayError):
    """503: the queue between gateway and node holds ``anchor.queue_max`` messages already."""

    status = 503
    code = "queue_full"


class AuditBacklogFull(GatewayError):
    """503: ``anchor.audit_backlog_max`` audit records wait in Redis for the drain to PostgreSQL: nothing more is
    accepted that would need one."""

    status = 503
    code = "audit_backlog_full"


class RagUnavailable(GatewayError):
    """503: the node has no knowledge base (rag.enabled = false) or cannot embed (model not installed)."""

    status = 503
    code = "rag_unavailable"
