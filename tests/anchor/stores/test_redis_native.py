"""NativeRedis (the gateway's hot Redis calls on trio sockets) against the real Redis of ``scripts/services``, checked
against redis-py's answers to the same commands; its failures: a server that does not answer, a path cut and
restored, a cancelled call, a wrong password, a script the server forgot."""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis
import trio

from anchor.services_settings import ServiceSettings
from anchor.stores import redis_native
from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.redis_native import NativeRedis, Script, Target, native_target
from tests.anchor.gateway.proxy import TcpProxy


def _native(services: ServiceSettings, *, port: int | None = None, timeout_s: float = 5.0) -> NativeRedis:
    target = Target(host="127.0.0.1", port=port or services.redis.port, password=services.redis.password)
    runner = BlockingRunner("redis", 4, (), 2 * timeout_s)
    return NativeRedis(target, runner, timeout_s=timeout_s, max_connections=4)


async def _serve(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]) -> int:
    """``handler`` serving every connection on a loopback port of its own; the port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(trio.serve_listeners, handler, listeners)
    return int(listeners[0].socket.getsockname()[1])


async def _silent(stream: trio.SocketStream) -> None:
    """A server that accepts and never answers."""
    async with stream:
        while await stream.receive_some(65_536):
            pass


def test_urls_it_speaks_and_those_it_leaves_to_redis_py() -> None:
    assert native_target("redis://:p%40ss@10.0.0.1:7000/3") == Target("10.0.0.1", 7000, "", None, "p@ss", 3)
    assert native_target("redis://user:pw@host") == Target("host", 6379, "", "user", "pw", 0)
    assert native_target("unix:///run/redis.sock?db=2&password=x") == Target("", 6379, "/run/redis.sock", None, "x", 2)
    assert native_target("rediss://host:6380/0") is None  # TLS: redis-py
    # Read as redis-py reads them (else the hot path and redis-py's calls would use different databases/sockets).
    for url in ("redis://:pw@127.0.0.1:6379/1?db=2", "unix:///tmp/my%20redis.sock", "redis://h/%33"):
        kw = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        t = native_target(url)
        assert t is not None
        assert (t.db, t.path or None) == (kw.get("db", 0), kw.get("path")), url
    assert native_target("redis://host/0?socket_timeout=3") is None
    assert native_target("redis://host/notanumber") is None


async def test_replies_match_redis_py(services: ServiceSettings) -> None:
    native = _native(services)
    reference = redis.Redis.from_url(services.redis.url)
    reference.response_callbacks.clear()  # its raw answers

    def commands(key: str) -> list[tuple[bytes | str | int | float, ...]]:
        return [
            ("SET", key + ":s", b"\x00\r\n\xff"),
            ("GET", key + ":s"),
            ("GET", key + ":missing"),
            ("HSET", key + ":h", "a", 1, "b", 2.5),
            ("HMGET", key + ":h", "a", "zz", "b"),
            ("XADD", key + ":x", "1-1", "m", b"payload"),
            ("XADD", key + ":x", "1-2", "m", b"two", "n", ""),
            ("XRANGE", key + ":x", "-", "+"),
            ("XLEN", key + ":x"),
            ("EVAL", "return {1, 'two', {3, false}, redis.call('INCR', KEYS[1])}", 1, key + ":n"),
            ("LPUSH", key + ":s", "y"),  # an error reply: WRONGTYPE
            ("DEL", key + ":s", key + ":h", key + ":x", key + ":n"),
        ]

    # The same commands on two key sets, ours through NativeRedis and redis-py's raw answers (no response
    # callbacks): every reply the same, error replies included.
    ours_key, theirs_key = ("aiv:t-native-" + secrets.token_hex(6) for _ in range(2))
    for mine, reference_command in zip(commands(ours_key), commands(theirs_key), strict=True):
        try:
            ours: object = await native.call(*mine)
        except StoreError as exc:
            ours = ("error", str(exc).removeprefix("redis: "))

        def reference_call(command: tuple[bytes | str | int | float, ...] = reference_command) -> object:
            return reference.execute_command(*command, NEVER_DECODE=True)  # type: ignore[no-untyped-call]

        try:
            theirs: object = await trio.to_thread.run_sync(reference_call)
        except redis.exceptions.ResponseError as exc:
            theirs = ("error", str(exc))
        assert _lists(ours) == _lists(theirs), mine
    await native.aclose()
    reference.close()


def _lists(value: object) -> object:
    """redis-py answers arrays as lists (and nested tuples in places): compare as lists."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


async def test_a_script_the_server_forgot_is_loaded_again(services: ServiceSettings) -> None:
    native = _native(services)
    tag = "v" + secrets.token_hex(4)
    script = Script(f"return '{tag}' .. ARGV[1]")
    await native.call("SCRIPT", "FLUSH")
    assert await native.evalsha(script, [], ["1"]) == f"{tag}1".encode()
    assert (await native.call("SCRIPT", "EXISTS", script.sha)) == [1]  # loaded by the EVAL fallback
    with pytest.raises(StoreError, match="boom"):
        await native.evalsha(Script("return redis.error_reply('boom')"), [], [])
    await native.aclose()


async def test_a_wrong_password_makes_redis_unavailable_and_is_never_shown(services: ServiceSettings) -> None:
    password = "not-" + secrets.token_hex(8)
    target = Target(host="127.0.0.1", port=services.redis.port, password=password)
    assert password not in repr(target)
    native = NativeRedis(target, BlockingRunner("redis", 1, (), 10.0), timeout_s=5.0, max_connections=1)
    with pytest.raises(StoreUnavailable, match="refused AUTH") as info:
        await native.call("PING")
    assert password not in str(info.value)
    await native.aclose()


async def test_no_answer_is_unavailable_within_the_timeout_and_a_cut_path_recovers(
    services: ServiceSettings, nursery: trio.Nursery
) -> None:
    # A server that accepts and never answers: StoreUnavailable after timeout_s, not a hang.
    silent_port = await _serve(nursery, _silent)
    hung = _native(services, port=silent_port, timeout_s=0.3)
    with trio.fail_after(5), pytest.raises(StoreUnavailable, match="no answer"):
        await hung.call("PING")
    await hung.aclose()

    proxy = TcpProxy("127.0.0.1", services.redis.port)
    await nursery.start(proxy.run)
    native = _native(services, port=proxy.port, timeout_s=2.0)
    assert await native.call("PING") == b"PONG"
    proxy.down()  # pooled connection reset, new ones refused
    with pytest.raises(StoreUnavailable):
        await native.call("PING")
    assert native.runner.down_reason is not None
    await proxy.up()
    assert await native.call("PING") == b"PONG"  # a fresh connection, same object
    assert native.runner.down_reason is None
    await native.aclose()


async def test_calls_queued_behind_a_hung_server_fail_within_their_bound(nursery: trio.Nursery) -> None:
    # Every pooled connection waits on a server that never answers: the calls queued for a connection must get
    # StoreUnavailable within the wait bound plus one call's bound, not one call's bound per call ahead of them.
    port = await _serve(nursery, _silent)
    timeout_s = 0.2
    runner = BlockingRunner("redis", 2, (), 2 * timeout_s)
    hung = NativeRedis(Target(host="127.0.0.1", port=port), runner, timeout_s=timeout_s, max_connections=2)
    took: list[float] = []
    failures: list[BaseException] = []

    async def ping() -> None:
        start = trio.current_time()
        try:
            await hung.call("PING")
        except StoreUnavailable as exc:
            failures.append(exc)
        took.append(trio.current_time() - start)

    with trio.fail_after(10):
        async with trio.open_nursery() as callers:
            for _ in range(10):
                callers.start_soon(ping)
    assert len(failures) == 10
    # Bound: timeout_s waiting for a slot + 2 * timeout_s for the call (and scheduling slack). Before the fix the
    # k-th pair of callers waited k * 2 * timeout_s: the last 2.0 s.
    assert max(took) < 3 * timeout_s + 0.5, took
    assert any("no free Redis connection" in str(exc) for exc in failures)
    await hung.aclose()


async def test_a_cancelled_call_leaves_no_reply_for_the_next(services: ServiceSettings) -> None:
    native = _native(services)
    native.limiter.total_tokens = 1  # one connection: the next call would reuse it if it were kept
    key = "aiv:t-native-" + secrets.token_hex(6)
    with trio.move_on_after(0.1) as scope:
        await native.call("BLPOP", key, 1)  # the server answers nil after 1 s
    assert scope.cancelled_caught
    assert await native.call("PING") == b"PONG"  # not the BLPOP's nil
    await trio.sleep(1.2)  # past the BLPOP's server-side timeout: a kept connection would hold its nil now
    assert await native.call("ECHO", "x") == b"x"
    await native.aclose()


async def test_stream_reads_match_redis_py_pending_and_deleted_entries_included(services: ServiceSettings) -> None:
    from anchor.stores.redis_store import RedisStore

    stream = "t-native-" + secrets.token_hex(6)
    native, plain = RedisStore(services.redis.url), RedisStore(services.redis.url, native=False)
    assert native._native is not None and plain._native is None
    await plain.stream_ensure_group(stream, "g")
    ids = [await plain.stream_add(stream, {"m": f"payload {i}".encode(), "x": b"\x00\xff"}) for i in range(5)]
    got = await native.stream_read(stream, "g", "c1", count=3)
    assert [e.id for e in got] == ids[:3] and got[0].fields == {"m": b"payload 0", "x": b"\x00\xff"}
    assert [e.id for e in await native.stream_read(stream, "g", "c1", count=3)] == ids[3:]
    assert await native.stream_read(stream, "g", "c2", block_ms=50) == []  # nothing new: BLOCK answered nil
    await plain.queue_settle_many(stream, "g", [(ids[1], None, None)], ttl_s=1.0)  # acknowledged and deleted
    await plain._call(lambda: plain._client.xdel(f"aiv:q:{stream}", ids[2]))  # deleted while pending
    ours = await native.stream_read(stream, "g", "c1", pending=True, count=10)
    theirs = await plain.stream_read(stream, "g", "c1", pending=True, count=10)
    assert ours == theirs and [e.id for e in ours] == [ids[0], ids[2], ids[3], ids[4]]
    assert ours[1].fields == {}  # deleted while pending: no fields (the queue acknowledges it as malformed)
    await native.aclose()
    await plain.aclose()


# ------------------------------------------------------------------------------------------ review fixes (gwfix4)
async def test_pooled_connections_the_server_closed_are_not_used_again(
    services: ServiceSettings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A burst leaves every pooled connection idle; the server then closes them all (what a restart, a failover or
    # its idle timeout does; here CLIENT KILL of exactly those). The next calls — consumer reads (never retried)
    # first, then scripts (retried once) — must all succeed on fresh connections without a connection-level
    # failure (the check before reuse, not a failed attempt and its _drop_idle, keeps the dead ones out), and no
    # "unavailable" be logged.
    from anchor.stores.redis_store import RedisStore

    store = RedisStore(services.redis.url, timeout_s=5.0, max_connections=8)
    native = store._native
    assert native is not None
    stream = "t-native-" + secrets.token_hex(6)
    await store.stream_ensure_group(stream, "g")

    async def settle() -> None:
        await store.queue_settle_many(stream, "g", [("0-1", None, None)], ttl_s=1.0)

    async with trio.open_nursery() as burst:
        for _ in range(8):
            burst.start_soon(settle)
    assert len(native._idle) == 8
    admin = redis.Redis.from_url(services.redis.url)
    addresses = ["{}:{}".format(*conn.stream.socket.getsockname()[:2]) for conn in native._idle]

    def kill() -> list[object]:
        return [admin.client_kill(address) for address in addresses]

    assert await trio.to_thread.run_sync(kill) == [True] * 8
    with trio.fail_after(5):  # the server's close reached every pooled socket
        for conn in native._idle:
            await trio.lowlevel.wait_readable(conn.stream.socket)
    caplog.clear()
    drops: list[object] = []
    drop_idle = native._drop_idle

    async def counting_drop_idle(**kwargs: float) -> None:
        drops.append(kwargs)
        await drop_idle(**kwargs)

    monkeypatch.setattr(native, "_drop_idle", counting_drop_idle)
    for _ in range(8):
        assert await store.stream_read(stream, "g", "c", count=1) == []
    for _ in range(10):
        await settle()
    assert drops == []
    assert store.down_reason is None
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]
    admin.close()
    await store.aclose()


async def test_a_failed_connection_drops_the_idle_ones_and_the_retry_opens_a_fresh_one(
    services: ServiceSettings, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pooled connections whose path died without a word (no FIN reached them: a NAT or a firewall dropping its
    # state), so the check before reuse sees nothing (made so here): the first call's failure must not be retried
    # on the next equally dead pooled connection.
    monkeypatch.setattr(redis_native._Connection, "server_closed", lambda self: False, raising=False)
    proxy = TcpProxy("127.0.0.1", services.redis.port)
    await nursery.start(proxy.run)
    native = _native(services, port=proxy.port, timeout_s=2.0)

    async def ping() -> None:
        assert await native.call("PING") == b"PONG"

    async with trio.open_nursery() as burst:
        for _ in range(4):
            burst.start_soon(ping)
    assert len(native._idle) == 4
    for conn in native._idle:  # each pooled connection fails on use
        conn.stream.socket.shutdown(socket.SHUT_WR)
    assert await native.call("PING") == b"PONG"
    assert native.runner.down_reason is None
    assert len(native._idle) == 1  # the fresh one; the other dead ones were closed, not tried
    await native.aclose()


async def test_a_script_call_without_an_answer_is_sent_once_more_on_a_fresh_connection(nursery: trio.Nursery) -> None:
    # A server that does not answer the first connection's command but answers on the next one (a slow Redis):
    # an idempotent call (retry) gets its answer from the second send, as redis-py's Retry did on a timeout; a
    # read (retry=False) is not sent twice.
    connections = 0

    async def first_silent(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        mine = connections
        async with stream:
            while await stream.receive_some(65_536):
                if mine > 1:
                    await stream.send_all(b"+PONG\r\n")

    port = await _serve(nursery, first_silent)
    target = Target(host="127.0.0.1", port=port)
    native = NativeRedis(target, BlockingRunner("redis", 1, (), 1.0), timeout_s=0.2, max_connections=1)
    with trio.fail_after(5):
        assert await native.call("PING") == b"PONG"
    assert connections == 2
    await native.aclose()
    connections = 0
    native = NativeRedis(target, BlockingRunner("redis", 1, (), 1.0), timeout_s=0.2, max_connections=1)
    with trio.fail_after(5), pytest.raises(StoreUnavailable, match="no answer"):
        await native.call("PING", retry=False)  # first connection of a fresh count: silent, not resent
    assert connections == 1
    await native.aclose()


async def test_a_hostile_server_cannot_make_a_reply_cost_more_than_the_calls_bound(nursery: trio.Nursery) -> None:
    # A server (or a man in the middle on plaintext redis://) that answers a script call with a 64 MB bulk
    # string: refused at its header (the script's answer is bounded at a few KB), so nothing of it is buffered.
    sent = 0
    announced = 64 * 1024 * 1024 - 16

    async def hostile(stream: trio.SocketStream) -> None:
        nonlocal sent
        async with stream:
            await stream.receive_some(65_536)
            await stream.send_all(b"$%d\r\n" % announced)
            chunk = b"A" * 65_536
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while sent < announced:
                    await stream.send_all(chunk)
                    sent += len(chunk)

    port = await _serve(nursery, hostile)
    native = NativeRedis(
        Target(host="127.0.0.1", port=port), BlockingRunner("redis", 1, (), 10.0), timeout_s=5.0, max_connections=1
    )
    with trio.fail_after(5), pytest.raises(StoreUnavailable, match="bulk string"):
        await native.evalsha(Script("return 1"), [], [])
    assert not native._idle
    await native.aclose()


async def test_a_password_in_the_query_is_used_as_redis_py_uses_it(services: ServiceSettings) -> None:
    assert native_target("redis://h:1/2?password=p%40ss") == Target("h", 1, "", None, "p@ss", 2)
    assert native_target("redis://h?username=u&password=pw") == Target("h", 6379, "", "u", "pw", 0)
    assert native_target("redis://:url@h?password=query") == Target("h", 6379, "", None, "url", 0)  # as redis-py
    assert native_target("unix:///s.sock?password=a%25b") == Target("", 6379, "/s.sock", None, "a%b", 0)
    from anchor.stores.redis_store import RedisStore

    url = f"redis://127.0.0.1:{services.redis.port}/0?password={services.redis.password}"
    store = RedisStore(url, timeout_s=5.0)
    stream = "t-native-" + secrets.token_hex(6)
    await store.stream_ensure_group(stream, "g")  # redis-py
    assert await store.queue_settle_many(stream, "g", [("0-1", None, None)], ttl_s=1.0) == 0  # native: not NOAUTH
    await store.aclose()


@pytest.mark.parametrize(("choice", "native"), [(None, True), ("threads", False), ("native", True)])
async def test_the_anchor_config_chooses_the_redis_client(
    services: ServiceSettings, tmp_path: Path, choice: str | None, native: bool
) -> None:
    """`[anchor] redis_client`: the native client by default (less server CPU per request, bench/README.md),
    redis-py in worker threads when asked; both answer."""
    import dataclasses
    import json

    from anchor.run import open_stores
    from anchor.settings import AnchorSection
    from node.settings import Config

    settings_file = tmp_path / "services.json"
    settings_file.write_text(json.dumps(dataclasses.asdict(services)))
    settings_file.chmod(0o600)
    section = AnchorSection(services_settings=str(settings_file))
    if choice is not None:
        section = dataclasses.replace(section, redis_client=choice)
    cfg = Config(data_dir=tmp_path, anchor=section)
    async with open_stores(cfg) as stores:
        assert (stores.redis._native is not None) is native
        await stores.redis.ping()


def test_an_unknown_redis_client_names_the_key() -> None:
    from node.errors import ConfigError
    from node.settings import config_from_mapping

    with pytest.raises(ConfigError, match="redis_client"):
        config_from_mapping({"anchor": {"redis_client": "fast"}})


async def test_a_timeout_drops_the_idle_connections_of_a_path_lost_without_a_word(
    services: ServiceSettings, nursery: trio.Nursery
) -> None:
    # The path of every pooled connection is lost without a FIN or RST (the check before reuse sees nothing). The
    # first call times out once (then answered on a fresh connection); the idle connections that have not answered
    # since it was sent are dropped with it, so the next burst of unretried reads does not pay a timeout each.
    proxy = TcpProxy("127.0.0.1", services.redis.port)
    await nursery.start(proxy.run)
    native = _native(services, port=proxy.port, timeout_s=0.5)

    async def ping() -> None:
        assert await native.call("PING") == b"PONG"

    async with trio.open_nursery() as burst:
        for _ in range(4):
            burst.start_soon(ping)
    assert len(native._idle) == 4
    proxy.silence()
    assert await native.call("PING") == b"PONG"  # timed out on a pooled connection, answered on a fresh one
    assert native.runner.down_reason is None
    answers: list[object] = []

    async def read() -> None:
        answers.append(await native.call("ECHO", "x", retry=False))

    async with trio.open_nursery() as burst:
        for _ in range(4):
            burst.start_soon(read)
    assert answers == [b"x"] * 4
    assert native.runner.down_reason is None
    await native.aclose()
