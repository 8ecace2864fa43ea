"""NativeRedis (the gateway's hot Redis calls on trio sockets) against the real Redis of ``scripts/services``, checked
against redis-py's answers to the same commands; its failures: a server that does not answer, a path cut and
restored, a cancelled call, a wrong password, a script the server forgot."""

from __future__ import annotations

import secrets

import pytest
import redis
import trio

from anchor.services_settings import ServiceSettings
from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.redis_native import NativeRedis, Script, Target, native_target
from tests.anchor.gateway.proxy import TcpProxy


def _native(services: ServiceSettings, *, port: int | None = None, timeout_s: float = 5.0) -> NativeRedis:
    target = Target(host="127.0.0.1", port=port or services.redis.port, password=services.redis.password)
    runner = BlockingRunner("redis", 4, (), 2 * timeout_s)
    return NativeRedis(target, runner, timeout_s=timeout_s, max_connections=4)


def test_urls_it_speaks_and_those_it_leaves_to_redis_py() -> None:
    assert native_target("redis://:p%40ss@10.0.0.1:7000/3") == Target("10.0.0.1", 7000, "", None, "p@ss", 3)
    assert native_target("redis://user:pw@host") == Target("host", 6379, "", "user", "pw", 0)
    assert native_target("unix:///run/redis.sock?db=2&password=x") == Target("", 6379, "/run/redis.sock", None, "x", 2)
    assert native_target("rediss://host:6380/0") is None  # TLS: redis-py
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
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            while await stream.receive_some(65_536):
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    silent_port = listeners[0].socket.getsockname()[1]
    await nursery.start(trio.serve_listeners, silent, listeners)
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
