"""Two real `village anchor run` processes as replicas of one anchor (``[anchor] cluster``): each its own data dir
and identity, both on the same PostgreSQL and Redis, one shared token secret file. A client spreads its requests
over them round robin (what a load balancer does). Shown: one API key's rate limit holds across both (the total
accepted is one key's burst, not two); a token issued by one replica works at the other; every accepted message
is taken by exactly one node (it is in exactly one outbox); a replica killed with messages in its pending list has
them claimed by the other; every accepted message has its audit row.

The nodes run no transport (a private message to a peer not heard from yet waits in the outbox that took it), so
the outboxes are the ledger of who took what."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_py
import trio

from anchor.queue import GROUP
from anchor.services_settings import ServiceSettings
from anchor.stores.postgres import PostgresStore
from anchor.stores.redis_store import RedisStore
from tests.anchor.gateway.test_anchor_cli import VILLAGE, WAIT_S, village
from tests.anchor.gateway.test_gateway import FULL_PEER_ID

HAPROXY_CFG = Path(__file__).resolve().parents[3] / "configs" / "haproxy.cfg"
KEY_BURST = 30  # one API key's burst; its sustained rate is 0.01/s, so nothing refills during the test


@dataclass
class Replica:
    data: Path
    peer_id: str
    url: str = ""
    proc: trio.Process | None = None
    log: bytearray = field(default_factory=bytearray)


@pytest.fixture
def cluster_dirs(services: ServiceSettings, pg_dsn: str, short_tmp: Path) -> tuple[str, list[Replica]]:
    cluster = "t" + secrets.token_hex(6)
    secret = short_tmp / "jwt.secret"  # what an operator gives every replica (a compose/Kubernetes secret)
    secret.write_bytes(secrets.token_bytes(32))
    secret.chmod(0o600)
    raw = dataclasses.asdict(services)
    raw["postgres"]["dbname"] = pg_dsn.rsplit("/", 1)[1]
    replicas = []
    for name in ("a", "b"):
        data = short_tmp / name
        data.mkdir(mode=0o700)
        settings = data / "services.json"
        settings.write_text(json.dumps(raw))
        settings.chmod(0o600)
        (data / "config.toml").write_text(
            "[betanet]\nenabled = false\n"
            f'[anchor]\ngateway_listen = "127.0.0.1:0"\ncluster = "{cluster}"\njwt_secret_file = "{secret}"\n'
            f"claim_idle_s = 1.0\naudit_claim_idle_s = 1.0\nkey_rate_per_s = 0.01\nkey_burst = {KEY_BURST}\n"
            "ip_rate_per_s = 1000000.0\nip_burst = 1000000\nhealth_cache_s = 0.0\n"
        )
        assert village("init", data_dir=data).returncode == 0
        replicas.append(Replica(data, json.loads(village("id", "--json", data_dir=data).stdout)["peer_id"]))
    return cluster, replicas


@pytest.fixture
async def start(nursery: trio.Nursery) -> AsyncIterator[Callable[[Replica], Any]]:
    running: list[trio.Process] = []

    async def start_replica(replica: Replica) -> None:
        argv = [*VILLAGE, "anchor", "run", "--data-dir", str(replica.data)]
        proc = await trio.lowlevel.open_process(
            argv, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        running.append(proc)
        replica.proc, replica.log = proc, bytearray()
        ready = trio.Event()

        async def pump() -> None:  # reads the whole log (a full pipe would stall the daemon)
            assert proc.stderr is not None
            while chunk := await proc.stderr.receive_some(65536):
                replica.log += chunk
                if (m := re.search(rb"anchor ready: gateway on (http://\S+)", replica.log)) and not ready.is_set():
                    replica.url = m.group(1).decode()
                    ready.set()
            ready.set()

        nursery.start_soon(pump)
        with trio.fail_after(WAIT_S):
            await ready.wait()
        assert replica.url, replica.log.decode()

    yield start_replica
    for proc in running:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(WAIT_S):
        for proc in running:
            await proc.wait()
    for proc in running:
        if proc.returncode is None:
            proc.kill()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll ``check`` (a Redis read) until it holds; fail_after bounds the wait."""
    with trio.fail_after(timeout_s):
        while True:
            if await check():
                return
            await trio.sleep(0.02)


@pytest.fixture
async def haproxy(short_tmp: Path) -> AsyncIterator[Callable[[Replica, Replica], Any]]:
    """configs/haproxy.cfg in front of two replicas, listening on a Unix socket (HAProxy cannot bind port 0); an
    HTTP client through it, or None when Debian's haproxy is not installed."""
    procs: list[trio.Process] = []

    async def start_lb(a: Replica, b: Replica) -> httpx.AsyncClient | None:
        if shutil.which("haproxy") is None:
            return None
        sock = short_tmp / "lb.sock"
        env = {
            **os.environ,
            "ANCHOR_GATEWAY_1": a.url.removeprefix("http://"),
            "ANCHOR_GATEWAY_2": b.url.removeprefix("http://"),
            "ANCHOR_LB_BIND": f"unix@{sock}",
        }
        argv = ["haproxy", "-db", "-f", str(HAPROXY_CFG)]
        procs.append(
            await trio.lowlevel.open_process(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

        async def listening() -> bool:
            return sock.exists()

        await until(listening, 20)
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://lb", timeout=10.0)

    yield start_lb
    for proc in procs:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()


def outbox_ids(replica: Replica) -> list[str]:
    listed = village("outbox", "--json", "--limit", "1000", data_dir=replica.data)
    assert listed.returncode == 0, listed.stderr
    return [m["id"] for m in json.loads(listed.stdout)]


@pytest.mark.slow  # three daemon starts and nine CLI runs: ~45 s on a loaded 2-core machine
async def test_two_gateway_replicas_share_rate_limits_and_the_queue_and_take_each_message_once(
    cluster_dirs: tuple[str, list[Replica]],
    start: Callable[[Replica], Any],
    haproxy: Callable[[Replica, Replica], Any],
    services: ServiceSettings,
    pg_dsn: str,
) -> None:
    cluster, (a, b) = cluster_dirs
    await start(a)
    await start(b)
    lb: httpx.AsyncClient | None = await haproxy(a, b)

    async def peers_behind_lb(n: int) -> list[str]:  # who answers GET /v1/health through HAProxy, n times
        assert lb is not None
        answers = [await lb.get("/v1/health") for _ in range(n)]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        return [r.json()["peer_id"] for r in answers]

    if lb is not None:  # round robin over both replicas
        assert sorted(set(await peers_behind_lb(4))) == sorted([a.peer_id, b.peer_id])
    keys = [
        json.loads(village("anchor", "keys", "create", name, "--role", "user", "--json", data_dir=a.data).stdout)
        for name in ("k1", "k2")
    ]
    redis = RedisStore(services.redis.url, timeout_s=5.0)
    stream = f"messages:{{{cluster}}}"

    async def state(message_id: str) -> str:  # the status record (read in Redis: polling HTTP would spend tokens)
        record = await redis.status_get(f"msg:{{{cluster}}}:{message_id}")
        assert record is not None
        return record["state"]

    async def all_accepted() -> bool:
        return all([await state(message_id) == "accepted" for message_id in accepted])

    info = redis_py.Redis.from_url(services.redis.url)

    async def both_blocked() -> bool:  # both consumers wait in XREADGROUP (nothing else blocks on this Redis now)
        clients: Any = await trio.to_thread.run_sync(lambda: info.info("clients"))
        return int(clients["blocked_clients"]) >= 2

    accepted: list[str] = []
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def post(replica: Replica, auth: dict[str, str], text: str) -> httpx.Response:
            r = await client.post(f"{replica.url}/v1/messages", headers=auth, json={"to": FULL_PEER_ID, "text": text})
            if r.status_code == 202:
                accepted.append(r.json()["id"])
            return r

        # 1. One key, 60 requests round robin: the replicas spend from one bucket. A token from a is used at both.
        r = await client.post(f"{a.url}/v1/auth/token", headers={"X-API-Key": keys[0]["secret"]})
        assert r.status_code == 200, r.text
        auth1 = {"Authorization": f"Bearer {r.json()['access_token']}"}
        codes: dict[str, list[int]] = {"a": [], "b": []}
        for i in range(60):
            replica = (a, b)[i % 2]
            r = await post(replica, auth1, f"burst {i}")
            codes["a" if replica is a else "b"].append(r.status_code)
            assert r.status_code in (202, 429), r.text
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
        per_replica = {name: c.count(202) for name, c in codes.items()}
        # The token request took one token; 2x the burst would be accepted if each replica kept its own bucket.
        assert sum(per_replica.values()) in (KEY_BURST - 1, KEY_BURST), per_replica
        assert min(per_replica.values()) >= KEY_BURST // 2 - 1, per_replica  # both served

        # 2. Failover. Replica a is frozen while its consumer waits in XREADGROUP, so Redis hands it the next
        # entry, which it never acknowledges; then it is killed. b must claim that entry.
        r = await client.post(f"{b.url}/v1/auth/token", headers={"X-API-Key": keys[1]["secret"]})
        auth2 = {"Authorization": f"Bearer {r.json()['access_token']}"}
        for i in range(4):
            assert (await post((a, b)[i % 2], auth2, f"before {i}")).status_code == 202
        stranded: list[str] = []
        assert a.proc is not None
        for _attempt in range(3):
            await until(both_blocked, 10)
            a.proc.send_signal(signal.SIGSTOP)
            for i in range(4):
                r = await post(b, auth2, f"during {i}")
                assert r.status_code == 202
                # a's pending list holds it, or b took it (a frozen replica's audit drain may hold its record until
                # b's drain claims it: audit_claim_idle_s = 1 s)
                with trio.fail_after(10):
                    while True:
                        pel = await redis.stream_pending_idle(stream, GROUP, min_idle_ms=0)
                        stranded = [p.id for p in pel if p.consumer == a.peer_id]
                        if stranded or await state(accepted[-1]) != "queued":
                            break
                        await trio.sleep(0.01)
                if stranded:
                    break
            if stranded:
                break
            a.proc.send_signal(signal.SIGCONT)  # a's wait in XREADGROUP ended while frozen: try again
        assert stranded, "replica a never held an entry when frozen"
        stranded_message = accepted[-1]
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        if lb is not None:  # requests a refuses are redispatched to b at once; its health check takes a out
            assert await peers_behind_lb(4) == [b.peer_id] * 4
            await lb.aclose()
        for i in range(2):
            assert (await post(b, auth2, f"after {i}")).status_code == 202

        # b claims a's entry once it has been idle for claim_idle_s (1 s) and hands it to its own node.
        await until(all_accepted)
        assert b"claimed entry" in b.log
        assert stranded_message in outbox_ids(b)
        r = await client.get(f"{b.url}/v1/messages/{stranded_message}", headers=auth2)
        assert (r.status_code, r.json()["state"]) == (200, "pending")  # in b's outbox, awaiting the peer
        assert await redis.stream_pending_count(stream, GROUP) == 0 and await redis.stream_length(stream) == 0

    # a starts again on its data dir (its outbox on disk): nothing is left for it, nothing is sent twice.
    await start(a)
    taken = outbox_ids(a) + outbox_ids(b)
    assert sorted(taken) == sorted(accepted)  # exactly once each: in one outbox, never in both
    pg = PostgresStore(pg_dsn, timeout_s=5.0)
    await pg.start()

    async def all_drained() -> bool:  # the audit records reach PostgreSQL through the drain (anchor/audit_drain.py)
        return len(await pg.recent_audit(limit=1000, action="messages.send")) >= len(accepted)

    await until(all_drained)
    audited = [e.detail["id"] for e in await pg.recent_audit(limit=1000, action="messages.send")]
    await pg.aclose()
    assert sorted(audited) == sorted(accepted)  # one audit row per accepted message, none for the refused ones
    await redis.aclose()
    info.close()
