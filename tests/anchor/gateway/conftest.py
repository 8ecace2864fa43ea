"""A real gateway for tests: a real Node (no transports), real PostgreSQL and Redis (the ``services``
fixture), reached through :class:`TcpProxy` so a test can cut a store off, and hypercorn on a free loopback
port, all in the test's nursery."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from anchor.audit_drain import audit_stream
from anchor.gateway.ports import MailboxPort
from anchor.run import run_anchor
from anchor.services_settings import ServiceSettings
from anchor.settings import AnchorSection
from anchor.stores.postgres import AuditEntry, PostgresStore
from anchor.stores.redis_store import RedisStore
from node.daemon import build_node
from node.identity import create_identity, identity_exists, load_identity
from node.node import Node
from node.rag.settings import RagSection
from node.settings import Config
from node.transports.base import Transport
from tests.anchor.gateway.proxy import TcpProxy

# Tests share the Redis buckets of 127.0.0.1; only the rate-limit test sets tight limits (on other addresses).
RELAXED = {
    "ip_rate_per_s": 1_000_000.0,
    "ip_burst": 1_000_000,
    "key_rate_per_s": 1_000_000.0,
    "key_burst": 1_000_000,
    "health_cache_s": 0.0,  # tests watch stores go down and come back through /v1/health
}


@dataclass
class Gateway:
    url: str
    node: Node
    cfg: Config
    pg: PostgresStore  # direct, not through the proxy: for setup and assertions
    pg_proxy: TcpProxy
    redis_proxy: TcpProxy
    graph_proxy: TcpProxy
    stopped: trio.Event  # set when run_anchor has returned (the node stopped, the stores closed)
    redis: RedisStore  # direct, not through the proxy
    pg_system_identifier: str

    async def key(self, role: str = "user", scopes: frozenset[str] | None = None) -> tuple[str, str]:
        from anchor.gateway.auth import check_role_scopes

        info, secret = await self.pg.create_api_key(f"test-{role}", role, check_role_scopes(role, scopes))
        return info.key_id, secret

    async def token(self, client: httpx.AsyncClient, secret: str, scope: str | None = None) -> str:
        data = {"scope": scope} if scope else None
        r = await client.post("/v1/auth/token", headers={"X-API-Key": secret}, data=data)
        assert r.status_code == 200, r.text
        tok: str = r.json()["access_token"]
        return tok

    @property
    def audit_stream(self) -> str:
        return audit_stream(self.pg_system_identifier, self.pg.database)

    async def audit_drained(self, timeout_s: float = 10.0) -> None:
        """Wait until the audit records waiting in Redis (POST /v1/messages) are in PostgreSQL: the drain deletes
        each from the stream after its insert committed (polled, bounded)."""
        with trio.fail_after(timeout_s):
            while True:  # a store's state changed by another task: polled, bounded
                if not await self.redis.audit_backlog(self.audit_stream):
                    return
                await trio.sleep(0.02)

    async def audit_of(self, key_id: str) -> list[AuditEntry]:
        """This key's audit rows, oldest first (once the drain has moved what waits in Redis)."""
        await self.audit_drained()
        rows = await self.pg.recent_audit(limit=1000)
        return [r for r in reversed(rows) if r.actor == f"key:{key_id}"]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vgw-", dir="/tmp"))
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    d.rmdir()


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(
    services: ServiceSettings, pg_dsn: str, nursery: trio.Nursery, short_tmp: Path
) -> AsyncIterator[StartGateway]:
    """``await start_gateway(**anchor_settings)``: a running gateway on a fresh database; stopped at the end."""
    pg_direct = PostgresStore(pg_dsn, timeout_s=5.0)
    await pg_direct.start()
    redis_direct = RedisStore(services.redis.url, timeout_s=5.0)
    nodes: list[Node] = []

    async def start(
        transports: Sequence[Transport] = (),
        mailbox: MailboxPort | None = None,
        *,
        data_dir: Path | None = None,
        persistent: bool = False,
        consume_queue: bool = True,
        drain_audit: bool = True,
        rag: RagSection | None = None,
        sections: Sequence[Any] = (),
        **anchor: Any,
    ) -> Gateway:
        """A gateway; ``data_dir`` reuses an earlier one's (same identity: a restart), ``persistent`` keeps the
        node's inbox and outbox on disk; ``sections`` are more settings sections for the node."""
        pg_proxy = TcpProxy(services.postgres.host, services.postgres.port)
        redis_proxy = TcpProxy(services.redis.host, services.redis.port)
        await nursery.start(pg_proxy.run)
        await nursery.start(redis_proxy.run)
        graph_proxy = TcpProxy(services.graph.host, services.graph.bolt_port)
        await nursery.start(graph_proxy.run)
        if data_dir is None:
            data_dir = short_tmp / f"gw{len(nodes)}"
            data_dir.mkdir(mode=0o700)
        raw = json.loads(json.dumps(dataclasses.asdict(services)))
        raw["postgres"]["port"] = pg_proxy.port
        raw["postgres"]["host"] = "127.0.0.1"
        raw["postgres"]["dbname"] = pg_dsn.rsplit("/", 1)[1]
        raw["redis"]["port"] = redis_proxy.port
        raw["redis"]["host"] = "127.0.0.1"
        raw["graph"]["bolt_port"] = graph_proxy.port
        raw["graph"]["host"] = "127.0.0.1"
        settings_file = data_dir / "services.json"
        settings_file.write_text(json.dumps(raw))
        settings_file.chmod(0o600)
        section = AnchorSection(
            services_settings=str(settings_file),
            store_timeout_s=2.0,
            **{"gateway_listen": "127.0.0.1:0", **RELAXED, **anchor},
        )
        cfg = Config(data_dir=data_dir, anchor=section, rag=rag or RagSection()).with_sections(*sections)
        identity = load_identity(data_dir) if identity_exists(data_dir) else create_identity(data_dir)
        node = build_node(cfg, identity, transports=transports, control=False, persistent_inbox=persistent)
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await run_anchor(
                    node,
                    mailbox=mailbox,
                    consume_queue=consume_queue,
                    drain_audit=drain_audit,
                    task_status=task_status,
                )
            finally:
                stopped.set()

        urls: list[str] = await nursery.start(run)
        nodes.append(node)
        system_identifier = await pg_direct.system_identifier()
        return Gateway(
            urls[0], node, cfg, pg_direct, pg_proxy, redis_proxy, graph_proxy, stopped, redis_direct, system_identifier
        )

    try:
        yield start
    finally:
        for node in nodes:
            node.request_stop()
        await pg_direct.aclose()
        await redis_direct.aclose()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as c:
        yield c
