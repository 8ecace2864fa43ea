"""Redis on trio sockets for the gateway's hot calls: no worker thread per call.

redis-py's sync client needs a worker thread per call under trio (its asyncio client does not run on trio), and
that hop — handing the call to a thread, the GIL passing back and forth while it waits on the socket — cost more
CPU than the call itself (``bench/gateway.py``). :class:`NativeRedis` speaks RESP2 (:mod:`anchor.stores.resp`)
on trio's own sockets for the few commands the request path and the queue's consumer run (scripts by SHA1,
falling back to loading the script on ``NOSCRIPT``); everything else stays on redis-py.

Connections are pooled (at most ``max_connections``, each used by one call at a time) and authenticated and
switched to the URL's database when opened. A pooled connection is checked before it is reused (one poll(2): one
the server closed — a restart, a failover, CLIENT KILL — is dropped quietly, not tried). A call that fails on the
way (reset, refused, EOF, a reply that is not RESP2 or over the call's size bound) closes its connection and every
idle one (they most likely share its fate) and, if it may run twice (the scripts are idempotent), is tried once
more on a freshly opened one, as redis-py's client is configured here; so is a call without an answer within
``timeout_s`` (its connection closed: its late reply is never read), as redis-py's Retry resent on a socket
timeout — at most twice ``timeout_s`` per command; a script the server does not know (``NOSCRIPT``: after its
restart or a SCRIPT FLUSH) is then sent again as EVAL, so a script's call takes at most four times ``timeout_s``.
A timeout also closes every idle connection that has not answered since the timed-out attempt was sent: a path
lost without a word (no FIN or RST reached us: a NAT or a firewall that dropped its state, a failover to another
host behind the same address) looks alive to the check before reuse, and each pooled connection would otherwise
cost the next calls a whole ``timeout_s``; connections that answered meanwhile stay (a slow server drops nothing
that works). A consumer group's read is not retried (entries delivered in a lost
reply wait in the consumer's pending list, which the queue re-reads after a store error). A call that fails (its
last attempt) raises :class:`StoreUnavailable`. The caller's cancellation also closes the connection (its reply
would be read by the next call otherwise). Only plain ``redis://`` and
``unix://`` URLs are spoken here (:func:`native_target` says None for the rest, e.g. TLS, and the store then keeps
redis-py for everything).
"""

from __future__ import annotations

import hashlib
import select
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreError
from anchor.stores.resp import NeedData, ProtocolError, Reply, RespError, RespParser, encode_command

RECEIVE_BYTES = 65_536
DEFAULT_REPLY_BYTES = 4 * 1024 * 1024  # a call's reply at most, unless the call says (a script's answer: a few KB)
SCRIPT_REPLY_BYTES = 64 * 1024  # the answer of the gateway's scripts (a status, a count, a short list)


@dataclass(frozen=True, slots=True)
class Target:
    host: str = ""
    port: int = 6379
    path: str = ""  # a Unix socket instead of host/port
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line or a traceback's locals
    db: int = 0


def native_target(url: str) -> Target | None:
    """Where a ``redis://`` or ``unix://`` URL points (user, password, database), read as redis-py reads it (the
    query's ``password``/``username``/``db`` used where the URL itself has none); None for anything this client
    does not speak (``rediss://``, other query options)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)  # values percent-decoded already
    if set(query) - {"db", "password", "username"}:
        return None
    try:
        db = int(query["db"][0]) if "db" in query else 0
        username = (
            unquote(parts.username) if parts.username else (query["username"][0] if "username" in query else None)
        )
        password = (
            unquote(parts.password) if parts.password else (query["password"][0] if "password" in query else None)
        )
        if parts.scheme == "redis":
            path = unquote(parts.path).lstrip("/")
            db = int(path) if path and "db" not in query else db  # redis-py: the query's db wins over the path's
            return Target(
                host=parts.hostname or "localhost",
                port=parts.port or 6379,
                username=username or None,
                password=password or None,
                db=db,
            )
        if parts.scheme == "unix" and parts.path:
            return Target(path=unquote(parts.path), username=username or None, password=password or None, db=db)
    except (ValueError, IndexError):
        return None
    return None


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = RespParser()
        self.answered_at = trio.current_time()  # when it last gave a reply (opened: AUTH/SELECT answered, or now)

    def server_closed(self) -> bool:
        """True when the idle connection can be read: the server closed it (EOF or reset: a restart, a failover,
        CLIENT KILL, its idle timeout) or sent bytes nobody asked for. Either way it must not carry a call. One
        poll(2) with no wait."""
        try:
            fd = self.stream.socket.fileno()
            if fd < 0:
                return True
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    async def call(self, *args: bytes | str | int | float, max_reply_bytes: int) -> Reply:
        await self.stream.send_all(encode_command(*args))
        while True:
            reply = self.parser.next_reply(max_reply_bytes)
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
        stream: trio.SocketStream
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
                _check_open(await conn.call(*auth, max_reply_bytes=SCRIPT_REPLY_BYTES), "AUTH")
            if t.db:
                _check_open(await conn.call("SELECT", t.db, max_reply_bytes=SCRIPT_REPLY_BYTES), "SELECT")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return conn

    async def call(
        self, *args: bytes | str | int | float, retry: bool = True, max_reply_bytes: int = DEFAULT_REPLY_BYTES
    ) -> Reply:
        """One command; its reply (an error reply raises StoreError). StoreUnavailable when Redis cannot be reached
        or does not answer within ``timeout_s`` (twice that when the command is sent a second time; a script's call
        :meth:`evalsha` up to four times that), plus at most ``timeout_s`` waiting for a free connection.
        ``retry=False`` for a command that must not run twice (a read of a consumer group: entries delivered in a
        lost reply are left for the caller's recovery, not skipped). A reply longer than ``max_reply_bytes`` is a
        protocol error (the connection is closed; StoreUnavailable)."""
        await self._acquire_slot()
        try:
            reply = await self._call_once_more(args, attempts=2 if retry else 1, max_reply_bytes=max_reply_bytes)
        finally:
            self.limiter.release()
        if isinstance(reply, RespError):
            self.runner.mark_up()
            raise StoreError(f"redis: {reply.message[:200]}")
        self.runner.mark_up()
        return reply

    async def evalsha(
        self,
        script: Script,
        keys: list[str],
        args: list[bytes | str | int | float],
        *,
        max_reply_bytes: int = SCRIPT_REPLY_BYTES,
    ) -> Reply:
        """Run ``script`` (atomically on the server); its reply. StoreError for an error it raised."""
        await self._acquire_slot()
        try:
            command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            reply = await self._call_once_more(command, max_reply_bytes=max_reply_bytes)
            if isinstance(reply, RespError) and reply.prefix == "NOSCRIPT":
                command = ("EVAL", script.source, len(keys), *keys, *args)
                reply = await self._call_once_more(command, max_reply_bytes=max_reply_bytes)
        finally:
            self.limiter.release()
        self.runner.mark_up()
        if isinstance(reply, RespError):
            raise StoreError(f"redis: {reply.message[:200]}")
        return reply

    async def _acquire_slot(self) -> None:
        """One of the pool's ``max_connections`` slots, waited for at most ``timeout_s``: while Redis hangs every
        slot is held for up to twice that, and the calls queued behind them must fail (StoreUnavailable: a 503)
        rather than wait without limit, as the threaded client's runner does."""
        with trio.move_on_after(self.timeout_s):
            await self.limiter.acquire()
            return
        raise self.runner.mark_down(TimeoutError(f"no free Redis connection within {self.timeout_s:g} s"))

    async def _idle_connection(self) -> _Connection | None:
        """A pooled connection the server has not closed meanwhile (those it closed are dropped quietly)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.server_closed():
                return conn
            await trio.aclose_forcefully(conn.stream)
        return None

    async def _drop_idle(self, *, answered_before: float = float("inf")) -> None:
        """After a connection failed on the way: the pooled ones most likely share its fate (a restart, a failover,
        a cut path); the next calls open fresh ones. ``answered_before`` (after a timeout): only those that have not
        answered since then."""
        dropped = [conn for conn in self._idle if conn.answered_at < answered_before]
        self._idle = [conn for conn in self._idle if conn.answered_at >= answered_before]
        for conn in dropped:
            await trio.aclose_forcefully(conn.stream)

    async def _call_once_more(
        self, args: tuple[bytes | str | int | float, ...], *, max_reply_bytes: int, attempts: int = 2
    ) -> Reply:
        """``args`` on a pooled connection, and (``attempts`` 2) once more on a fresh one if that fails on the way
        or gets no answer within ``timeout_s`` (each attempt has its own ``timeout_s``: at most twice that in all,
        the runner's deadline, as redis-py's client with one retry). After a timeout the idle connections that have
        not answered since the attempt was sent are closed (see the module's note)."""
        if self._closed:
            raise StoreError("redis: the store is closed")
        failure: BaseException | None = None
        for attempt in range(1, attempts + 1):
            conn: _Connection | None = None
            sent_at = trio.current_time()
            with trio.move_on_after(self.timeout_s):
                try:
                    conn = await self._idle_connection() if attempt == 1 else None
                    if conn is None:
                        conn = await self._open()
                    reply = await conn.call(*args, max_reply_bytes=max_reply_bytes)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError) as exc:
                    if conn is not None:
                        await trio.aclose_forcefully(conn.stream)
                    await self._drop_idle()
                    failure = exc
                    continue
                except BaseException:  # cancelled: the reply, if it comes, must not be read by another call
                    if conn is not None:
                        await trio.aclose_forcefully(conn.stream)
                    raise
                if conn.parser.buffered or self._closed:  # bytes beyond the reply (out of step), or closed
                    await trio.aclose_forcefully(conn.stream)
                else:
                    conn.answered_at = trio.current_time()
                    self._idle.append(conn)
                return reply
            # No answer within timeout_s: this connection's reply may still come; it is closed, never reused.
            if conn is not None:
                await trio.aclose_forcefully(conn.stream)
            await self._drop_idle(answered_before=sent_at)  # a path lost without a word: see the module's note
            failure = TimeoutError(f"no answer within {self.timeout_s:g} s")
        assert failure is not None
        raise self.runner.mark_down(failure) from failure


def _check_open(reply: Reply, step: str) -> None:
    if isinstance(reply, RespError):
        raise ConnectionRefusedError(f"Redis refused {step}: {reply.message[:200]}")
