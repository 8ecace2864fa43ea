"""``POST /v1/messages`` without FastAPI on its common path: one Redis round trip per request.

:class:`FastSend` sits in front of the FastAPI app (inside :class:`anchor.gateway.app.BodyLimit`, so the body is
bounded and read already). For a request it can settle completely — a valid bearer JWT with ``messages:send``, a
JSON body the route's schema accepts, a message the node's rules accept — it checks the key's cached state, takes
the per-IP and per-key tokens, writes the audit record and queues the message in one atomic Redis script
(:meth:`anchor.queue.MessageQueue.put_audited`) and answers 202 itself. Everything else — no or a bad token, a
missing scope, a body the schema refuses, a message the node refuses, a key whose state is not cached as active —
goes to the FastAPI route untouched (nothing was spent: the script changes nothing when the key is not cached), so
refusals keep their order and their answers: per-IP limit, authentication, revocation, per-key limit, scope, body.
So does a request with a repeated ``Authorization`` or ``Content-Type`` header (the route reads the first one; which
one counts is its call). Store errors are answered as the route's handlers answer them (503 / 500 with JSON).
With ``[anchor] key_cache_ttl_s = 0`` (no key cache) every request takes the FastAPI route. Once less than half of
the key's cache entry's lifetime is left, the request that sees it renews the entry from PostgreSQL after its 202
(one at a time per key in each gateway process: N gateways sharing the Redis may renew one key N times at
once), so a busy key's entry does not expire under its requests in flight.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anchor.gateway.auth import SCOPE_MESSAGES_SEND, bearer_token, ip_buckets
from anchor.gateway.errors import GatewayError, RateLimited, Unauthenticated
from anchor.gateway.stores_adapter import KEY_CACHE_PREFIX
from anchor.queue import QueuedMessage, new_message_id
from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.redis_store import AuditRecord
from node.errors import MeshError

if TYPE_CHECKING:
    from anchor.gateway.app import GatewayContext

log = logging.getLogger("village.anchor.gateway")

PATH = "/v1/messages"
TEXT_MAX_CHARS = 4096  # SendIn's bounds
TO_MAX_CHARS = 64
JSON_HEADERS = [(b"content-type", b"application/json")]
REFRESH_AT = 0.5  # a key's cache entry is renewed (from PostgreSQL) once less than this share of its TTL is left


def check_send(ctx: GatewayContext, to: str | None, text: str) -> str | None:
    """The node's rules for a message (MeshError when refused); the recipient's peer ID (hex), None for a
    broadcast. Shared by the FastAPI route and the fast path."""
    node = ctx.node
    if to is None:
        max_chars = node.config.mesh.max_public_text_chars
        if len(text) > max_chars:
            raise MeshError(
                f"a public message must have 1 to {max_chars} characters (mesh.max_public_text_chars); "
                f"this one has {len(text)}"
            )
        return None
    assert node.core is not None
    peer_id = node.resolve_peer(to, allow_unknown=True)
    node.core.check_private(peer_id, text)
    return peer_id.hex()


def audit_record(key_id: str, message_id: str, peer: str | None, size: int) -> AuditRecord:
    """The audit record of a queued message; its event ID (the message's) makes the drain's insert idempotent."""
    action = "messages.broadcast" if peer is None else "messages.send"
    detail = json.dumps({"bytes": size, "id": message_id}, separators=(",", ":"))
    return AuditRecord(f"msg:{message_id}", f"key:{key_id}", action, peer or "*", detail)


class FastSend:
    def __init__(self, app: ASGIApp, ctx: GatewayContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or self.ctx.settings.key_cache_ttl_s <= 0
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # BodyLimit has read and bounded it: this is one replayed message
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            handled = await self._send(scope, body, send)
        except GatewayError as exc:
            from anchor.gateway.app import error_response

            self.ctx.count(str(exc.status))
            await error_response(exc)(scope, receive, send)
            return
        except StoreUnavailable as exc:
            from anchor.gateway.app import unavailable_response

            self.ctx.count("503")
            await unavailable_response(exc)(scope, receive, send)
            return
        except StoreError as exc:  # Redis answered but refused (WRONGTYPE, OOM, READONLY): as the route answers it
            from anchor.gateway.app import store_error_response

            await store_error_response(self.ctx, scope["method"], PATH, exc)(scope, receive, send)
            return
        if handled:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _send(self, scope: Scope, body: bytes, send: Send) -> bool:
        """True when answered here; False to leave the request to the FastAPI route (nothing spent)."""
        ctx = self.ctx
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:  # repeated: the route decides which counts (the first)
                    return False
                authorization = value
            elif name == b"content-type":
                if content_type is not None:
                    return False
                content_type = value
        if authorization is None or content_type is None:
            return False
        if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            return False
        try:
            principal = ctx.issuer.verify(bearer_token(authorization.decode("latin-1")), now_s=ctx.wall_s())
        except Unauthenticated:
            return False
        if SCOPE_MESSAGES_SEND not in principal.scopes or ctx.node.core is None or ctx.queue is None:
            return False
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # the route answers it as it always has
            return False
        if type(data) is not dict:
            return False
        text, to = data.get("text"), data.get("to")
        if type(text) is not str or not 1 <= len(text) <= TEXT_MAX_CHARS:
            return False
        if to is not None and (type(to) is not str or not 1 <= len(to) <= TO_MAX_CHARS):
            return False
        try:
            size = len(text.encode())
            peer = check_send(ctx, to, text)
        except (MeshError, UnicodeEncodeError):  # the route says why (400), after the rate limits
            return False
        settings = ctx.settings
        client = scope.get("client")
        host = client[0] if client else "unknown"
        message_id = new_message_id()
        outcome = await ctx.queue.put_audited(
            QueuedMessage(message_id, peer, text, principal.key_id),
            audit_record(principal.key_id, message_id, peer, size),
            key_cache=KEY_CACHE_PREFIX + principal.key_id,
            ip_buckets=tuple(
                (f"ip:{bucket}", settings.ip_rate_per_s * factor, settings.ip_burst * factor)
                for bucket, factor in ip_buckets(host)
            ),
            key_bucket=(f"key:{principal.key_id}", settings.key_rate_per_s, settings.key_burst),
        )
        if outcome.result == "miss":
            return False
        if outcome.result in ("ip", "key"):
            raise RateLimited(f"too many requests (per-{outcome.result} limit)", retry_after_s=outcome.retry_after_s)
        out = json.dumps({"id": message_id, "to": peer, "state": "queued"}, separators=(",", ":")).encode()
        headers = [*JSON_HEADERS, (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": out})
        if 0 <= outcome.key_cache_ttl_ms < settings.key_cache_ttl_s * 1000 * REFRESH_AT:
            # Renewed here, after the answer, by one request per key: when the entry expired instead, every request
            # in flight for the key missed it at once and took the slow path (a stall of all of them).
            try:
                await ctx.stores.refresh_key_cache(principal.key_id)
            except StoreError as exc:  # left to expire: the slow path refills it (or answers 503 while it cannot)
                log.debug("key cache refresh of %s failed: %s", principal.key_id, exc)
        return True
