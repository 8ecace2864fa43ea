"""The anchor's gateway as a service of the node: the stores and the HTTP gateway (:class:`GatewayService`).

``village anchor run`` (and ``village run`` with ``[anchor] enabled = true``) add it through the anchor plugin
(:mod:`anchor.plugin`); :func:`run_anchor` runs a given node with it (tests, benchmarks). When the node stops
(signal, ``village stop``), the gateway stops taking requests, lets open ones finish while the node drains, and the
stores close.

The graph store is opened too (its state shows in ``GET /v1/health``; no gateway route needs it yet).
The stores' connection settings come from the JSON file ``scripts/services up`` writes (see
:func:`services_settings_path`).
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio

from anchor.audit_drain import RETRY_S, AuditDrain, audit_stream_of, consumer_name
from anchor.gateway.app import GatewayContext, build_app
from anchor.gateway.auth import TokenIssuer, issuer_name, load_or_create_secret, load_shared_secret
from anchor.gateway.forwarded import TrustedProxies
from anchor.gateway.ports import ApiKeyInfo, MailboxPort
from anchor.gateway.server import is_loopback, serve_http, tls_files
from anchor.gateway.stores_adapter import StoresAdapter
from anchor.mcp_memory import KEY_BYTES as MEMORY_KEY_BYTES
from anchor.mcp_memory import KEY_FILE as MEMORY_KEY_FILE
from anchor.mcp_memory import BoltMemoryFactory
from anchor.mcp_memory import storage_factory as memory_storage_factory
from anchor.queue import MessageQueue
from anchor.services_settings import ServicesError, ServiceSettings, load_settings, settings_path
from anchor.settings import AnchorSection, parse_networks
from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.graph import GraphStore
from anchor.stores.postgres import PostgresStore
from anchor.stores.redis_store import RedisStore
from node.errors import StartupError
from node.mcp.settings import McpSettings
from node.outbox import OutboxError
from node.privatefile import PrivateFileRefused, read_private_file
from node.settings import Config

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("village.anchor")

T = TypeVar("T")


def services_settings_path(cfg: Config, env: Mapping[str, str] | None = None) -> Path:
    """Where the stores' connection settings are read from (:func:`anchor.services_settings.settings_path`)."""
    return settings_path(cfg.section(AnchorSection).services_settings, cfg.data_dir, env)


def load_services(cfg: Config) -> ServiceSettings:
    path = services_settings_path(cfg)
    try:
        return load_settings(path)
    except ServicesError as exc:
        raise StartupError(f"anchor stores: {exc}") from exc


@asynccontextmanager
async def open_stores(cfg: Config) -> AsyncIterator[StoresAdapter]:
    """PostgreSQL, Redis and the Bolt graph server, closed on exit. A server that is down is reported, not fatal
    (the graph opens lazily: its driver connects on first use)."""
    settings = load_services(cfg)
    anchor = cfg.section(AnchorSection)
    timeout_s = anchor.store_timeout_s
    graph = settings.graph
    async with (
        PostgresStore(settings.postgres.dsn, timeout_s=timeout_s) as postgres,
        RedisStore(settings.redis.url, timeout_s=timeout_s, native=anchor.redis_client == "native") as redis,
        GraphStore(graph.bolt_url, user=graph.user, password=graph.password, timeout_s=timeout_s) as graph_store,
    ):
        yield StoresAdapter(
            postgres, redis, graph_store, key_cache_ttl_s=anchor.key_cache_ttl_s, token_ttl_s=anchor.token_ttl_s
        )


class KeyAdmin:
    """What ``village anchor keys`` does: key changes, each written to the audit log first."""

    def __init__(self, stores: StoresAdapter, actor: str) -> None:
        self.stores = stores
        self.actor = actor

    async def create(self, name: str, role: str, scopes: frozenset[str]) -> tuple[ApiKeyInfo, str]:
        await self.stores.audit(self.actor, "keys.create", name, {"role": role, "scopes": sorted(scopes)})
        return await self.stores.create_api_key(name, role, scopes)

    async def list(self) -> list[ApiKeyInfo]:
        return await self.stores.list_api_keys()

    async def revoke(self, key_id: str) -> bool:
        await self.stores.audit(self.actor, "keys.revoke", key_id, {})
        return await self.stores.revoke_api_key(key_id)


@asynccontextmanager
async def open_key_admin(cfg: Config, actor: str = "cli") -> AsyncIterator[KeyAdmin]:
    async with open_stores(cfg) as stores:
        yield KeyAdmin(stores, actor)


class GatewayService:
    """The anchor's front door, a service of the node (``anchor-gateway``): opens the stores (PostgreSQL migrations
    applied; a server that is down does not stop the start — requests that need it answer 503 until it is back),
    listens on ``[anchor] gateway_listen`` and hands the messages queued in Redis to the node. It starts before the
    transports, so the node's readiness (log line, ``READY=1``) means the whole anchor is up, and a port in use
    fails the start. When a stop is requested the gateway stops taking requests (open ones get hypercorn's graceful
    timeout) and the queue's consumer stops; what it has not acknowledged stays in Redis for the next start.

    ``mailbox`` answers ``GET /v1/mailbox`` (default: the node's ``mailbox-server`` service, with ``mailbox.serve``);
    ``consume_queue`` False leaves queued messages in Redis (tests stop an anchor between a 202 and its
    consumption); ``drain_audit`` False leaves the audit records of sent messages in Redis, and so the messages
    undelivered (tests show they reach PostgreSQL, and then the node, later, through another drain). :attr:`urls`
    are the gateway's once started.

    The audit drain (:mod:`anchor.audit_drain`) runs while the gateway does; at stop it gets one last bounded pass
    (whatever it leaves, the next start or another gateway's drain inserts)."""

    name = "anchor-gateway"

    def __init__(
        self, *, mailbox: MailboxPort | None = None, consume_queue: bool = True, drain_audit: bool = True
    ) -> None:
        self.mailbox = mailbox
        self.consume_queue = consume_queue
        self.drain_audit = drain_audit
        self.audit_drain: AuditDrain | None = None
        self.urls: list[str] = []

    def mcp_memory_storage(self, node: Node) -> BoltMemoryFactory | None:
        """The node's MCP memory on the Bolt graph store (``[anchor] mcp_memory = "graph"``; default ``local``),
        namespaced by the node's peer ID and sealed with the node's memory key (``<data dir>/anchor/mcp-memory.key``,
        0600): the server holds only ciphertext. Plaintext Bolt to a server that is not on loopback is refused.
        Offered to the MCP service (node.mcp.service), which calls it when it builds."""
        if node.config.section(AnchorSection).mcp_memory != "graph":
            return None

        def key() -> bytes:
            found = load_or_create_secret(node.config.data_dir, MEMORY_KEY_FILE)  # refused if shorter than 32
            if len(found) != MEMORY_KEY_BYTES:
                path = node.config.data_dir / "anchor" / MEMORY_KEY_FILE
                raise StartupError(
                    f"anchor.mcp_memory = graph: the memory key {path} holds {len(found)} bytes, not "
                    f"{MEMORY_KEY_BYTES}: it is not a key this node made; put the node's 32-byte key back, or move "
                    f"it away to start with a new key (rows sealed with the old one then stay unread)"
                )
            return found

        return self._memory_graph(node, key)

    def mcp_memory_graph(self, node: Node) -> BoltMemoryFactory | None:
        """This node's namespace on the graph store whatever ``mcp_memory`` says: the MCP service looks there for
        a copy an earlier setting left (warned about at start, erased by ``village memory forget``). No key is
        created for it (erasing and counting rows need none)."""
        if node.config.section(AnchorSection).mcp_memory == "graph":
            return None  # it is the active store

        def key() -> bytes:
            try:
                found = read_private_file(node.config.data_dir / "anchor" / MEMORY_KEY_FILE, 64)
            except (PrivateFileRefused, OSError):
                found = None
            return found if found and len(found) == MEMORY_KEY_BYTES else secrets.token_bytes(MEMORY_KEY_BYTES)

        return self._memory_graph(node, key)

    def _memory_graph(self, node: Node, key: Callable[[], bytes]) -> BoltMemoryFactory:
        anchor = node.config.section(AnchorSection)
        graph = load_services(node.config).graph
        if not is_loopback(graph.host):
            raise StartupError(
                f"anchor.mcp_memory = graph: the graph server {graph.host} is not on loopback and Bolt to it would "
                f"be plaintext (bolt://, no bolt+s://); use mcp_memory = local"
            )
        mcp = node.config.section(McpSettings)
        return memory_storage_factory(
            graph.bolt_url,
            namespace=f"mcp:{node.identity.peer_id_hex}",
            key=key(),  # after the checks: a refused start makes no key
            user=graph.user,
            password=graph.password,
            timeout_s=anchor.store_timeout_s,
            max_entities=mcp.memory_max_entities,
            max_relations=mcp.memory_max_relations,
        )

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = node.config
        anchor = cfg.section(AnchorSection)
        tls = tls_files(anchor)  # before anything starts: a public plaintext gateway is refused
        # Replicas of one anchor (`cluster`) sign with one shared secret under the cluster's name, so a token one
        # issued works at every other (a load balancer spreads a client's requests over them).
        if anchor.jwt_secret_file:
            secret = load_shared_secret(Path(anchor.jwt_secret_file).expanduser())
        else:
            secret = load_or_create_secret(cfg.data_dir)
        issuer = TokenIssuer(
            secret, issuer=issuer_name(node.identity.peer_id_hex, anchor.cluster), ttl_s=anchor.token_ttl_s
        )
        async with _closed_even_if_cancelled(open_stores(cfg)) as stores, trio.open_nursery() as nursery:
            await check_no_eviction(stores.redis)
            ctx = GatewayContext(
                node=node,
                stores=stores,
                issuer=issuer,
                settings=anchor,
                wall_s=lambda: node.clock.wall_ms() / 1000.0,
                mailbox=self.mailbox if self.mailbox is not None else _mailbox_server(node),
                queue=MessageQueue(
                    stores.redis,
                    node,
                    max_backlog=anchor.queue_max,
                    block_ms=int(min(2000.0, anchor.store_timeout_s * 500)),
                    max_audit_backlog=anchor.audit_backlog_max,
                    audit_stream=await _audit_stream_or_empty(stores.postgres),
                    cluster=anchor.cluster,
                    claim_idle_s=anchor.claim_idle_s,
                ),
            )
            drain = self.audit_drain = AuditDrain(
                stores.redis,
                stores.postgres,
                consumer_name(node.identity.peer_id_hex),
                claim_idle_s=anchor.audit_claim_idle_s,
                block_ms=int(min(1000.0, anchor.store_timeout_s * 500)),
            )
            if ctx.queue is not None and not ctx.queue.audit_stream:  # PostgreSQL down at start: named when it is up
                nursery.start_soon(_name_audit_stream, ctx.queue, stores.postgres)
            stop = trio.Event()
            try:
                app = build_app(ctx)
                if anchor.trusted_proxies:  # behind a load balancer: rate limit the client, not the proxy
                    app = TrustedProxies(app, parse_networks("anchor.trusted_proxies", anchor.trusted_proxies))
                self.urls = await nursery.start(
                    functools.partial(serve_http, tls=tls), app, anchor.gateway_listen, stop
                )
            except* OSError as group:  # hypercorn binds inside its own nursery: the error comes in a group
                reason = "; ".join(str(getattr(e, "strerror", None) or e) for e in _leaves(group))
                raise StartupError(f"the gateway cannot listen on {anchor.gateway_listen}: {reason}") from None
            consumer = trio.CancelScope()
            if self.consume_queue and ctx.queue is not None:
                queue = ctx.queue

                async def consume() -> None:
                    with consumer:
                        if anchor.cluster:  # what this node queued for itself before it joined the cluster
                            await _drain_own_stream(queue)
                        await queue.run()

                nursery.start_soon(consume)
            draining = trio.CancelScope()
            if self.drain_audit:

                async def drain_audit() -> None:
                    with draining:
                        await drain.run()

                nursery.start_soon(drain_audit)
            log.info("anchor ready: gateway on %s", ", ".join(self.urls))
            task_status.started()
            await node.wait_stop_requested()
            consumer.cancel()
            stop.set()
            if self.drain_audit:
                draining.cancel()
                with trio.CancelScope(shield=True):  # the node cancels its services after its drain
                    await drain.flush(timeout_s=2 * anchor.store_timeout_s)


async def _audit_stream_or_empty(postgres: PostgresStore) -> str:
    try:
        return await audit_stream_of(postgres)
    except StoreUnavailable:
        return ""


async def _name_audit_stream(queue: MessageQueue, postgres: PostgresStore) -> None:
    """Until PostgreSQL first answers, POST /v1/messages answers 503 (the audit stream is named after its server)."""
    while True:
        name = await _audit_stream_or_empty(postgres)
        if name:
            queue.audit_stream = name
            return
        await trio.sleep(RETRY_S)  # PostgreSQL is down: retried as the drain retries


async def check_no_eviction(redis: RedisStore) -> None:
    """Refuse to start on a Redis that may evict keys when its memory is full (``maxmemory-policy`` other than
    ``noeviction``): it would drop queued messages, audit records waiting for PostgreSQL and the status records that
    keep a message from being sent twice. A Redis that will not say (CONFIG disabled, as some hosted Redis do) or
    cannot be reached now is warned about."""
    try:
        policy = await redis.maxmemory_policy()
    except StoreError as exc:
        log.warning("Redis maxmemory-policy not checked (%s); it must be noeviction", exc)
        return
    if policy is None:
        log.warning(
            "Redis does not say its maxmemory-policy (CONFIG GET refused): make sure it is noeviction, or queued "
            "messages, audit records and message status records may be evicted"
        )
    elif policy != "noeviction":
        raise StartupError(
            f"Redis maxmemory-policy is {policy}: it may evict queued messages, audit records and the status records "
            f"that keep a message from being sent twice; set maxmemory-policy noeviction (redis.conf, or "
            f"CONFIG SET maxmemory-policy noeviction) — when its memory is full Redis then refuses writes and the "
            f"gateway answers 503"
        )


async def _drain_own_stream(cluster_queue: MessageQueue) -> None:
    """Hand over the messages left in this node's own stream from before ``[anchor] cluster`` was set (replicas
    read the cluster's stream only). A store error is logged; the next start tries again."""
    own = MessageQueue(
        cluster_queue.redis, cluster_queue.node, max_backlog=cluster_queue.max_backlog, block_ms=0, cluster=""
    )
    try:
        handled = await own.drain_backlog()
    except (StoreError, OutboxError) as exc:
        log.warning("message queue: messages queued before this node joined its cluster wait for a restart: %s", exc)
        return
    if handled:
        log.info("message queue: handed over %d messages queued before this node joined its cluster", handled)


@asynccontextmanager
async def _closed_even_if_cancelled(cm: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """``cm``, whose exit runs shielded: the node cancels its services after its drain, and the stores' pools
    must still close (each close is bounded by the stores' own timeouts)."""
    value = await cm.__aenter__()
    try:
        yield value
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                raise
    else:
        with trio.CancelScope(shield=True):
            await cm.__aexit__(None, None, None)


def _mailbox_server(node: Node) -> MailboxPort | None:
    """The node's ``mailbox-server`` service's :class:`MailboxService` (with ``mailbox.serve``), if it runs one."""
    from anchor.mailbox import MailboxServerService

    server = node.service(MailboxServerService.name)
    return server.service if isinstance(server, MailboxServerService) else None


async def run_anchor(
    node: Node,
    *,
    mailbox: MailboxPort | None = None,
    consume_queue: bool = True,
    drain_audit: bool = True,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``node`` with a :class:`GatewayService` added until the node stops; reports the gateway's URLs (tests
    and benchmarks run an anchor in-process this way; the daemon adds the service through the anchor plugin)."""
    tls_files(node.config.section(AnchorSection))  # a public plaintext gateway is refused before anything starts
    gateway = GatewayService(mailbox=mailbox, consume_queue=consume_queue, drain_audit=drain_audit)
    node.services.append(gateway)

    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        task_status.started(gateway.urls)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]
