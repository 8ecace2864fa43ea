"""Redis on trio sockets for the gateway's hot calls: no worker thread per call.

redis-py's sync client needs a worker thread per call under trio (its asyncio client does not run on trio), and
that hop — handing the call to a thread, the GIL passing back and forth while it waits on the socket — cost more
CPU than the call itself (``bench/gateway.py``). :class:`NativeRedis` speaks RESP2 (:mod:`anchor.stores.resp`)
on trio's own sockets for the few commands the request path and the queue's consumer run (scripts by SHA1,
falling back to loading the script on ``NOSCRIPT``); everything else stays on redis-py.

Connections are pooled (at most ``max_connections``, each used by one call at a time) and authenticated and
switched to the URL's database when opened. A call that fails on the way (reset, refused, EOF, a reply that is not
RESP2) closes its connection and, if it may run twice (the scripts are idempotent), is tried once more on a fresh
one, as redis-py's client is configured here; a consumer group's read is not retried (entries delivered in a lost
reply wait in the consumer's pending list, which the queue re-reads after a store error). A call without an answer
within ``timeout_s`` closes its connection and raises :class:`StoreUnavailable`. The caller's cancellation also
closes the connection (its reply would be read by the next call otherwise). Only plain ``redis://`` and
``unix://`` URLs are spoken here (:func:`native_target` says None for the rest, e.g. TLS, and the store then keeps
redis-py for everything).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreError
from anchor.stores.resp import NeedData, ProtocolError, Reply, RespError, RespParser, encode_command

RECEIVE_BYTES = 65_536


@dataclass(frozen=True, slots=True)
class Target:
    host: str = ""
    port: int = 6379
    path: str = ""  # a Unix socket instead of host/port
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line or a traceback's locals
    db: int = 0


def native_target(url: str) -> Target | None:
    """Where a ``redis://`` or ``unix://`` URL points (user, password, database); None for anything this client
    does not speak (``rediss://``, query options other than ``db``/``password``)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if set(query) - {"db", "password"}:
        return None
    try:
        db = int(query["db"][0]) if "db" in query else 0
        if parts.scheme == "redis":
            path = parts.path.lstrip("/")
            db = int(path) if path else db
            return Target(
                host=parts.hostname or "localhost",
                port=parts.port or 6379,
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                db=db,
            )
        if parts.scheme == "unix" and parts.path:
            password = parts.password or (query["password"][0] if "password" in query else None)
            return Target(
                path=parts.path,
                username=unquote(parts.username) if parts.username else None,
                password=unquote(password) if password else None,
                db=db,
            )
    except (ValueError, IndexError):
        return None
    return None


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.parser = RespParser()

    async def call(self, *args: bytes | str | int | float) -> Reply:
        await self.stream.send_all(encode_command(*args))
        while True:
            reply = self.parser.next_reply()
            if not isinstance(reply, NeedData):
                return reply
            data = await self.stream.receive_some(RECEIVE_BYTES)
            if not data:
                raise trio.BrokenResourceError("Redis closed the connection")
            self.parser.feed(data)


class Script:
    """A Lua script called by SHA1 (EVALSHA), loaded on the server when it does not know it (NOSCRIPT)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class NativeRedis:
    def __init__(self, target: Target, runner: BlockingRunner, *, timeout_s: float, max_connections: int) -> None:
        self.target = target
        self.runner = runner  # the store's: one "down"/"available again" log line per transition, shared
        self.timeout_s = timeout_s
        self.limiter = trio.CapacityLimiter(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.stream.aclose()

    async def _open(self) -> _Connection:
        t = self.target
        stream: trio.abc.Stream
        if t.path:
            stream = await trio.open_unix_socket(t.path)
        else:
            stream = await trio.open_tcp_stream(t.host, t.port)
        conn = _Connection(stream)
        try:
            # A refused AUTH or SELECT makes Redis as unusable as a refused connection (redis-py says so too:
            # its AuthenticationError is a ConnectionError): StoreUnavailable, one log line per outage.
            if t.password is not None:
                auth = ("AUTH", t.username, t.password) if t.username else ("AUTH", t.password)
                _check_open(await conn.call(*auth), "AUTH")
            if t.db:
                _check_open(await conn.call("SELECT", t.db), "SELECT")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return conn

    async def call(self, *args: bytes | str | int | float, retry: bool = True) -> Reply:
        """One command; its reply (an error reply raises StoreError). StoreUnavailable when Redis cannot be reached
        or does not answer within ``timeout_s``. ``retry=False`` for a command that must not run twice (a read of a
        consumer group: entries delivered in a lost reply are left for the caller's recovery, not skipped)."""
        async with self.limiter:
            reply = await self._call_once_more(args, attempts=2 if retry else 1)
        if isinstance(reply, RespError):
            self.runner.mark_up()
            raise StoreError(f"redis: {reply.message[:200]}")
        self.runner.mark_up()
        return reply

    async def evalsha(self, script: Script, keys: list[str], args: list[bytes | str | int | float]) -> Reply:
        """Run ``script`` (atomically on the server); its reply. StoreError for an error it raised."""
        async with self.limiter:
            reply = await self._call_once_more(("EVALSHA", script.sha, len(keys), *keys, *args))
            if isinstance(reply, RespError) and reply.prefix == "NOSCRIPT":
                reply = await self._call_once_more(("EVAL", script.source, len(keys), *keys, *args))
        self.runner.mark_up()
        if isinstance(reply, RespError):
            raise StoreError(f"redis: {reply.message[:200]}")
        return reply

    async def _call_once_more(self, args: tuple[bytes | str | int | float, ...], *, attempts: int = 2) -> Reply:
        """``args`` on a pooled connection, and (``attempts`` 2) once more on a fresh one if that fails on the way."""
        if self._closed:
            raise StoreError("redis: the store is closed")
        for attempt in range(1, attempts + 1):
            conn: _Connection | None = None
            with trio.move_on_after(self.timeout_s):
                try:
                    conn = self._idle.pop() if self._idle else await self._open()
                    reply = await conn.call(*args)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError) as exc:
                    if conn is not None:
                        await trio.aclose_forcefully(conn.stream)
                    if attempt == attempts:
                        raise self.runner.mark_down(exc) from exc
                    continue
                except BaseException:  # cancelled: the reply, if it comes, must not be read by another call
                    if conn is not None:
                        await trio.aclose_forcefully(conn.stream)
                    raise
                if conn.parser.buffered or self._closed:  # bytes beyond the reply (out of step), or closed
                    await trio.aclose_forcefully(conn.stream)
                else:
                    self._idle.append(conn)
                return reply
            if conn is not None:
                await trio.aclose_forcefully(conn.stream)
            raise self.runner.mark_down(TimeoutError(f"no answer within {self.timeout_s:g} s"))
        raise AssertionError("unreachable")


def _check_open(reply: Reply, step: str) -> None:
    if isinstance(reply, RespError):
        raise ConnectionRefusedError(f"Redis refused {step}: {reply.message[:200]}")
