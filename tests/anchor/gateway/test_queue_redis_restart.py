"""The gateway's queue survives a Redis restart: a message accepted (202) before Redis went down and came back is
delivered once. Real gateway, a private real Redis (append-only file on, as `scripts/services` runs it) restarted
between the 202 and its consumption, real PostgreSQL, real nodes on memory links."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from anchor.gateway.auth import check_role_scopes
from anchor.queue import GROUP
from anchor.run import run_anchor
from anchor.services_settings import RedisSettings, ServiceSettings, known_fields
from anchor.settings import AnchorSection
from anchor.stores.postgres import PostgresStore
from anchor.stores.redis_store import RedisStore
from node.daemon import build_node
from node.identity import create_identity, identity_exists, load_identity
from node.node import Node
from node.settings import Config
from node.transports.base import Transport
from node.transports.memory import MemoryNetwork
from tests.anchor.gateway.conftest import RELAXED
from tests.anchor.gateway.test_gateway import until_settled
from tests.anchor.mailbox_db import settings_for_database
from tools.services import Services


@dataclass
class Anchor:
    node: Node
    url: str
    stopped: trio.Event


async def _start_anchor(
    nursery: trio.Nursery, data: Path, settings: Path, transport: Transport, *, consume: bool
) -> Anchor:
    section = AnchorSection(services_settings=str(settings), gateway_listen="127.0.0.1:0", **RELAXED)  # type: ignore[arg-type]
    ident = load_identity(data) if identity_exists(data) else create_identity(data)
    node = build_node(Config(data_dir=data, anchor=section), ident, transports=[transport], control=False)
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await run_anchor(node, consume_queue=consume, task_status=task_status)
        finally:
            stopped.set()

    urls: list[str] = await nursery.start(run)
    return Anchor(node, urls[0], stopped)


async def _token(client: httpx.AsyncClient, secret: str) -> dict[str, str]:
    r = await client.post("/v1/auth/token", headers={"X-API-Key": secret})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_a_message_accepted_before_a_redis_restart_arrives_once(
    nursery: trio.Nursery,
    services: ServiceSettings,
    pg_dsn: str,
    private_services: Callable[..., Services],
    short_tmp: Path,
) -> None:
    redis_svc = private_services("redis")  # our own Redis: restarting it must not disturb the shared one
    private = RedisSettings(**known_fields(RedisSettings, json.loads(redis_svc.settings_path.read_text())["redis"]))
    settings = settings_for_database(services, pg_dsn, short_tmp / "services.json")
    raw = json.loads(settings.read_text())
    raw["redis"] = dataclasses.asdict(private)
    settings.write_text(json.dumps(raw))

    net = MemoryNetwork(seed=5)
    await nursery.start(net.run)
    receiver_dir = short_tmp / "receiver"
    receiver_dir.mkdir(mode=0o700)
    to_receiver = net.transport("receiver")
    receiver = Node(
        Config(data_dir=receiver_dir), create_identity(receiver_dir), transports=[to_receiver], control=False
    )
    await nursery.start(receiver.run)
    anchor_dir = short_tmp / "anchor"
    anchor_dir.mkdir(mode=0o700)
    async with PostgresStore(pg_dsn) as pg:
        _, secret = await pg.create_api_key("sender", "user", check_role_scopes("user", None))

    # The anchor accepts the message (202) and stops before handing it to its node.
    first = await _start_anchor(nursery, anchor_dir, settings, net.transport("anchor-1"), consume=False)
    async with httpx.AsyncClient(base_url=first.url) as client:
        auth = await _token(client, secret)
        r = await client.post("/v1/messages", headers=auth, json={"to": receiver.identity.peer_id_hex, "text": "hi"})
        assert r.status_code == 202 and r.json()["state"] == "queued", r.text
        message_id = r.json()["id"]
    first.node.request_stop()
    with trio.fail_after(20):
        await first.stopped.wait()

    # Redis stops and starts again (same port and password): the queued message is still there.
    redis_svc.down(("redis",))
    assert redis_svc.pid_of("redis") == 0
    redis_svc.up(("redis",))
    redis = RedisStore(private.url, timeout_s=5.0)
    stream = f"messages:{first.node.identity.peer_id_hex}"
    assert await redis.stream_length(stream) == 1

    # The anchor's next start consumes it; the receiver gets it, once.
    to_second = net.transport("anchor-2")
    second = await _start_anchor(nursery, anchor_dir, settings, to_second, consume=True)
    net.connect(to_receiver, to_second)
    async with httpx.AsyncClient(base_url=second.url) as client:
        auth = await _token(client, secret)
        assert (await until_settled(client, auth, message_id))["state"] in ("pending", "delivered")
    with trio.fail_after(30):
        await second.node.wait_until(lambda: second.node.outgoing[message_id].state == "delivered")
    assert receiver.inbox is not None and second.node.outbox is not None
    assert [(m.id, m.text) for m in receiver.inbox.list()] == [(message_id, "hi")]
    assert [e.id for e in second.node.outbox.list(limit=10)] == [message_id]
    assert await redis.stream_length(stream) == 0 and await redis.stream_pending_count(stream, GROUP) == 0
    await redis.aclose()
    second.node.request_stop()
    receiver.request_stop()
