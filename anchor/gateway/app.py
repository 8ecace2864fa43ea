"""The gateway's ASGI app (FastAPI on Starlette; runs on trio through anyio).

Every route but ``GET /v1/health`` and ``POST /v1/auth/token`` wants a bearer token with the route's scope;
every request but health passes the per-IP token bucket first and, once authenticated, the per-key bucket
(Redis; 429 + ``Retry-After`` when empty). Every state change (token issued, message sent, key created or
revoked, mailbox fetched) is written to the audit log before it takes effect, so a change the log cannot
record does not happen: a store that is down gives 503 with a JSON body naming it. A message's audit record is
written to Redis in the same atomic step that accepts it and drained to PostgreSQL afterwards
(:mod:`anchor.audit_drain`), which hands the message to the node only once the record committed there; the other
records go to PostgreSQL directly.

Routes: ``GET /v1/health``, ``POST /v1/auth/token``, ``GET /v1/node``, ``GET /v1/peers``,
``POST /v1/messages`` (audited and queued in one atomic Redis step, the audit record drained to PostgreSQL by
:mod:`anchor.audit_drain`; the common case answered by :mod:`anchor.gateway.fast_send`), ``GET /v1/messages/{id}``,
``GET /v1/mailbox``, ``GET|POST /v1/keys``, ``DELETE /v1/keys/{key_id}``, ``WS /v1/events``; the OpenAPI
document at ``/openapi.json``; ``POST /v1/rag/query`` (:mod:`anchor.gateway.rag_route`); ``POST /v1/ask`` and
``POST /v1/twin/suggest`` (:mod:`anchor.gateway.ask_route`).
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations at run time, and
# they name dependencies made inside build_app().
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import trio
from fastapi import Depends, FastAPI, Form, Header, Path, Query, Request, Security, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anchor.gateway.ask_route import add_ask_routes
from anchor.gateway.auth import (
    SCOPE_EVENTS_READ,
    SCOPE_KEYS_ADMIN,
    SCOPE_MAILBOX_READ,
    SCOPE_MESSAGES_SEND,
    SCOPE_NODE_READ,
    Principal,
    TokenIssuer,
    basic_credentials,
    bearer_token,
    check_role_scopes,
    ip_buckets,
    narrow_scopes,
)
from anchor.gateway.errors import (
    AuditBacklogFull,
    BodyTooLarge,
    Forbidden,
    GatewayError,
    NodeUnavailable,
    NotFound,
    QueueFull,
    RateLimited,
    Unauthenticated,
)
from anchor.gateway.fast_send import FastSend, audit_record, check_send
from anchor.gateway.mcp_route import McpMount
from anchor.gateway.metrics_route import add_metrics_route
from anchor.gateway.ports import ApiKeyInfo, GatewayStores, MailboxPort
from anchor.gateway.rag_route import add_rag_routes
from anchor.gateway.vote_route import add_vote_routes
from anchor.queue import MessageQueue, QueuedMessage, new_message_id
from anchor.settings import AnchorSection
from anchor.stores.errors import StoreError, StoreUnavailable
from node.errors import MeshError
from node.mailbox import protocol as mailbox_protocol
from node.mcp.outputs import NodeStatusStable

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("village.anchor.gateway")

API_VERSION = "1.0.0"
WS_POLICY_VIOLATION = 1008  # RFC 6455 close codes
WS_GOING_AWAY = 1001
WS_TRY_AGAIN_LATER = 1013
GATEWAY_STORES = ("postgres", "redis")  # the stores the routes need; the graph's state only degrades health


@dataclass
class GatewayContext:
    """Everything the routes use; one per gateway (no module-level state)."""

    node: "Node"
    stores: GatewayStores
    issuer: TokenIssuer
    settings: AnchorSection
    wall_s: Callable[[], float]  # seconds since the epoch (the node's clock)
    mailbox: MailboxPort | None = None
    queue: MessageQueue | None = None  # POST /v1/messages queues here (Redis Stream); the node consumes it
    event_streams: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    key_recheck_s: float = 3.0  # an open event stream re-checks its API key this often (node clock)
    max_event_streams_per_key: int = 4
    # Open event streams by API key: DELETE /v1/keys wakes them, so a revocation made here closes them at once
    # (one made elsewhere, e.g. by the CLI, within key_recheck_s).
    stream_wakeups: dict[str, set[trio.Event]] = field(default_factory=dict)
    # GET /v1/health asks the stores at most once per [anchor] health_cache_s (trio clock): unauthenticated, and
    # not rate limited while Redis is down, it must not become a way to hammer the stores.
    health_cache: tuple[float, dict[str, str]] | None = None
    health_lock: trio.Lock = field(default_factory=trio.Lock)

    async def store_health(self) -> dict[str, str]:
        async with self.health_lock:  # concurrent requests wait for one check instead of each making their own
            cached = self.health_cache
            if cached is None or trio.current_time() - cached[0] >= self.settings.health_cache_s:
                cached = self.health_cache = (trio.current_time(), await self.stores.health())
            return cached[1]

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


# ---------------------------------------------------------------- schemas
class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable error code")
    detail: str = Field(description="what went wrong, for people")


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"] = Field(
        description="ok: every store answers; degraded: a store no route needs yet (graph) is down; down: "
        "PostgreSQL or Redis is down, so most routes answer 503"
    )
    peer_id: str
    stores: dict[str, Literal["ok", "down"]] = Field(description="postgres, redis, graph")


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds")
    scope: str = Field(description="space-separated scopes")


# The node's stable ``node.status`` fields (typed once, node.mcp.outputs.NodeStatusStable) and the gateway's refusals.
# (No docstring: it would become the OpenAPI description.) A plain response model: lax, and the status answer's other
# fields (counters, the data directory) are dropped, never passed on.
class NodeOut(NodeStatusStable):
    model_config = ConfigDict(extra="ignore", strict=False)

    gateway_refusals: dict[str, int] = Field(description="requests refused since start, by HTTP status")


class PeerOut(BaseModel):
    peer_id: str
    nickname: str
    fingerprint: str
    reachable: bool
    last_seen_s_ago: float
    hops: int | None
    transport: str | None
    address: str | None
    session: bool
    rtt_ms: float | None


class SendIn(BaseModel):
    to: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="peer ID, fingerprint (or unique prefix) or nickname; omitted or null: a public broadcast",
    )
    text: str = Field(min_length=1, max_length=4096, description="message text (private: at most 255 UTF-8 bytes)")


class SendOut(BaseModel):
    id: str = Field(description="the message's ID (a private message keeps it in the mesh)")
    to: str | None
    state: Literal["queued"]


class MessageStatus(BaseModel):
    id: str
    to: str | None
    state: Literal["queued", "pending", "delivered", "failed", "sent"] = Field(
        description="queued: waiting for the node; pending: in the node's outbox, awaiting the recipient's "
        "receipt; delivered: receipted; failed: see detail; sent: a broadcast that went out"
    )
    detail: str = Field(description="why it failed; empty otherwise")
    mesh_id: str | None = Field(description="the mesh's ID for it (a broadcast's differs from id)")


class KeyOut(BaseModel):
    key_id: str
    name: str
    role: str
    scopes: list[str]
    created_at_ms: int
    revoked: bool


class KeyCreated(KeyOut):
    secret: str = Field(description="the API key; shown once, only its hash is kept")


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "user", "node"]
    scopes: list[str] | None = Field(None, max_length=16, description="a subset of the role's scopes; null: all")


def key_out(info: ApiKeyInfo) -> dict[str, Any]:
    return {
        "key_id": info.key_id,
        "name": info.name,
        "role": info.role,
        "scopes": sorted(info.scopes),
        "created_at_ms": info.created_at_ms,
        "revoked": info.revoked,
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, invalid, expired or revoked credentials"},
    403: {"model": ErrorBody, "description": "the token lacks the route's scope"},
    429: {"model": ErrorBody, "description": "rate limited; see Retry-After"},
    503: {"model": ErrorBody, "description": "a store is down"},
}


MAILBOX_PARAMS = frozenset({"peer", "noise_key", "signing_key", "nonce", "mac", "signature", "limit", "grant", "ack"})


# ---------------------------------------------------------------- middleware
class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413: a larger Content-Length at once, a streamed (chunked)
    body as soon as it passes the limit. The body is read before the app runs (at most ``max_bytes``), so the
    app never sees part of a refused one."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _too_large(self.max_bytes)(scope, receive, send)
                return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await _too_large(self.max_bytes)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: waits for http.disconnect

        await self.app(scope, replay, send)


def _too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse({"error": BodyTooLarge.code, "detail": f"request body over {max_bytes} bytes"}, 413)


def error_response(exc: GatewayError) -> JSONResponse:
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="aivillage"'
    if isinstance(exc, (NodeUnavailable, QueueFull, AuditBacklogFull)):
        headers["Retry-After"] = "1"
    return JSONResponse({"error": exc.code, "detail": str(exc)}, exc.status, headers=headers)


def store_error_response(ctx: GatewayContext, method: str, path: str, exc: StoreError) -> JSONResponse:
    # The store answered but refused (a bug, or data it did not expect): logged with its reason, never sent.
    log.error("%s %s: store error: %s", method, path, exc)
    ctx.count("500")
    return JSONResponse(
        {"error": "store_error", "detail": "the anchor's store refused this request; the reason is logged"}, 500
    )


def unavailable_response(exc: StoreUnavailable) -> JSONResponse:
    # The reason (addresses, driver messages) goes to the log once per outage, not to clients.
    store = getattr(exc, "store", None) or "store"
    return JSONResponse(
        {
            "error": "store_unavailable",
            "detail": f"the anchor's {store} store is unavailable; try again shortly",
            "store": store,
        },
        503,
        headers={"Retry-After": "5"},
    )


# ---------------------------------------------------------------- app
def build_app(ctx: GatewayContext) -> ASGIApp:
    app = FastAPI(
        title="AIVillage anchor gateway",
        version=API_VERSION,
        description=__doc__,
        docs_url=None,
        redoc_url=None,
    )
    bearer = HTTPBearer(auto_error=False, description="a JWT from POST /v1/auth/token")
    settings = ctx.settings

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        ctx.count(str(exc.status))
        return error_response(exc)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        ctx.count("503")
        return unavailable_response(exc)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return store_error_response(ctx, request.method, request.url.path, exc)

    @app.exception_handler(MeshError)
    async def _node_error(request: Request, exc: MeshError) -> JSONResponse:
        # Unmapped MeshErrors come from a node that is not running (starting or stopped).
        return await _gateway_error(request, NodeUnavailable(str(exc)))

    async def limit(bucket: str, rate_per_s: float, burst: int) -> None:
        decision = await ctx.stores.take_token(bucket, rate_per_s, burst)  # the store bounds its own time
        if not decision.allowed:
            raise RateLimited(
                f"too many requests (per-{bucket.split(':', 1)[0]} limit)", retry_after_s=decision.retry_after_s
            )

    async def limit_ip(request: Request) -> str:
        ip = request.client.host if request.client else "unknown"
        await limit_host(ip)
        return ip

    async def limit_host(ip: str) -> None:
        for bucket, factor in ip_buckets(ip):  # an IPv6 client's /64, then its /48 (a larger bucket)
            await limit(f"ip:{bucket}", settings.ip_rate_per_s * factor, settings.ip_burst * factor)

    async def authenticate(authorization: str | None) -> Principal:
        principal = ctx.issuer.verify(bearer_token(authorization), now_s=ctx.wall_s())
        if not await ctx.stores.key_active(principal.key_id):
            raise Unauthenticated("the API key behind this token was revoked", code="key_revoked")
        await limit(f"key:{principal.key_id}", settings.key_rate_per_s, settings.key_burst)
        return principal

    def scoped(scope: str) -> Callable[..., Awaitable[Principal]]:
        async def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        ) -> Principal:
            await limit_ip(request)
            principal = await authenticate(request.headers.get("authorization"))
            principal.require(scope)
            return principal

        return dependency

    async def audit(principal: Principal, action: str, target: str, detail: Mapping[str, Any]) -> None:
        await ctx.stores.audit(f"key:{principal.key_id}", action, target, detail)

    @app.get("/v1/health", response_model=Health, responses={503: {"model": Health}})
    async def health(request: Request) -> JSONResponse:
        """Liveness and the state of each store: 200 when PostgreSQL and Redis answer (status ``degraded`` if the
        graph does not), 503 (status ``down``) while either is down. No authentication; the per-IP limit applies
        while Redis answers."""
        with contextlib.suppress(StoreUnavailable):  # the health check must answer while Redis is down
            await limit_ip(request)
        stores = {name: "ok" if state == "ok" else "down" for name, state in (await ctx.store_health()).items()}
        if any(stores.get(name) == "down" for name in GATEWAY_STORES):
            status = "down"
        else:
            status = "ok" if all(v == "ok" for v in stores.values()) else "degraded"
        body = {"status": status, "peer_id": ctx.node.identity.peer_id_hex, "stores": stores}
        return JSONResponse(body, 503 if status == "down" else 200)

    @app.post(
        "/v1/auth/token",
        response_model=TokenOut,
        responses={400: {"model": ErrorBody}, **ERRORS},
    )
    async def token(
        request: Request,
        grant_type: Annotated[str | None, Form(description="client_credentials")] = None,
        client_id: Annotated[str | None, Form(description="the API key's ID")] = None,
        client_secret: Annotated[str | None, Form(description="the API key")] = None,
        scope: Annotated[str | None, Form(description="space-separated subset of the key's scopes")] = None,
        x_api_key: Annotated[str | None, Header(description="an API key (instead of the OAuth2 form)")] = None,
    ) -> TokenOut:
        """Trade an API key (``X-API-Key``) or OAuth2 client credentials for a short-lived access token."""
        await limit_ip(request)
        expected_id: str | None = None
        if x_api_key is not None:
            secret = x_api_key
        elif grant_type is not None:
            if grant_type != "client_credentials":
                raise GatewayError(f"unsupported grant_type {grant_type!r}", code="unsupported_grant_type")
            basic = basic_credentials(request.headers.get("authorization"))
            expected_id, secret_or_none = basic if basic else (client_id, client_secret)
            if not expected_id or not secret_or_none:
                raise Unauthenticated("client_id and client_secret are required", code="invalid_client")
            secret = secret_or_none
        else:
            raise Unauthenticated(
                "send X-API-Key, or grant_type=client_credentials with client_id and client_secret",
                code="invalid_client",
            )
        info = await ctx.stores.verify_api_key(secret)
        if info is None or info.revoked or (expected_id is not None and info.key_id != expected_id):
            raise Unauthenticated("unknown or revoked API key", code="invalid_client")
        await limit(f"key:{info.key_id}", settings.key_rate_per_s, settings.key_burst)
        scopes = narrow_scopes(info.scopes, scope)
        issued = ctx.issuer.issue(key_id=info.key_id, role=info.role, scopes=scopes, now_s=ctx.wall_s())
        await ctx.stores.audit(
            f"key:{info.key_id}", "auth.token", info.key_id, {"scope": issued.scope, "expires_in_s": issued.expires_in}
        )
        return TokenOut(
            access_token=issued.access_token, token_type="Bearer", expires_in=issued.expires_in, scope=issued.scope
        )

    @app.get("/v1/node", response_model=NodeOut, responses=ERRORS)
    async def node_info(principal: Annotated[Principal, Depends(scoped(SCOPE_NODE_READ))]) -> NodeOut:
        """This anchor's node: identity, uptime, transports, peer and link counts."""
        return NodeOut.model_validate({**ctx.node.status(), "gateway_refusals": dict(ctx.counters)})

    @app.get("/v1/peers", response_model=list[PeerOut], responses=ERRORS)
    async def peers(principal: Annotated[Principal, Depends(scoped(SCOPE_NODE_READ))]) -> list[PeerOut]:
        """The peers the node knows, reachable or not."""
        return [PeerOut.model_validate(p) for p in ctx.node.peers_view()]

    @app.post("/v1/messages", response_model=SendOut, status_code=202, responses={400: {"model": ErrorBody}, **ERRORS})
    async def send_message(
        body: SendIn, principal: Annotated[Principal, Depends(scoped(SCOPE_MESSAGES_SEND))]
    ) -> SendOut:
        """Queue a message for the mesh: a private message (end-to-end encrypted, acked) to ``to``, or a
        broadcast. It is checked now (recipient, length, the node's queue limits: 400 when refused), then queued
        in Redis for the node; the 202 carries its ID, which ``GET /v1/messages/{id}`` follows."""
        size = len(body.text.encode())
        if ctx.node.core is None or ctx.queue is None:
            raise NodeUnavailable("the node is not running")
        try:  # refusals are not state changes: no audit row
            peer = check_send(ctx, body.to, body.text)
        except MeshError as exc:
            raise GatewayError(str(exc), code="mesh_rejected") from exc
        message_id = new_message_id()
        # The audit record and the message in one atomic Redis step (the record first; drained to PostgreSQL by
        # anchor.audit_drain); the rate limits were taken by the dependency. The common case never gets here:
        # anchor.gateway.fast_send answers it with the limits in the same step.
        await ctx.queue.put_audited(
            QueuedMessage(message_id, peer, body.text, principal.key_id),
            audit_record(principal.key_id, message_id, peer, size),
        )
        return SendOut(id=message_id, to=peer, state="queued")

    @app.get("/v1/messages/{message_id}", response_model=MessageStatus, responses={404: {"model": ErrorBody}, **ERRORS})
    async def message_status(
        message_id: Annotated[str, Path(max_length=64)],
        principal: Annotated[Principal, Depends(scoped(SCOPE_MESSAGES_SEND))],
    ) -> MessageStatus:
        """What became of a message this key sent (admins: any message), for 7 days after it was queued."""
        if ctx.queue is None:
            raise NodeUnavailable("the node is not running")
        status = await ctx.queue.status(message_id)
        if status is None or (status.pop("key_id") != principal.key_id and principal.role != "admin"):
            raise NotFound(f"no message {message_id!r} sent with this key", code="unknown_message")
        return MessageStatus.model_validate(status)

    def hex_param(size: int, doc: str) -> Any:
        return Query(min_length=2 * size, max_length=2 * size, pattern=f"^[0-9a-fA-F]{{{2 * size}}}$", description=doc)

    add_rag_routes(app, ctx, scoped, {400: {"model": ErrorBody}, **ERRORS})
    add_metrics_route(app, ctx, scoped, ERRORS)
    add_ask_routes(app, ctx, scoped, audit, {400: {"model": ErrorBody}, **ERRORS})
    add_vote_routes(app, ctx, scoped, audit, {400: {"model": ErrorBody}, **ERRORS})

    @app.get("/v1/mailbox", responses={404: {"model": ErrorBody}, **ERRORS})
    async def mailbox(
        request: Request,
        principal: Annotated[Principal, Depends(scoped(SCOPE_MAILBOX_READ))],
        peer: Annotated[str | None, hex_param(8, "the recipient's peer ID (step 2)")] = None,
        noise_key: Annotated[str | None, hex_param(32, "its Noise static key (step 2)")] = None,
        signing_key: Annotated[str | None, hex_param(32, "its Ed25519 key (step 2)")] = None,
        nonce: Annotated[str | None, hex_param(mailbox_protocol.NONCE_BYTES, "the challenge's nonce (step 2)")] = None,
        mac: Annotated[str | None, hex_param(mailbox_protocol.MAC_BYTES, "the proof's MAC (step 2)")] = None,
        signature: Annotated[str | None, hex_param(mailbox_protocol.SIGNATURE_BYTES, "the proof (step 2)")] = None,
        limit: Annotated[int | None, Query(ge=1, le=1024, description="envelopes at most (step 2)")] = None,
        grant: Annotated[str | None, hex_param(mailbox_protocol.GRANT_BYTES, "the grant of step 2 (step 3)")] = None,
        ack: Annotated[
            str | None,
            Query(
                max_length=mailbox_protocol.MAX_IDS_PER_ACK * 20,
                pattern=r"^[0-9]{1,18}(,[0-9]{1,18})*$",
                description="envelope IDs to delete, separated by commas (step 3)",
            ),
        ] = None,
    ) -> Any:
        """Sealed envelopes held for an offline peer that proves its identity, in three steps: no parameters → a
        challenge; ``peer, noise_key, signing_key, nonce, mac, signature`` (hex) → envelopes and a grant;
        ``grant`` + ``ack`` → those envelopes deleted."""
        if ctx.mailbox is None:
            raise NotFound("this anchor runs no mailbox", code="mailbox_disabled")
        # Only the declared parameters (validated above) reach the audit log and the mailbox.
        query = {k: v for k, v in request.query_params.items() if k in MAILBOX_PARAMS}
        action, target, detail = ctx.mailbox.audit_entry(query)
        await audit(principal, action, target, {"params": sorted(query), **detail})
        return await ctx.mailbox.gateway_fetch(principal.key_id, query)

    @app.get("/v1/keys", response_model=list[KeyOut], responses=ERRORS)
    async def list_keys(principal: Annotated[Principal, Depends(scoped(SCOPE_KEYS_ADMIN))]) -> list[KeyOut]:
        """Every API key (never the secrets)."""
        return [KeyOut.model_validate(key_out(k)) for k in await ctx.stores.list_api_keys()]

    @app.post("/v1/keys", response_model=KeyCreated, status_code=201, responses={400: {"model": ErrorBody}, **ERRORS})
    async def create_key(body: KeyIn, principal: Annotated[Principal, Depends(scoped(SCOPE_KEYS_ADMIN))]) -> KeyCreated:
        """A new API key; its secret is in this response only."""
        scopes = check_role_scopes(body.role, body.scopes)
        if not scopes <= principal.scopes:  # no minting of a key wider than the caller (a narrowed admin token)
            missing = " ".join(sorted(scopes - principal.scopes))
            raise Forbidden(
                f"a new key's scopes must be a subset of this token's; it lacks {missing}",
                code="scope_escalation",
            )
        await audit(principal, "keys.create", body.name, {"role": body.role, "scopes": sorted(scopes)})
        info, secret = await ctx.stores.create_api_key(body.name, body.role, scopes)
        return KeyCreated.model_validate({**key_out(info), "secret": secret})

    @app.delete("/v1/keys/{key_id}", response_model=KeyOut, responses={404: {"model": ErrorBody}, **ERRORS})
    async def revoke_key(
        key_id: Annotated[str, Path(max_length=64)],
        principal: Annotated[Principal, Depends(scoped(SCOPE_KEYS_ADMIN))],
    ) -> KeyOut:
        """Revoke a key: it can get no new tokens and its tokens stop working at once."""
        keys = {k.key_id: k for k in await ctx.stores.list_api_keys()}
        if key_id not in keys:
            raise NotFound(f"no API key {key_id!r}")
        await audit(principal, "keys.revoke", key_id, {})
        await ctx.stores.revoke_api_key(key_id)
        for wakeup in ctx.stream_wakeups.get(key_id, ()):
            wakeup.set()
        return KeyOut.model_validate({**key_out(keys[key_id]), "revoked": True})

    @app.websocket("/v1/events")
    async def events(websocket: WebSocket) -> None:
        """The node's inbox as a stream of JSON messages (one per received message). Bearer token in the
        Authorization header or ``?access_token=``; scope events:read."""
        auth = websocket.headers.get("authorization")
        if auth is None and "access_token" in websocket.query_params:
            auth = "Bearer " + websocket.query_params["access_token"]
        try:
            ip = websocket.client.host if websocket.client else "unknown"
            await limit_host(ip)
            principal = await authenticate(auth)
            principal.require(SCOPE_EVENTS_READ)
            if ctx.event_streams >= settings.max_event_streams:
                raise RateLimited("too many event streams open", retry_after_s=5)
            if len(ctx.stream_wakeups.get(principal.key_id, ())) >= ctx.max_event_streams_per_key:
                raise RateLimited("too many event streams open for this API key", retry_after_s=5)
        except GatewayError as exc:
            await websocket.send_denial_response(error_response(exc))
            return
        except StoreUnavailable as exc:
            await websocket.send_denial_response(unavailable_response(exc))
            return
        ctx.event_streams += 1
        wakeup = trio.Event()
        ctx.stream_wakeups.setdefault(principal.key_id, set()).add(wakeup)
        inbox = ctx.node.subscribe_inbox()
        try:
            await websocket.accept()
            await _pump_events(websocket, inbox, principal, ctx, wakeup)
        finally:
            ctx.event_streams -= 1
            streams = ctx.stream_wakeups.get(principal.key_id, set())
            streams.discard(wakeup)
            if not streams:
                ctx.stream_wakeups.pop(principal.key_id, None)
            ctx.node.unsubscribe_inbox(inbox)

    async def authenticate_request(request: Request) -> Principal:
        await limit_ip(request)
        return await authenticate(request.headers.get("authorization"))

    # /mcp: the node's MCP tools for remote clients, behind the same auth (anchor.gateway.mcp_route).
    # POST /v1/messages' common case in one Redis round trip (anchor.gateway.fast_send), the rest through FastAPI.
    return BodyLimit(FastSend(McpMount(app, ctx, authenticate_request), ctx), settings.max_body_bytes)


async def _pump_events(
    websocket: WebSocket,
    inbox: trio.MemoryReceiveChannel[Any],
    principal: Principal,
    ctx: GatewayContext,
    wakeup: trio.Event,
) -> None:
    """Send inbox messages until the client leaves, the node stops, the token expires or its key is revoked
    (re-checked every ``ctx.key_recheck_s`` and at once on a revocation through this gateway)."""
    close_code = WS_GOING_AWAY  # the node is stopping, unless a watcher says otherwise
    async with trio.open_nursery() as nursery:

        async def watch_client() -> None:
            # Clients have nothing to say (what they send, text or binary, is dropped); this notices them leave.
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
            nursery.cancel_scope.cancel()

        async def watch_key() -> None:
            nonlocal close_code
            while True:
                with trio.move_on_after(ctx.key_recheck_s):
                    if wakeup.is_set():  # woken once already (the key stayed active): back to the interval
                        await trio.sleep_forever()
                    await wakeup.wait()
                try:
                    active = await ctx.stores.key_active(principal.key_id)
                except StoreUnavailable:  # cannot tell: fail closed, the client reconnects later
                    close_code = WS_TRY_AGAIN_LATER
                    break
                if not active:
                    close_code = WS_POLICY_VIOLATION
                    break
            pumping.cancel()

        pumping = trio.CancelScope()
        nursery.start_soon(watch_client)
        nursery.start_soon(watch_key)
        with pumping:
            with trio.move_on_after(max(0.0, principal.expires_at_s - ctx.wall_s())) as expiry:
                async for message in inbox:
                    await websocket.send_json(message.to_json())
            if expiry.cancelled_caught:
                close_code = WS_POLICY_VIOLATION  # the token expired: get a new one
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # already gone
            await websocket.close(code=close_code)
        nursery.cancel_scope.cancel()
