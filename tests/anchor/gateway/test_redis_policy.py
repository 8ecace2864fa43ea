"""The anchor refuses a Redis that may evict keys (``maxmemory-policy`` other than ``noeviction``): eviction would
drop queued messages, audit records and the status records that keep a message from being sent twice. Real
redis-server processes on private unix sockets (their settings changed freely, nothing shared with other tests)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from anchor.run import check_no_eviction
from anchor.stores.errors import StoreError
from anchor.stores.redis_store import RedisStore
from node.errors import StartupError

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@asynccontextmanager
async def redis_server(tmp: Path, *extra: str) -> AsyncIterator[RedisStore]:
    sock = tmp / f"r{len(list(tmp.iterdir()))}.sock"
    args = ["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
    proc = await trio.lowlevel.open_process(
        [*args, "--save", "", "--appendonly", "no", *extra], stdout=subprocess.DEVNULL
    )
    store = RedisStore(f"unix://{sock}", timeout_s=2.0)
    try:
        with trio.fail_after(20):
            while True:
                try:
                    await store.ping()
                    break
                except StoreError:
                    await trio.sleep(0.02)  # until the server listens; fail_after bounds the wait
        yield store
    finally:
        await store.aclose()
        proc.terminate()
        await proc.wait()


async def test_a_redis_that_may_evict_is_refused_naming_the_setting(short_tmp: Path) -> None:
    async with redis_server(short_tmp, "--maxmemory-policy", "allkeys-lru") as redis:
        with pytest.raises(StartupError, match=r"maxmemory-policy is allkeys-lru.*set maxmemory-policy noeviction"):
            await check_no_eviction(redis)
        await trio.to_thread.run_sync(redis._client.config_set, "maxmemory-policy", "noeviction")
        await check_no_eviction(redis)  # accepted


async def test_a_redis_that_will_not_say_is_warned_about(short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with redis_server(short_tmp, "--maxmemory-policy", "volatile-lru", "--rename-command", "CONFIG", "") as redis:
        await check_no_eviction(redis)  # hosted Redis often refuses CONFIG: cannot tell, so warn and start
    assert "make sure it is noeviction" in caplog.text
