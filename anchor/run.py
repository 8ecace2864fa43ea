"""An anchor in one nursery: the node, the stores and the HTTP gateway.

``village anchor run`` (and ``village run`` with ``[anchor] enabled = true``) call :func:`run_anchor` in place
of ``Node.run``: the stores open (PostgreSQL migrations applied; a server that is down does not stop the start —
requests that need it answer 503 until it is back), the node starts, then the gateway listens on
``[anchor] gateway_listen``. When the node stops (signal, ``village stop``), the gateway stops taking requests,
lets open ones finish, and the stores close.

The graph store is opened too (its state shows in ``GET /v1/health``; no gateway route needs it yet).
The stores' connection settings come from the JSON file ``scripts/services up`` writes (see
:func:`services_settings_path`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from anchor.gateway.app import GatewayContext, build_app
from anchor.gateway.auth import TokenIssuer, load_or_create_secret
from anchor.gateway.ports import ApiKeyInfo, MailboxPort
from anchor.gateway.server import serve_http, tls_files
from anchor.gateway.stores_adapter import StoresAdapter
from anchor.queue import MessageQueue
from anchor.services import DEFAULT_DIR, SETTINGS_FILE, ServicesError, ServiceSettings, load_settings
from anchor.stores.graph import GraphStore
from anchor.stores.postgres import PostgresStore
from anchor.stores.redis_store import RedisStore
from node.config import Config
from node.errors import StartupError

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("village.anchor")

SETTINGS_ENV = "VILLAGE_SERVICES_SETTINGS"


def services_settings_path(cfg: Config, env: Mapping[str, str] | None = None) -> Path:
    """``[anchor] services_settings`` → ``$VILLAGE_SERVICES_SETTINGS`` → ``<data dir>/services.json`` → the
    development checkout's ``.services/settings.json`` (what ``scripts/services up`` writes)."""
    env = os.environ if env is None else env
    if cfg.anchor.services_settings:
        return Path(cfg.anchor.services_settings).expanduser()
    if env.get(SETTINGS_ENV):
        return Path(env[SETTINGS_ENV])
    in_data_dir = cfg.data_dir / "services.json"
    if in_data_dir.exists():
        return in_data_dir
    return DEFAULT_DIR / SETTINGS_FILE


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
    timeout_s = cfg.anchor.store_timeout_s
    graph = settings.graph
    async with (
        PostgresStore(settings.postgres.dsn, timeout_s=timeout_s) as postgres,
        RedisStore(settings.redis.url, timeout_s=timeout_s) as redis,
        GraphStore(graph.bolt_url, user=graph.user, password=graph.password, timeout_s=timeout_s) as graph_store,
    ):
        yield StoresAdapter(postgres, redis, graph_store, key_cache_ttl_s=cfg.anchor.key_cache_ttl_s)


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


async def run_anchor(
    node: Node,
    *,
    mailbox: MailboxPort | None = None,
    consume_queue: bool = True,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``node`` with the stores and the gateway until the node stops; reports the gateway's URLs.

    ``consume_queue`` False leaves the messages the gateway queues in Redis for a later start (tests use it to
    stop an anchor between accepting a message and handing it to the node)."""
    cfg = node.config
    tls = tls_files(cfg.anchor)  # before anything starts: a public plaintext gateway is refused
    secret = load_or_create_secret(cfg.data_dir)
    issuer = TokenIssuer(secret, issuer=f"aivillage-anchor:{node.identity.peer_id_hex}", ttl_s=cfg.anchor.token_ttl_s)
    node_stopped = trio.Event()

    async def run_node(task_status: trio.TaskStatus[None]) -> None:
        try:
            await node.run(task_status=task_status)
        finally:
            node_stopped.set()

    async with open_stores(cfg) as stores, trio.open_nursery() as nursery:
        ctx = GatewayContext(
            node=node,
            stores=stores,
            issuer=issuer,
            settings=cfg.anchor,
            wall_s=lambda: node.clock.wall_ms() / 1000.0,
            mailbox=mailbox,
            queue=MessageQueue(
                stores.redis,
                node,
                max_backlog=cfg.anchor.queue_max,
                block_ms=int(min(2000.0, cfg.anchor.store_timeout_s * 500)),
            ),
        )
        # The gateway listens before the node starts, so the node's readiness (log line, READY=1 to systemd)
        # means the whole anchor is up, and a port in use fails the start before it. Requests that need the
        # node answer 503 until it runs.
        stop = trio.Event()
        urls: list[str] = []
        try:
            urls = await nursery.start(
                functools.partial(serve_http, tls=tls), build_app(ctx), cfg.anchor.gateway_listen, stop
            )
        except* OSError as group:  # hypercorn binds inside its own nursery: the error comes in a group
            reason = "; ".join(str(getattr(e, "strerror", None) or e) for e in _leaves(group))
            raise StartupError(f"the gateway cannot listen on {cfg.anchor.gateway_listen}: {reason}") from None
        await nursery.start(run_node)
        # The queue's consumer hands messages to the node while it runs; it stops before the node drains, and
        # what it has not acknowledged by then stays in Redis for the next start.
        consumer = trio.CancelScope()
        if consume_queue and ctx.queue is not None:
            queue = ctx.queue

            async def consume() -> None:
                with consumer:
                    await queue.run()

            nursery.start_soon(consume)
        if ctx.mailbox is None:  # the node's MailboxService (with [mailbox] serve = true) answers GET /v1/mailbox
            ctx.mailbox = node.mailbox_service
        log.info("anchor ready: gateway on %s", ", ".join(urls))
        task_status.started(urls)
        # The gateway stops taking requests as soon as a stop is requested (open ones get hypercorn's graceful
        # timeout) while the node drains; if the node ends otherwise, the gateway stops then.
        watch = trio.CancelScope()

        async def stop_gateway() -> None:
            with watch:
                await node.wait_stop_requested()
            consumer.cancel()
            stop.set()

        nursery.start_soon(stop_gateway)
        await node_stopped.wait()
        consumer.cancel()
        watch.cancel()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]
