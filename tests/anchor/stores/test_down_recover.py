"""Each store against its own private server that the test stops and starts again: calls fail with
StoreUnavailable naming the store (one log line per outage), and the same store object works again once the
server is back — no restart of the anchor needed."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from anchor.services_settings import ServiceSettings, load_settings
from anchor.stores import GraphStore, PostgresStore, RedisStore, StoreUnavailable
from tools.services import Services

Start = Callable[..., Services]
TIMEOUT_S = 1.0  # the stores' call timeout here: a dead server is reported within about this


async def _outage_and_recovery(
    caplog: pytest.LogCaptureFixture,
    svc: Services,
    name: str,
    call: Callable[[], Awaitable[Any]],
) -> None:
    caplog.set_level(logging.INFO, logger="village.anchor.stores")
    await call()
    pid = svc.pid_of(name)
    assert pid > 0
    await trio.to_thread.run_sync(svc.down, (name,))
    assert svc.pid_of(name) == 0  # exited (or a zombie waiting for its reaper)
    caplog.clear()
    for _ in range(3):
        with pytest.raises(StoreUnavailable) as info:
            await call()
        assert info.value.store == name and f"{name} unavailable" in str(info.value)
    ours = [r for r in caplog.records if r.name == "village.anchor.stores"]
    assert [r.levelno for r in ours] == [logging.WARNING], "one line per outage, not one per call"
    assert name in ours[0].getMessage()

    await trio.to_thread.run_sync(svc.up, (name,))
    # The first call after the server is back succeeds (same store object, same settings).
    await call()
    await call()
    assert any(r.getMessage() == f"{name} store available again" for r in caplog.records)


async def test_postgres_down_and_recover(private_services: Start, caplog: pytest.LogCaptureFixture) -> None:
    svc = private_services("postgres")
    raw = load_settings_partial(svc)
    store = PostgresStore(raw.postgres.dsn, timeout_s=TIMEOUT_S)
    await store.start()
    key, secret = await store.create_api_key("k", "user", set())

    async def call() -> None:
        assert await store.verify_api_key(secret) == key

    await _outage_and_recovery(caplog, svc, "postgres", call)
    await store.aclose()


async def test_redis_down_and_recover(private_services: Start, caplog: pytest.LogCaptureFixture) -> None:
    svc = private_services("redis")
    store = RedisStore(load_settings_partial(svc).redis.url, timeout_s=TIMEOUT_S)

    async def call() -> None:
        await store.take_token("b", 1000.0, 1000)

    await _outage_and_recovery(caplog, svc, "redis", call)
    await store.aclose()


async def test_redis_down_and_recover_on_the_native_path(
    private_services: Start, caplog: pytest.LogCaptureFixture
) -> None:
    svc = private_services("redis")
    store = RedisStore(load_settings_partial(svc).redis.url, timeout_s=TIMEOUT_S)
    assert store._native is not None  # the queue's settle runs on trio sockets, not redis-py

    async def call() -> None:
        assert await store.queue_settle_many("s", "g", [("0-1", None, None)], ttl_s=1.0) == 0

    await _outage_and_recovery(caplog, svc, "redis", call)
    await store.aclose()


async def test_graph_down_and_recover(private_services: Start, caplog: pytest.LogCaptureFixture) -> None:
    svc = private_services("graph")
    store = GraphStore(load_settings_partial(svc).graph.bolt_url, timeout_s=TIMEOUT_S)

    async def call() -> None:
        await store.set_trust("a", "b", 1.0, 1.0, 0)

    await _outage_and_recovery(caplog, svc, "graph", call)
    await store.aclose()


async def test_postgres_down_at_start_then_up(private_services: Start, caplog: pytest.LogCaptureFixture) -> None:
    """An anchor may start before its database: migrations are applied on the first call that gets through."""
    svc = private_services("postgres")
    dsn = load_settings_partial(svc).postgres.dsn
    await trio.to_thread.run_sync(svc.down, ("postgres",))
    store = PostgresStore(dsn, timeout_s=TIMEOUT_S)
    async with store:  # does not raise: the outage is reported per call
        with pytest.raises(StoreUnavailable):
            await store.ping()
        await trio.to_thread.run_sync(svc.up, ("postgres",))
        await store.ping()
        assert len(await store.applied_migrations()) >= 1


def load_settings_partial(svc: Services) -> ServiceSettings:
    """Settings of a private directory where only some servers were started (the others' entries absent)."""
    import json

    raw = json.loads(svc.settings_path.read_text())
    dummy_pg = {"host": "127.0.0.1", "port": 1, "user": "x", "password": "x", "dbname": "x", "socket_dir": ""}
    dummy_redis = {"host": "127.0.0.1", "port": 1, "password": "x", "socket_path": ""}
    dummy_graph = {"kind": "falkordb", "host": "127.0.0.1", "bolt_port": 1, "user": "", "password": "", "redis_port": 1}
    raw.setdefault("postgres", dummy_pg)
    raw.setdefault("redis", dummy_redis)
    raw.setdefault("graph", dummy_graph)
    path = svc.base / "partial.json"
    path.write_text(json.dumps(raw))
    return load_settings(path)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its direct children (PostgreSQL's postmaster and its backends)."""
    children = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat_path.parent.name))
    return [pid, *children]


async def test_postgres_hung_server_gives_unavailable_at_the_deadline(private_services: Start) -> None:
    """A server that stops answering with its connections open (SIGSTOP) would block psycopg forever: the call
    fails at the store's deadline (2 x timeout_s) instead, and works again when the server resumes."""
    svc = private_services("postgres")
    store = PostgresStore(load_settings_partial(svc).postgres.dsn, timeout_s=TIMEOUT_S)
    await store.start()
    await store.ping()
    pids = _process_tree(svc.pid_of("postgres"))
    assert len(pids) > 1
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        start = trio.current_time()
        with pytest.raises(StoreUnavailable, match="no answer within"):
            await store.ping()
        assert trio.current_time() - start < 4 * TIMEOUT_S
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    with trio.fail_after(30):
        while True:  # the abandoned call finishes once the server resumes; then calls get through again
            try:
                await store.ping()
                break
            except StoreUnavailable:
                await trio.sleep(0.1)
    await store.aclose()
