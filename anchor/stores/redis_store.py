"""The anchor's Redis store (redis-py, sync client in worker threads): session cache with a TTL, an atomic
token-bucket rate limiter, and Redis Streams as the queue between gateway and node.

The rate limiter is one Lua script (atomic on the server) using the server's clock (``TIME``), so several
gateways sharing a Redis share their buckets and no clock skew between them matters. A bucket that has been idle
for longer than it takes to refill expires by itself.

Every public method is ``async`` and runs the blocking call through a bounded :class:`trio.CapacityLimiter`.
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

from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreError

T = TypeVar("T")
KEY_PREFIX = "aiv:"  # every key this store writes starts with it
MAX_SESSION_BYTES = 65_536
DEFAULT_STREAM_MAXLEN = 100_000  # entries kept per stream (approximate trimming); the queue is bounded

# KEYS: the buckets; ARGV: cost, then rate per second and burst of each bucket. All-or-nothing: the cost is taken
# from every bucket if each holds it, else from none. Returns {allowed (0/1), retry_after_s as a string} (Lua
# numbers returned to Redis are truncated to integers, hence the string); retry_after_s is the longest wait.
# A Lua function (prepended to the scripts that limit) taking ``cost`` from the buckets KEYS[first..first+n-1],
# whose rate and burst are ARGV[argi], ARGV[argi+1], ... All-or-nothing: the cost is taken from every bucket if each
# holds it, else from none. Returns the longest wait in seconds (0: taken). It uses the server's clock (TIME).
_BUCKETS_LUA = """
local function take_buckets(first, n, argi, cost)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local levels = {}
  local retry = 0
  for i = 0, n - 1 do
    local key = KEYS[first + i]
    local rate = tonumber(ARGV[argi + 2 * i])
    local burst = tonumber(ARGV[argi + 2 * i + 1])
    local state = redis.call('HMGET', key, 'tokens', 'ts')
    local tokens = tonumber(state[1])
    local ts = tonumber(state[2])
    if tokens == nil or ts == nil then
      tokens = burst
      ts = now
    end
    local elapsed = now - ts
    if elapsed < 0 then elapsed = 0 end
    tokens = math.min(burst, tokens + elapsed * rate)
    levels[i] = tokens
    if tokens < cost then
      local wait = (cost - tokens) / rate
      if wait > retry then retry = wait end
    end
  end
  for i = 0, n - 1 do
    local key = KEYS[first + i]
    local rate = tonumber(ARGV[argi + 2 * i])
    local burst = tonumber(ARGV[argi + 2 * i + 1])
    local tokens = levels[i]
    if retry == 0 then tokens = tokens - cost end
    redis.call('HSET', key, 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
    redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  end
  return retry
end
"""

# KEYS: the buckets; ARGV: cost, then rate per second and burst of each bucket. Returns {allowed (0/1),
# retry_after_s as a string} (Lua numbers returned to Redis are truncated to integers, hence the string).
_TOKEN_BUCKET_LUA = (
    _BUCKETS_LUA
    + """
local retry = take_buckets(1, #KEYS, 2, tonumber(ARGV[1]))
local allowed = 0
if retry == 0 then allowed = 1 end
return {allowed, string.format('%.6f', retry)}
"""
)


# The gateway's message queue (anchor.queue): an entry and its status record change together, atomically.
# Enqueue — KEYS: stream, status hash; ARGV: max backlog, status TTL ms, payload, then status field/value pairs.
# Refused (nil) when the backlog is full: acknowledged entries are deleted (below), so XLEN is the backlog and the
# MAXLEN backstop never trims an unread entry.
_ENQUEUE_LUA = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[3])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id
"""
# Settle — KEYS: stream, status hash; ARGV: group, entry ID, status TTL ms, then status field/value pairs.
_SETTLE_LUA = """
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# Begin a hand-over to a node (gateway replicas sharing one consumer group) — KEYS: status hash; ARGV: consumer,
# status TTL ms, whether the entry was delivered before (1: from a pending list or claimed; 0: read new). A
# compare-and-set on the record: "queued" becomes "handing" by this consumer, so of two replicas holding the same
# entry (one claimed it from the other, which was only slow) one hands it over. The "handing" record has no TTL
# until it is settled (the settle script sets one): a replica gone for good cannot have its in-doubt record expire
# and the entry handed over again. No record: for a new entry (it waited longer than the TTL) as "queued"; for
# one delivered before, "unknown" — its hand-over may have begun and the record been lost (expired, or evicted by
# a Redis not on noeviction), so it must not be sent again.
# Returns {verdict, detail}: mine (begun now), again (this consumer began it before: a restart), other (another
# consumer's hand-over; detail names it), unknown (no record of an entry delivered before), settled (detail: the
# final state).
_BEGIN_LUA = """
local st = redis.call('HMGET', KEYS[1], 'state', 'by')
local state, by = st[1], st[2]
if state == false and ARGV[3] == '1' then return {'unknown', ''} end
if state == false or state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'handing', 'by', ARGV[1])
  redis.call('PERSIST', KEYS[1])
  return {'mine', ''}
end
if state == 'handing' then
  if by == ARGV[1] then return {'again', ''} end
  return {'other', by or ''}
end
return {'settled', state}
"""


# POST /v1/messages in one atomic step and one round trip (anchor.queue.MessageQueue.put_audited):
# KEYS: 1 audit stream, 2 message stream, 3 status hash, 4 the API key's cache entry, 5.. the per-IP buckets, then
#   the per-key bucket (or none).
# ARGV: 1 check the key cache (0/1), 2 how many per-IP buckets, 3 per-key bucket (0/1), 4 audit backlog bound,
#   5 message backlog bound, 6 status TTL ms, 7 payload, 8 audit event ID, 9 actor, 10 action, 11 target,
#   12 detail (JSON), 13 how many status field/value items, then those items, then rate/burst of each bucket,
#   then (last) the message stream's name (without the key prefix).
# In the order the gateway has always checked: the key's cached state (not cached or not active: 'miss', nothing
# spent, and the caller takes the slow path, which asks PostgreSQL), the per-IP buckets one after the other as the
# route's dependency takes them (an IPv6 client's /64, then its /48; 'ip', wait), the per-key
# bucket ('key', wait; the IP's tokens stay spent), the audit backlog ('audit_full': tokens spent, nothing written),
# then the message backlog — messages waiting for their audit row plus those waiting for the node; 'queue_full':
# the audit record is written without the message, as before). Otherwise the audit record is appended to the audit
# stream WITH the message (fields q: its stream, m: its payload) and the status record is written ("queued"). The
# message is not in the node's stream yet: the audit drain (anchor.audit_drain) appends it there only after the
# audit row committed in PostgreSQL (``audit_handover``), so no message reaches the node before its audit row is
# durable, whatever Redis's own durability (appendfsync, replicas).
# Idempotent per message: a status record already there (its key is the message's, new per request) means this
# script ran already (redis-py resent it after a socket timeout although the server had run it): 'ok', nothing
# written or spent again.
_SEND_LUA = (
    _BUCKETS_LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return {'ok', ''} end
local n_ip = tonumber(ARGV[2])
local n_key = tonumber(ARGV[3])
if ARGV[1] == '1' then
  local cached = redis.call('GET', KEYS[4])
  if not cached then return {'miss'} end
  local ok, state = pcall(cjson.decode, cached)
  if not ok or type(state) ~= 'table' or state['revoked'] ~= false then return {'miss'} end
end
local n_status = tonumber(ARGV[13])
local argi = 14 + n_status
for i = 0, n_ip - 1 do
  local wait = take_buckets(5 + i, 1, argi + 2 * i, 1)
  if wait > 0 then return {'ip', string.format('%.6f', wait)} end
end
if n_key > 0 then
  local wait = take_buckets(5 + n_ip, 1, argi + 2 * n_ip, 1)
  if wait > 0 then return {'key', string.format('%.6f', wait)} end
end
local audit_len = redis.call('XLEN', KEYS[1])
if audit_len >= tonumber(ARGV[4]) then return {'audit_full'} end
local t = redis.call('TIME')
local at_ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if redis.call('XLEN', KEYS[2]) + audit_len >= tonumber(ARGV[5]) then
  redis.call('XADD', KEYS[1], '*', 'eid', ARGV[8], 'at_ms', at_ms, 'actor', ARGV[9],
    'action', ARGV[10], 'target', ARGV[11], 'detail', ARGV[12])
  return {'queue_full'}
end
local id = redis.call('XADD', KEYS[1], '*', 'eid', ARGV[8], 'at_ms', at_ms, 'actor', ARGV[9],
  'action', ARGV[10], 'target', ARGV[11], 'detail', ARGV[12], 'q', ARGV[#ARGV], 'm', ARGV[7])
redis.call('HSET', KEYS[3], unpack(ARGV, 14, 13 + n_status))
redis.call('PEXPIRE', KEYS[3], ARGV[6])
return {'ok', id}
"""
)

# After the audit drain committed a batch of audit rows in PostgreSQL: hand the messages they carry to the node's
# streams and acknowledge + delete the audit entries, as one atomic step (a drain that dies before it redoes the
# batch: the insert is idempotent, and this step runs once). Each entry is acknowledged on its own and its message
# handed over only if this XACK acknowledged it (returned 1): a drain that stalled past the claim time while another
# claimed and handed over the same entries hands nothing over again, and a resent script (redis-py retries once
# after a timeout) changes nothing. A message is also handed over at most once per event ID (SET NX of
# ``aiv:ho:<audit stream>:<eid>`` for the status TTL): two audit entries of one send (a resent script) deliver it once.
# KEYS: 1 audit stream, 2.. the message streams and dedupe keys named by the entries. ARGV: 1 group, 2 dedupe TTL
# ms, then per entry: its ID, the KEYS index of its message stream (0: no message), the KEYS index of its dedupe
# key (0: none), its payload. Returns how many messages were handed over.
# The message streams are not trimmed here: the send script bounded what waits (audit + stream <= queue_max).
_HANDOVER_LUA = """
local handed = 0
local i = 3
while i + 3 <= #ARGV do
  local q = tonumber(ARGV[i + 1])
  local d = tonumber(ARGV[i + 2])
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    if q > 0 and (d == 0 or redis.call('SET', KEYS[d], '1', 'NX', 'PX', ARGV[2])) then
      redis.call('XADD', KEYS[q], '*', 'm', ARGV[i + 3])
      handed = handed + 1
    end
  end
  i = i + 4
end
return handed
"""


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
    def __init__(self, url: str, *, timeout_s: float = 5.0, max_connections: int = 16) -> None:
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
        self._bucket = self._client.register_script(_TOKEN_BUCKET_LUA)
        self._enqueue = self._client.register_script(_ENQUEUE_LUA)
        self._settle = self._client.register_script(_SETTLE_LUA)
        self._send = self._client.register_script(_SEND_LUA)
        self._handover = self._client.register_script(_HANDOVER_LUA)
        self._begin = self._client.register_script(_BEGIN_LUA)
        self._runner = BlockingRunner(
            "redis",
            max_connections,
            (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
            2 * timeout_s,
            errors=(redis.exceptions.RedisError,),
        )

    async def _call(self, fn: Callable[[], T]) -> T:
        return await self._runner.run(fn)

    async def aclose(self) -> None:
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
        keys = [f"{KEY_PREFIX}q:{stream}", f"{KEY_PREFIX}st:{status_key}"]
        args: list[Any] = [group, entry_id, max(1, int(ttl_s * 1000)), *_pairs(status)]
        await self._call(lambda: self._settle(keys=keys, args=args))

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
        to ``audit_stream`` and write the status record: one atomic script, one round trip (see ``_SEND_LUA``).
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
        raw: Any = await self._call(lambda: self._send(keys=keys, args=args))
        result = _text(raw[0])
        if result == "ok":
            return SendOutcome("ok", entry_id=_text(raw[1]))
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
        step (``_HANDOVER_LUA``). How many messages were handed over."""
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
        """Compare-and-set the status record before ``consumer`` hands its entry to a node (see ``_BEGIN_LUA``):
        (verdict, detail) with verdict ``mine``, ``again``, ``other``, ``unknown`` (no record of an entry
        ``delivered`` before) or ``settled``. ``ttl_s`` is kept for the callers; a ``handing`` record has none."""
        key = f"{KEY_PREFIX}st:{status_key}"
        args: list[str | int] = [consumer, max(1, int(ttl_s * 1000)), "1" if delivered else "0"]
        raw: Any = await self._call(lambda: self._begin(keys=[key], args=args))
        return _text(raw[0]), _text(raw[1])

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


def _pairs(fields: Mapping[str, str]) -> list[str]:
    if not fields:
        raise StoreError("a status record needs at least one field")
    return [item for kv in fields.items() for item in kv]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field_name(value: bytes | str) -> str:
    """A field name of an entry anyone with access to Redis may have written: never fails."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
