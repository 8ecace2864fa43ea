"""The anchor stores' cost over their bare drivers, on the real servers of ``scripts/services``.

    python bench/stores.py [--seconds S]        (needs `scripts/services up`; uses a scratch database)

Each store call hops to a worker thread (``trio.to_thread.run_sync`` through a CapacityLimiter) and back; the
baseline is the same query through the same driver called directly in a loop, in the same process. Figures
(one summary line each):

* ``stores.redis_take_token``: the atomic token bucket (Lua) via ``RedisStore.take_token`` vs the same script
  called with redis-py directly;
* ``stores.redis_take_token_x16``: the same from 16 concurrent trio tasks (the limiter lets 16 threads talk to
  Redis at once) vs the sequential store call — does concurrency pay on this machine;
* ``stores.postgres_verify_api_key``: ``PostgresStore.verify_api_key`` (pool checkout with a liveness check, then
  the SELECT by hash) vs the same SELECT on one psycopg connection;
* ``stores.graph_trust_of``: ``GraphStore.trust_of`` on FalkorDB's Bolt (explicit transaction, liveness check)
  vs ``session.run`` of the same Cypher on one neo4j session.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import neo4j
import psycopg
import redis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anchor.services_settings import SETTINGS_FILE, ServiceSettings, load_settings
from anchor.stores import GraphStore, PostgresStore, RedisStore
from anchor.stores.postgres import hash_secret
from anchor.stores.redis_scripts import TOKEN_BUCKET_LUA
from tools.services import DEFAULT_DIR


def rate(fn: Callable[[], int], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += fn()
    return n / (time.perf_counter() - start)


async def arate(fn: Callable[[], Awaitable[int]], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += await fn()
    return n / (time.perf_counter() - start)


def line(name: str, value: float, unit: str, baseline: float, what: str) -> str:
    return f"stores.{name}: {value:,.0f} {unit} (ratio vs {what} {value / baseline:.3f})"


async def measure(settings: ServiceSettings, seconds: float) -> list[str]:
    out: list[str] = []
    tag = secrets.token_hex(4)

    # Redis: token bucket.
    store = RedisStore(settings.redis.url, max_connections=16)
    raw = redis.Redis.from_url(settings.redis.url)
    script = raw.register_script(TOKEN_BUCKET_LUA)
    key = f"aiv:rl:bench-{tag}"

    def bare_take() -> int:
        script(keys=[key], args=[1, "1000000.0", 1_000_000])
        return 1

    async def store_take() -> int:
        await store.take_token(f"bench-{tag}", 1_000_000.0, 1_000_000)
        return 1

    async def store_take_x16() -> int:
        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(store_take)
        return 16

    bare = rate(bare_take, seconds)
    seq = await arate(store_take, seconds)
    out.append(line("redis_take_token", seq, "takes/s", bare, "redis-py direct"))
    par = await arate(store_take_x16, seconds)
    out.append(line("redis_take_token_x16", par, "takes/s", seq, "sequential store calls"))
    raw.delete(key)
    raw.close()
    await store.aclose()

    # PostgreSQL: API key verification, in a scratch database.
    dbname = f"bench_{tag}"
    admin = settings.postgres.dsn_for("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        dsn = settings.postgres.dsn_for(dbname)
        async with PostgresStore(dsn) as pg:
            for i in range(100):
                await pg.create_api_key(f"k{i}", "user", ["messages:send"])
            _key, secret = await pg.create_api_key("bench", "user", ["messages:send"])
            digest = hash_secret(secret)
            with psycopg.connect(dsn) as conn:

                def bare_verify() -> int:
                    conn.execute(
                        "SELECT key_id, name, role, scopes, created_at, revoked_at FROM api_keys "
                        "WHERE secret_sha256 = %s",
                        (digest,),
                    ).fetchone()
                    return 1

                bare = rate(bare_verify, seconds)

            async def store_verify() -> int:
                assert await pg.verify_api_key(secret) is not None
                return 1

            got = await arate(store_verify, seconds)
            out.append(line("postgres_verify_api_key", got, "verifications/s", bare, "one psycopg connection"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    # Graph: trust lookup.
    g = settings.graph
    graph = GraphStore(g.bolt_url, user=g.user, password=g.password)
    a, b = f"bench-{tag}-a", f"bench-{tag}-b"
    await graph.set_trust(a, b, 3.0, 1.0, 0)
    driver = neo4j.GraphDatabase.driver(g.bolt_url, auth=(g.user, g.password) if g.user else None)
    query = "MATCH (a:Peer {id: $a})-[t:TRUSTS]->(b:Peer {id: $b}) RETURN t.alpha AS alpha, t.beta AS beta"
    with driver.session() as session:

        def bare_trust() -> int:
            session.run(query, {"a": a, "b": b}).single()
            return 1

        bare = rate(bare_trust, seconds)
        session.run("MATCH (p:Peer) WHERE p.id IN [$a, $b] DETACH DELETE p", {"a": a, "b": b}).consume()
    await graph.set_trust(a, b, 3.0, 1.0, 0)

    async def store_trust() -> int:
        assert await graph.trust_of(a, b) is not None
        return 1

    got = await arate(store_trust, seconds)
    out.append(line("graph_trust_of", got, "lookups/s", bare, "neo4j session.run direct"))
    with driver.session() as session:
        session.run("MATCH (p:Peer) WHERE p.id IN [$a, $b] DETACH DELETE p", {"a": a, "b": b}).consume()
    driver.close()
    await graph.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per figure")
    parser.add_argument("--settings", type=Path, default=DEFAULT_DIR / SETTINGS_FILE)
    args = parser.parse_args()
    settings = load_settings(args.settings)
    for text in trio.run(measure, settings, args.seconds):
        print(text)


if __name__ == "__main__":
    main()
