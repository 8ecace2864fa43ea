"""The anchor's Redis store (redis-py, sync client in worker threads; the hot calls on trio sockets through
:mod:`anchor.stores.redis_native`): session cache with a TTL, an atomic token-bucket rate limiter, and Redis Streams
as the queue between gateway and node. The Lua scripts live in :mod:`anchor.stores.redis_scripts`.

The rate limiter is one Lua script (atomic on the server) using the server's clock (``TIME``), so several
gateways sharing a Redis share their buckets and no clock skew between them matters. A bucket that has been idle
for longer than it takes to refill expires by itself.

Every public method is ``async``; a redis-py call runs in a worker thread through a bounded
:class:`trio.CapacityLimiter`, a native one on at most ``max_connections`` pooled trio connections.
A server that is down raises :class:`StoreUnavailable` (within ``timeout_s``) and logs one line; redis-py's pool
reconnects on the next call once the server is back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from anchor.stores import redis_scripts as scripts
from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreError
from anchor.stores.redis_native import NativeRedis, Script, native_target
from anchor.stores.resp import Reply

T = TypeVar("T")
KEY_PREFIX = "aiv:"  # every key this store writes starts with it
MAX_SESSION_BYTES = 65_536
# The native client's bound on a stream read's reply, per entry asked for: an audit record (its detail at most
# audit_drain.DETAIL_MAX_BYTES, 64 KB, plus the message it carries, a few KB) or a queued message, with room.
ENTRY_REPLY_BYTES = 128 * 1024
DEFAULT_STREAM_MAXLEN = 100_000  # entries kept per stream (approximate trimming); the queue is bounded


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record for :meth:`RedisStore.send_audited` (the audit stream's entry; its ``event_id`` makes the
    drain's insert into PostgreSQL idempotent)."""

    event_id: str
    actor: str
    action: str
    target: str
    detail_json: str


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What :meth:`RedisStore.send_audited` did: ``ok`` (the audit record, carrying the message, is written, and
    the status record; ``entry_id`` is the audit entry's), ``miss`` (the key's state is not cached as active:
    nothing written or spent), ``ip`` / ``key`` (rate limited; ``retry_after_s``), ``audit_full`` (the rate-limit
    tokens are spent, nothing is written) or ``queue_full`` (tokens spent, audited, not queued)."""

    result: str
    entry_id: str = ""
    retry_after_s: float = 0.0
    key_cache_ttl_ms: int = -1  # after an "ok" that checked the key cache: what its entry has left; -1: not known


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: float  # 0 when allowed; else seconds until one token is there


@dataclass(frozen=True, slots=True)
class StreamEntry:
    id: str
    fields: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class PendingEntry:
    id: str
    consumer: str  # the group's consumer it was delivered to and that has not acknowledged it
    idle_ms: int


class RedisStore:
    def __init__(self, url: str, *, timeout_s: float = 5.0, max_connections: int = 16, native: bool = True) -> None:
        self._timeout_s = timeout_s
        # One quick retry: a pooled connection that died with a restarted server is replaced transparently.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=max_connections,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 1),
        )
        self._bucket = self._client.register_script(scripts.TOKEN_BUCKET_LUA)
        self._enqueue = self._client.register_script(scripts.ENQUEUE_LUA)
        self._settle = self._client.register_script(scripts.SETTLE_LUA)
        self._send = self._client.register_script(scripts.SEND_LUA)
        self._key_refresh = self._client.register_script(scripts.KEY_REFRESH_LUA)
        self._handover = self._client.register_script(scripts.HANDOVER_LUA)
        self._begin = self._client.register_script(scripts.BEGIN_LUA)
        self._release = self._client.register_script(scripts.RELEASE_LUA)
        self._runner = BlockingRunner(
            "redis",
            max_connections,
            (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
            2 * timeout_s,
            errors=(redis.exceptions.RedisError,),
        )
        # The hot calls (POST /v1/messages' script; the queue consumer's reads and settles; the audit drain's reads
        # and hand-over) on trio sockets, without a worker thread each; None: a URL that client does not speak
        # (TLS...), redis-py for everything.
        target = native_target(url) if native else None
        self._native = (
            NativeRedis(target, self._runner, timeout_s=timeout_s, max_connections=max_connections)
            if target is not None
            else None
        )
        self._send_native = Script(scripts.SEND_LUA)
        self._settle_native = Script(scripts.SETTLE_LUA)
        self._handover_native = Script(scripts.HANDOVER_LUA)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await self._runner.run(fn)

    async def aclose(self) -> None:
        if self._native is not None:
            await self._native.aclose()
        await self._call(self._client.close)

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def down_reason(self) -> str | None:
        return self._runner.down_reason

    async def ping(self) -> None:
        await self._call(self._client.ping)

    # ------------------------------------------------------------------------------------------ rate limits

    async def take_token(self, bucket: str, rate_per_s: float, burst: int, cost: int = 1) -> RateDecision:
        """Take ``cost`` tokens from ``bucket`` (refilled at ``rate_per_s`` up to ``burst``), atomically."""
        return await self.take_tokens([(bucket, rate_per_s, burst)], cost)

    async def take_tokens(self, buckets: Sequence[tuple[str, float, int]], cost: int = 1) -> RateDecision:
        """Take ``cost`` tokens from each of ``buckets`` ((name, rate_per_s, burst) each) in one atomic step and
        one round trip — all or none: a request limited per key and per IP spends from both only if both allow
        it. When refused, ``retry_after_s`` is the longest of the waits."""
        if not buckets or cost < 1:
            raise StoreError("take_tokens: at least one bucket and cost >= 1 required")
        keys: list[str] = []
        args: list[Any] = [cost]
        for name, rate_per_s, burst in buckets:
            if not (rate_per_s > 0 and math.isfinite(rate_per_s)) or burst < 1 or cost > burst:
                raise StoreError(f"bucket {name!r}: rate_per_s > 0 and 1 <= cost <= burst required")
            keys.append(f"{KEY_PREFIX}rl:{name}")
            args += [repr(float(rate_per_s)), burst]
        raw = await self._call(lambda: self._bucket(keys=keys, args=args))
        allowed, retry = raw
        return RateDecision(bool(int(allowed)), 0.0 if int(allowed) else float(retry))

    # -------------------------------------------------------------------------------------------- sessions

    async def session_set(self, session_id: str, data: Mapping[str, Any], ttl_s: float, *, nx: bool = False) -> bool:
        """Cache ``data`` (JSON) under ``session_id`` for ``ttl_s`` seconds; with ``nx`` only if nothing is cached
        under it yet. True if written."""
        blob = json.dumps(dict(data), separators=(",", ":")).encode()
        if len(blob) > MAX_SESSION_BYTES:
            raise StoreError(f"session data: at most {MAX_SESSION_BYTES} bytes as JSON")
        ttl_ms = max(1, int(ttl_s * 1000))
        done = await self._call(lambda: self._client.set(f"{KEY_PREFIX}sess:{session_id}", blob, px=ttl_ms, nx=nx))
        return bool(done)

    async def time_ms(self) -> int:
        """The Redis server's clock, in ms since the epoch (what ``key_cache_refresh``'s ``read_at_ms`` is read
        with: one clock, no skew between hosts)."""
        sec, usec = await self._call(self._client.time)
        return int(sec) * 1000 + int(usec) // 1000

    async def key_cache_refresh(
        self,
        session_id: str,
        data: Mapping[str, Any],
        ttl_s: float,
        *,
        read_at_ms: int | None = None,
    ) -> bool:
        """Write an API key's state read from PostgreSQL into its cache entry for ``ttl_s`` seconds (see
        ``scripts.KEY_REFRESH_LUA``): a revoked state always; an active one unless the entry says revoked meanwhile,
        and (``read_at_ms``: :meth:`time_ms` before the read) only until ``ttl_s`` after the read — nothing if that
        has passed when the write runs. True if written."""
        blob = json.dumps(dict(data), separators=(",", ":")).encode()
        if len(blob) > MAX_SESSION_BYTES:
            raise StoreError(f"session data: at most {MAX_SESSION_BYTES} bytes as JSON")
        ttl_ms = max(1, int(ttl_s * 1000))
        revoked = "0" if data.get("revoked") is False else "1"
        keys = [f"{KEY_PREFIX}sess:{session_id}"]
        read_at = -1 if read_at_ms is None else read_at_ms
        args: list[bytes | int | str] = [blob, ttl_ms, revoked, read_at]
        done = await self._call(lambda: self._key_refresh(keys=keys, args=args))
        return bool(done)

    async def session_get(self, session_id: str) -> dict[str, Any] | None:
        """The cached data, or None if unknown or expired."""
        blob = await self._call(lambda: self._client.get(f"{KEY_PREFIX}sess:{session_id}"))
        if blob is None:
            return None
        value = json.loads(blob)
        if not isinstance(value, dict):
            raise StoreError(f"session {session_id!r}: cached value is not a JSON object")
        return value

    async def session_delete(self, session_id: str) -> bool:
        n = await self._call(lambda: self._client.delete(f"{KEY_PREFIX}sess:{session_id}"))
        return bool(n)

    # --------------------------------------------------------------------------------------------- streams

    async def stream_add(
        self, stream: str, fields: Mapping[str, bytes | str], maxlen: int = DEFAULT_STREAM_MAXLEN
    ) -> str:
        """Append an entry; its ID. The stream keeps about ``maxlen`` entries (the oldest are trimmed)."""
        key = f"{KEY_PREFIX}q:{stream}"
        payload: dict[Any, Any] = dict(fields)
        entry_id = await self._call(lambda: self._client.xadd(key, payload, maxlen=maxlen, approximate=True))
        return _text(entry_id)

    async def stream_ensure_group(self, stream: str, group: str) -> None:
        """Create consumer ``group`` (reading from the stream's start) unless it exists."""
        await self._ensure_group(f"{KEY_PREFIX}q:{stream}", stream, group)

    async def _ensure_group(self, key: str, stream: str, group: str) -> None:
        """XGROUP CREATE ``group`` on ``key`` from its start (and the stream if absent); an existing group is fine."""

        def work() -> None:
            try:
                self._client.xgroup_create(key, group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise StoreError(f"stream {stream!r}: {exc}") from exc

        await self._call(work)

    async def stream_read(
        self,
        stream: str,
        group: str,
        consumer: str,
        count: int = 16,
        block_ms: int = 0,
        pending: bool = False,
        after: str = "0",
    ) -> list[StreamEntry]:
        """Up to ``count`` entries for ``consumer`` of ``group``: new ones (waiting up to ``block_ms``; 0: do not
        wait), or with ``pending`` the ones delivered to it before and not yet acknowledged (after a crash), with
        IDs above ``after``."""
        if block_ms * 1.25 >= self._timeout_s * 1000:
            raise StoreError(f"stream_read: block_ms must stay well below the store timeout ({self._timeout_s} s)")
        key = f"{KEY_PREFIX}q:{stream}"
        start = after if pending else ">"
        if self._native is not None:
            block = ("BLOCK", block_ms) if block_ms else ()
            reply = await self._native.call(
                "XREADGROUP",
                "GROUP",
                group,
                consumer,
                "COUNT",
                count,
                *block,
                "STREAMS",
                key,
                start,
                retry=False,
                max_reply_bytes=_read_bound(count),
            )
            return _native_entries(reply)
        raw: Any = await self._call(
            lambda: self._client.xreadgroup(group, consumer, {key: start}, count=count, block=block_ms or None)
        )
        entries: list[StreamEntry] = []
        for _name, items in raw or []:
            for entry_id, fields in items:
                if fields is None:  # pending entry trimmed away meanwhile
                    continue
                entries.append(StreamEntry(_text(entry_id), {_text(k): bytes(v) for k, v in fields.items()}))
        return entries

    async def stream_ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge (and forget) entries; how many were pending."""
        if not ids:
            return 0
        key = f"{KEY_PREFIX}q:{stream}"
        n = await self._call(lambda: self._client.xack(key, group, *ids))
        return int(n)

    async def stream_ack_delete(self, stream: str, group: str, ids: Sequence[str]) -> None:
        """Acknowledge entries and delete them from the stream (one transaction)."""
        if not ids:
            return
        key = f"{KEY_PREFIX}q:{stream}"

        def work() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.xack(key, group, *ids)
                pipe.xdel(key, *ids)
                pipe.execute()

        await self._call(work)

    async def stream_length(self, stream: str) -> int:
        return int(await self._call(lambda: self._client.xlen(f"{KEY_PREFIX}q:{stream}")))

    async def stream_pending_count(self, stream: str, group: str) -> int:
        """Entries delivered to the group's consumers and not yet acknowledged."""
        info: Any = await self._call(lambda: self._client.xpending(f"{KEY_PREFIX}q:{stream}", group))
        return int(info["pending"])

    async def queue_put(
        self, stream: str, payload: bytes, status_key: str, status: Mapping[str, str], *, max_backlog: int, ttl_s: float
    ) -> str | None:
        """Append ``payload`` to ``stream`` and write its status record (a hash kept ``ttl_s``) in one atomic step;
        the entry's ID, or None (nothing written) when ``max_backlog`` entries are waiting already."""
        keys = [f"{KEY_PREFIX}q:{stream}", f"{KEY_PREFIX}st:{status_key}"]
        args: list[Any] = [max_backlog, max(1, int(ttl_s * 1000)), payload, *_pairs(status)]
        raw = await self._call(lambda: self._enqueue(keys=keys, args=args))
        return None if raw is None else _text(raw)

    async def queue_settle(
        self, stream: str, group: str, entry_id: str, status_key: str, status: Mapping[str, str], *, ttl_s: float
    ) -> None:
        """Update the status record, acknowledge and delete the entry, in one atomic step."""
        await self.queue_settle_many(stream, group, [(entry_id, status_key, status)], ttl_s=ttl_s)

    async def queue_settle_many(
        self,
        stream: str,
        group: str,
        settles: Sequence[tuple[str, str | None, Mapping[str, str] | None]],
        *,
        ttl_s: float,
    ) -> int:
        """Settle a batch ((entry ID, status key or None, status or None) each): update each status record,
        acknowledge and delete every entry, in one atomic step (all or nothing). How many were pending."""
        if not settles:
            return 0
        keys = [f"{KEY_PREFIX}q:{stream}"]
        args: list[Any] = [group, max(1, int(ttl_s * 1000))]
        for entry_id, status_key, status in settles:
            if status_key is None or not status:
                args += [entry_id, 0, 0]
                continue
            keys.append(f"{KEY_PREFIX}st:{status_key}")
            items = _pairs(status)
            args += [entry_id, len(keys), len(items), *items]
        if self._native is not None:
            acked = await self._native.evalsha(self._settle_native, keys, args)
            if not isinstance(acked, int):
                raise StoreError(f"redis: the settle script answered {type(acked).__name__}, not an integer")
            return acked
        return int(await self._call(lambda: self._settle(keys=keys, args=args)))

    async def status_get(self, status_key: str) -> dict[str, str] | None:
        """A status record written by :meth:`queue_put` / :meth:`queue_settle`; None if unknown or expired."""
        raw: Any = await self._call(lambda: self._client.hgetall(f"{KEY_PREFIX}st:{status_key}"))
        return {_text(k): _text(v) for k, v in raw.items()} or None

    # ------------------------------------------------------------------------------ audited sends, audit stream

    async def send_audited(
        self,
        *,
        audit_stream: str,
        stream: str,
        status_key: str,
        status: Mapping[str, str],
        payload: bytes,
        record: AuditRecord,
        max_audit_backlog: int,
        max_backlog: int,
        ttl_s: float,
        key_cache: str | None = None,
        ip_buckets: Sequence[tuple[str, float, int]] = (),
        key_bucket: tuple[str, float, int] | None = None,
    ) -> SendOutcome:
        """Check the key's cached state (``key_cache``: a session ID; None: not checked), take a token from the
        per-IP buckets then from the per-key bucket, append the audit record carrying the message (for ``stream``)
        to ``audit_stream`` and write the status record: one atomic script, one round trip (see ``scripts.SEND_LUA``).
        The message reaches ``stream`` only through :meth:`audit_handover`, after its audit row committed."""
        buckets = [*ip_buckets, *([key_bucket] if key_bucket is not None else [])]
        keys = [
            f"{KEY_PREFIX}{audit_stream}",
            f"{KEY_PREFIX}q:{stream}",
            f"{KEY_PREFIX}st:{status_key}",
            f"{KEY_PREFIX}sess:{key_cache or '-'}",
        ]
        items = _pairs(status)
        args: list[Any] = [
            1 if key_cache is not None else 0,
            len(ip_buckets),
            1 if key_bucket is not None else 0,
            max_audit_backlog,
            max_backlog,
            max(1, int(ttl_s * 1000)),
            payload,
            record.event_id,
            record.actor,
            record.action,
            record.target,
            record.detail_json,
            len(items),
            *items,
        ]
        for name, rate_per_s, burst in buckets:
            if not (rate_per_s > 0 and math.isfinite(rate_per_s)) or burst < 1:
                raise StoreError(f"bucket {name!r}: rate_per_s > 0 and burst >= 1 required")
            keys.append(f"{KEY_PREFIX}rl:{name}")
            args += [repr(float(rate_per_s)), burst]
        args.append(stream)
        raw: Any
        if self._native is not None:
            raw = await self._native.evalsha(self._send_native, keys, args)
        else:
            raw = await self._call(lambda: self._send(keys=keys, args=args))
        result = _text(raw[0])
        if result == "ok":
            ttl_ms = int(raw[2]) if len(raw) > 2 else -1
            return SendOutcome("ok", entry_id=_text(raw[1]), key_cache_ttl_ms=ttl_ms)
        if result in ("ip", "key"):
            return SendOutcome(result, retry_after_s=float(_text(raw[1])))
        return SendOutcome(result)

    async def audit_entries(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int = 0, claim_idle_ms: int = 0
    ) -> list[StreamEntry]:
        """For the audit drain: up to ``count`` entries of ``stream`` for ``consumer`` of ``group``. With
        ``claim_idle_ms`` the entries other consumers were given and left unacknowledged that long (a drain that
        died) are claimed first; then this consumer's own pending ones (read before a failure); then new ones
        (waiting up to ``block_ms``)."""
        key = f"{KEY_PREFIX}{stream}"

        def work() -> Any:
            if claim_idle_ms > 0:
                claimed: Any = self._client.xautoclaim(key, group, consumer, claim_idle_ms, "0-0", count=count)
                if claimed[1]:
                    return [(key, claimed[1])]
            mine: Any = self._client.xreadgroup(group, consumer, {key: "0"}, count=count)
            if mine and mine[0][1]:
                return mine
            return self._client.xreadgroup(group, consumer, {key: ">"}, count=count, block=block_ms or None)

        if block_ms * 1.25 >= self._timeout_s * 1000:
            raise StoreError(f"audit_entries: block_ms must stay well below the store timeout ({self._timeout_s} s)")
        if self._native is not None:  # the same three steps on trio sockets; reads never retried (see stream_read)
            native = self._native
            if claim_idle_ms > 0:
                claimed = await native.call(
                    "XAUTOCLAIM",
                    key,
                    group,
                    consumer,
                    claim_idle_ms,
                    "0-0",
                    "COUNT",
                    count,
                    retry=False,
                    max_reply_bytes=_read_bound(count),
                )
                if isinstance(claimed, list) and len(claimed) >= 2 and claimed[1]:
                    return _native_entries([[key.encode(), claimed[1]]])
            read = ("XREADGROUP", "GROUP", group, consumer, "COUNT", count)
            mine = _native_entries(
                await native.call(*read, "STREAMS", key, "0", retry=False, max_reply_bytes=_read_bound(count))
            )
            if mine:
                return mine
            block = ("BLOCK", block_ms) if block_ms else ()
            return _native_entries(
                await native.call(*read, *block, "STREAMS", key, ">", retry=False, max_reply_bytes=_read_bound(count))
            )
        raw: Any = await self._call(work)
        entries: list[StreamEntry] = []
        for _name, items in raw or []:
            for entry_id, fields in items:
                if fields is None:
                    continue
                entries.append(StreamEntry(_text(entry_id), {_field_name(k): bytes(v) for k, v in fields.items()}))
        return entries

    async def audit_ensure_group(self, stream: str, group: str) -> None:
        await self._ensure_group(f"{KEY_PREFIX}{stream}", stream, group)

    async def audit_prune_consumers(self, stream: str, group: str, *, idle_ms: int, keep: str) -> int:
        """Forget the group's consumers (other than ``keep``) that hold nothing and have been idle ``idle_ms``:
        each drain run has its own name, so without this the group would list every past run. How many went."""
        key = f"{KEY_PREFIX}{stream}"

        def work() -> int:
            gone = 0
            consumers: Any = self._client.xinfo_consumers(key, group)
            for consumer in consumers:
                name = _text(consumer["name"])
                if name != keep and int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                    # DELCONSUMER would drop a consumer's pending entries too: only empty ones go, and only after
                    # an idle time far beyond a live drain's (it reads at least every block_ms), so none is alive.
                    self._client.xgroup_delconsumer(key, group, name)
                    gone += 1
            return gone

        return await self._call(work)

    async def audit_handover(
        self,
        stream: str,
        group: str,
        entries: Sequence[tuple[str, str, tuple[str, bytes] | None]],
        *,
        dedupe_ttl_s: float,
    ) -> int:
        """After the audit rows of ``entries`` ((entry ID, event ID, (message stream, payload) or None) each)
        committed: acknowledge and delete each audit entry and, if this acknowledged it and no message of its event
        ID was handed over within ``dedupe_ttl_s``, append its message to its stream (for the node) — one atomic
        step (``scripts.HANDOVER_LUA``). How many messages were handed over."""
        if not entries:
            return 0
        keys = [f"{KEY_PREFIX}{stream}"]
        index: dict[str, int] = {}
        args: list[Any] = [group, max(1, int(dedupe_ttl_s * 1000))]
        for entry_id, event_id, handover in entries:
            if handover is None:
                args += [entry_id, 0, 0, b""]
                continue
            target, payload = handover
            if target not in index:
                keys.append(f"{KEY_PREFIX}q:{target}")
                index[target] = len(keys)
            dedupe = 0
            if event_id:
                keys.append(f"{KEY_PREFIX}ho:{stream}:{event_id}")  # per audit stream: anchors never mix
                dedupe = len(keys)
            args += [entry_id, index[target], dedupe, payload]
        if self._native is not None:
            handed = await self._native.evalsha(self._handover_native, keys, args)
            if not isinstance(handed, int):
                raise StoreError(f"redis: the hand-over script answered {type(handed).__name__}, not an integer")
            return handed
        return int(await self._call(lambda: self._handover(keys=keys, args=args)))

    async def audit_ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        """Acknowledge audit entries and delete them, handing nothing over."""
        await self.audit_handover(stream, group, [(i, "", None) for i in ids], dedupe_ttl_s=1.0)

    async def audit_dead_letter(self, stream: str, group: str, entries: Sequence[StreamEntry], *, maxlen: int) -> None:
        """Move audit entries PostgreSQL refused (or that no gateway wrote) to ``<stream>:dead`` (kept for an
        operator, about ``maxlen`` entries: the oldest are trimmed), acknowledge and delete them: one transaction.
        The messages they carry are not handed to the node."""
        if not entries:
            return
        key = f"{KEY_PREFIX}{stream}"
        ids = [e.id for e in entries]

        def work() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                for entry in entries:
                    fields: dict[Any, Any] = {k: v for k, v in entry.fields.items() if k != "m"}
                    fields["entry"] = entry.id
                    pipe.xadd(key + ":dead", fields, maxlen=maxlen, approximate=True)
                pipe.xack(key, group, *ids)
                pipe.xdel(key, *ids)
                pipe.execute()

        await self._call(work)

    async def audit_backlog(self, stream: str) -> int:
        """Audit records not yet in PostgreSQL (read or not)."""
        return int(await self._call(lambda: self._client.xlen(f"{KEY_PREFIX}{stream}")))

    async def append_only(self) -> bool | None:
        """Whether the server writes an append-only file (``appendonly yes``); None if it will not say (CONFIG
        disabled, as some hosted Redis do)."""

        def work() -> bool | None:
            try:
                got: Any = self._client.config_get("appendonly")
            except redis.exceptions.ResponseError:
                return None
            value = got.get("appendonly") or got.get(b"appendonly")
            return None if value is None else _text(value) == "yes"

        return await self._call(work)

    async def maxmemory_policy(self) -> str | None:
        """The server's ``maxmemory-policy`` (``noeviction`` keeps every key when memory runs out); None if it will
        not say (CONFIG disabled, as some hosted Redis do)."""

        def work() -> str | None:
            try:
                got: Any = self._client.config_get("maxmemory-policy")
            except redis.exceptions.ResponseError:
                return None
            value = got.get("maxmemory-policy") or got.get(b"maxmemory-policy")
            return None if value is None else _text(value)

        return await self._call(work)

    # ----------------------------------------------------------------------- several consumers (replicas)

    async def queue_begin(
        self, status_key: str, consumer: str, *, ttl_s: float, delivered: bool = False
    ) -> tuple[str, str]:
        """Compare-and-set the status record before ``consumer`` hands its entry to a node (see
        ``scripts.BEGIN_LUA``): (verdict, detail) with verdict ``mine``, ``again``, ``other``, ``unknown`` (no record
        of an entry ``delivered`` before) or ``settled``. ``ttl_s`` is kept for the callers; a ``handing`` record has
        none."""
        return (await self.queue_begin_many([status_key], consumer, ttl_s=ttl_s, delivered=delivered))[0]

    async def queue_begin_many(
        self, status_keys: Sequence[str], consumer: str, *, ttl_s: float, delivered: bool = False
    ) -> list[tuple[str, str]]:
        """:meth:`queue_begin` for a read batch in one atomic step: one (verdict, detail) per key, in order."""
        if not status_keys:
            return []
        keys = [f"{KEY_PREFIX}st:{k}" for k in status_keys]
        args: list[str | int] = [consumer, max(1, int(ttl_s * 1000)), "1" if delivered else "0"]
        raw: Any = await self._call(lambda: self._begin(keys=keys, args=args))
        return [(_text(raw[i]), _text(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def queue_release_many(self, status_keys: Sequence[str], consumer: str, *, ttl_s: float) -> int:
        """Set the records ``consumer`` began (``handing``) and did not hand over back to ``queued`` (see
        ``scripts.RELEASE_LUA``); how many were."""
        if not status_keys:
            return 0
        keys = [f"{KEY_PREFIX}st:{k}" for k in status_keys]
        args: list[str | int] = [consumer, max(1, int(ttl_s * 1000))]
        raw: Any = await self._call(lambda: self._release(keys=keys, args=args))
        return int(raw)

    async def stream_pending_idle(
        self, stream: str, group: str, *, min_idle_ms: int, after: str = "-", count: int = 64
    ) -> list[PendingEntry]:
        """Up to ``count`` entries of the group's pending list (any consumer's) unacknowledged for at least
        ``min_idle_ms``, with IDs above ``after`` (``-``: from the start), oldest first."""
        key = f"{KEY_PREFIX}q:{stream}"
        start = after if after == "-" else f"({after}"
        raw: Any = await self._call(
            lambda: self._client.xpending_range(key, group, min=start, max="+", count=count, idle=min_idle_ms)
        )
        return [PendingEntry(_text(r["message_id"]), _text(r["consumer"]), int(r["time_since_delivered"])) for r in raw]

    async def stream_still_pending(self, stream: str, group: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are in the group's pending list (any consumer's): delivered and not acknowledged."""
        if not ids:
            return set()
        key = f"{KEY_PREFIX}q:{stream}"

        def work() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for entry_id in ids:
                pipe.xpending_range(key, group, min=entry_id, max=entry_id, count=1)
            return pipe.execute()

        raw = await self._call(work)
        return {_text(r["message_id"]) for rows in raw for r in rows}

    async def stream_entry(self, stream: str, entry_id: str) -> StreamEntry | None:
        """One entry by ID; None if it was deleted (settled meanwhile) or trimmed."""
        raw: Any = await self._call(lambda: self._client.xrange(f"{KEY_PREFIX}q:{stream}", entry_id, entry_id))
        for found_id, fields in raw or []:
            return StreamEntry(_text(found_id), {_text(k): bytes(v) for k, v in fields.items()})
        return None

    async def stream_claim(
        self, stream: str, group: str, consumer: str, ids: Sequence[str], *, min_idle_ms: int
    ) -> list[StreamEntry]:
        """XCLAIM: move ``ids`` to ``consumer``'s pending list, each only if still unacknowledged for at least
        ``min_idle_ms`` (so of two replicas claiming the same entry, one gets it); the entries it got."""
        if not ids:
            return []
        key = f"{KEY_PREFIX}q:{stream}"
        raw: Any = await self._call(lambda: self._client.xclaim(key, group, consumer, min_idle_ms, list(ids)))
        return [
            StreamEntry(_text(entry_id), {_text(k): bytes(v) for k, v in fields.items()})
            for entry_id, fields in raw or []
            if fields is not None
        ]


def _read_bound(count: int) -> int:
    return 65_536 + max(1, count) * ENTRY_REPLY_BYTES


def _native_entries(reply: Reply) -> list[StreamEntry]:
    """XREADGROUP's raw reply ([[stream, [[id, [field, value, ...] or nil], ...]]] or nil) as entries. A pending
    entry deleted meanwhile (nil fields) comes with no fields, as redis-py gives it: the queue acknowledges it as
    malformed, which clears it from the pending list. StoreError for any other shape."""
    bad = StoreError("redis: XREADGROUP answered a reply of an unexpected shape")
    if reply is None:
        return []
    if not isinstance(reply, list):
        raise bad
    entries: list[StreamEntry] = []
    for stream_reply in reply:
        if not (isinstance(stream_reply, list) and len(stream_reply) == 2 and isinstance(stream_reply[1], list)):
            raise bad
        for item in stream_reply[1]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes)):
                raise bad
            fields = [] if item[1] is None else item[1]
            if not (isinstance(fields, list) and len(fields) % 2 == 0):
                raise bad
            values: dict[str, bytes] = {}
            for name, value in zip(fields[::2], fields[1::2], strict=True):
                if not (isinstance(name, bytes) and isinstance(value, bytes)):
                    raise bad
                values[name.decode(errors="replace")] = value
            entries.append(StreamEntry(item[0].decode(errors="replace"), values))
    return entries


def _pairs(fields: Mapping[str, str]) -> list[str]:
    if not fields:
        raise StoreError("a status record needs at least one field")
    return [item for kv in fields.items() for item in kv]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field_name(value: bytes | str) -> str:
    """A field name of an entry anyone with access to Redis may have written: never fails."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
