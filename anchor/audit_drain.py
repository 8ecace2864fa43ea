"""Audit records kept in Redis, drained to PostgreSQL's ``audit_log`` in batches; messages handed to the node only
after their audit row committed.

``POST /v1/messages`` writes its audit record to the Redis stream ``aiv:audit:<server>:<database>`` (one per
PostgreSQL database, the server named by its system identifier: the gateways of one anchor share it, anchors that
share a Redis but not a database do not) in the
same atomic script that takes its rate-limit tokens and writes the message's status record
(:meth:`anchor.stores.redis_store.RedisStore.send_audited`); the record carries the message. This task moves the
records to PostgreSQL and, once a batch's transaction committed, appends the messages they carry to the node's
stream and acknowledges the records in one atomic Redis step (:meth:`RedisStore.audit_handover`). So a message
takes effect only after its audit row is durable in PostgreSQL, whatever Redis's durability (``appendfsync
everysec``, no append-only file, an asynchronous replica promoted): losing Redis's last second can lose an
accepted message (its status then unknown), never an audit row of a message the node sent. The 202 stays fast;
delivery waits for the drain (a batch every few milliseconds under load).

Every gateway sharing the Redis runs one drain, as a consumer of the one group ``audit-drain``, so each record is
inserted by one of them. Delivery is at least once: a record is acknowledged (and deleted from the stream) only
after the transaction that inserted it committed, and the insert is idempotent by the record's event ID (made at
the gateway), so a drain that dies between the two leaves a record another drain (or its own next start)
inserts again without a duplicate row, and hands its message over once (the hand-over and the acknowledgement
are one step). A drain's unacknowledged records are claimed by any other drain after ``claim_idle_s``. A message is
handed over only by the drain whose acknowledgement of its record took effect (a drain that stalled past
``claim_idle_s`` while another took its records over hands nothing over when it resumes), and at most once per
event ID (two records of one send, a resent script, deliver it once).

Hostile or broken entries (anyone with access to Redis can write one) cost nothing but themselves: every field is
checked before the insert, a batch PostgreSQL refuses is retried record by record, and a record still refused for
what it holds (a data or constraint error) goes to the bounded dead-letter stream
``aiv:audit:<server>:<database>:dead`` (logged, counted; its message is never sent). A refusal for the server's own
state (a missing table, a permission) moves nothing: the records wait and are retried. No error ends the drain.

While PostgreSQL is down the records — and the messages they carry — wait in Redis (bounded by ``[anchor]
audit_backlog_max`` and ``queue_max``; beyond them ``POST /v1/messages`` answers 503) and the drain retries every
``RETRY_S``. Requests are accepted during an outage only while the sending key's state is cached in Redis (``[anchor]
key_cache_ttl_s``, 10 s by default, not refreshed while PostgreSQL is down): after that they answer 503
``store_unavailable`` until PostgreSQL is back.
"""

from __future__ import annotations

import json
import logging
import os
import secrets

import psycopg
import trio

from anchor.queue import STATUS_TTL_S
from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.postgres import MAX_TEXT, PostgresStore, refused_for_content
from anchor.stores.redis_store import RedisStore, StreamEntry

log = logging.getLogger("village.anchor.audit")

GROUP = "audit-drain"
BATCH = 256  # records per transaction
RETRY_S = 1.0
BLOCK_MS = 1000
PRUNE_IDLE_MS = 24 * 3600 * 1000  # consumers (past drain runs) idle this long and holding nothing are forgotten
LINGER_S = 0.05  # after a part batch, wait this long for more (fewer, larger transactions under load)


def audit_stream(system_identifier: str, database: str) -> str:
    """The audit stream's name for a PostgreSQL database: the Redis key is ``aiv:audit:<server>:<database>``, the
    server named by its system identifier (:meth:`PostgresStore.system_identifier`), so the gateways of one anchor
    (one database) share it and anchors on different servers sharing one Redis never mix their records, even with
    the same database name."""
    return f"audit:{system_identifier}:{database}"


async def audit_stream_of(postgres: PostgresStore) -> str:
    """:func:`audit_stream` of the database behind ``postgres`` (StoreUnavailable while it is down)."""
    return audit_stream(await postgres.system_identifier(), postgres.database)


def consumer_name(peer_id_hex: str) -> str:
    """This process's consumer in the group: unique per run (a restarted drain's records are claimed)."""
    return f"{peer_id_hex[:16]}-{os.getpid()}-{secrets.token_hex(3)}"


AT_MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: PostgreSQL's timestamps hold it, Python's datetime too
DETAIL_MAX_BYTES = 65_536
STREAM_NAME_MAX = 256
DEAD_MAX = 10_000  # entries kept in the dead-letter stream (approximately: the oldest are trimmed)

Row = tuple[str, int, str, str, str, str]


EID_MAX_BYTES = 256  # a gateway's event IDs are "msg:" and a UUID (40 bytes)


def _text_field(fields: dict[str, bytes], name: str, max_bytes: int = MAX_TEXT) -> str | None:
    """A text field bounded in UTF-8 BYTES (PostgreSQL's index rows are bounded in bytes: 1024 characters of 4
    bytes each would pass a bound in characters and be refused by the server for good)."""
    raw = fields.get(name)
    if raw is None or not 1 <= len(raw) <= max_bytes:
        return None
    try:
        value = raw.decode()
    except UnicodeDecodeError:
        return None
    return value if "\x00" not in value else None


def _no_nul(value: object) -> bool:
    """No NUL in any string of a parsed JSON value (PostgreSQL's jsonb refuses \\u0000)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _record(entry: StreamEntry) -> Row | None:
    """The audit row of a stream entry, or None when it is not one a gateway writes: every field checked so that
    PostgreSQL accepts the row (texts within MAX_TEXT bytes, the event ID within EID_MAX_BYTES, without NUL, a
    time between 1970 and 9999, a JSON object without NUL as detail)."""
    f = entry.fields
    eid = _text_field(f, "eid", EID_MAX_BYTES)
    actor, action, target = (_text_field(f, name) for name in ("actor", "action", "target"))
    if eid is None or actor is None or action is None or target is None:
        return None
    at_raw, detail_raw = f.get("at_ms", b""), f.get("detail", b"")
    if not (1 <= len(at_raw) <= 16 and at_raw.isdigit()) or len(detail_raw) > DETAIL_MAX_BYTES:
        return None
    at_ms = int(at_raw)
    if at_ms > AT_MS_MAX:
        return None
    try:
        detail = detail_raw.decode()
        parsed = json.loads(detail)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(parsed, dict) or not _no_nul(parsed):
        return None
    return (eid, at_ms, actor, action, target, detail)


def _refused_for_good(exc: StoreError) -> bool:
    """Whether PostgreSQL refused a row for what it holds (a data or constraint error, or the store's own check),
    rather than for its own state (a missing table, permissions, ...): only such a row is dead-lettered."""
    cause = exc.__cause__
    return cause is None or (isinstance(cause, psycopg.Error) and refused_for_content(cause))


def _handover(entry: StreamEntry) -> tuple[str, bytes] | None:
    """The message an audit entry carries for the node (its stream's name, its payload), if any."""
    target, payload = entry.fields.get("q"), entry.fields.get("m")
    if target is None or payload is None:
        return None
    name = target.decode(errors="replace")
    if not (name.startswith("messages:") and len(name) <= STREAM_NAME_MAX):
        return None  # written by no gateway: the record is kept, no message goes anywhere else
    return name, payload


class AuditDrain:
    def __init__(
        self,
        redis: RedisStore,
        postgres: PostgresStore,
        consumer: str,
        *,
        claim_idle_s: float = 30.0,
        block_ms: int = BLOCK_MS,
        batch: int = BATCH,
        linger_s: float = LINGER_S,
        dead_max: int = DEAD_MAX,
        stream: str = "",
        handover_dedupe_ttl_s: float = STATUS_TTL_S,
    ) -> None:
        self.redis = redis
        self.postgres = postgres
        self.stream = stream  # audit_stream_of(postgres); "": named once PostgreSQL answers
        self.consumer = consumer
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.block_ms = block_ms
        self.batch = batch
        self.linger_s = linger_s
        self.dead_max = dead_max
        self.handover_dedupe_ttl_s = handover_dedupe_ttl_s  # a message is handed over once per event ID this long
        self.counters: dict[str, int] = {
            "drained": 0,
            "duplicates": 0,
            "malformed": 0,  # not written by a gateway: moved to the dead-letter stream
            "refused": 0,  # PostgreSQL refused the row: moved to the dead-letter stream
            "handed_over": 0,  # messages given to the node's stream once their audit row committed
            "batches": 0,
            "errors": 0,  # unexpected failures of a drain step (logged; retried after RETRY_S)
        }

    async def drain_once(self, *, block_ms: int = 0) -> int:
        """One batch: claim or read up to ``batch`` records, insert them, then hand the messages they carry to
        the node's streams and acknowledge them in one atomic Redis step; how many were read (0: nothing
        waiting). A record PostgreSQL refuses (or not written by a gateway) goes to the dead-letter stream
        ``<stream>:dead``, its message to no one. StoreUnavailable propagates (nothing acknowledged then)."""
        if not self.stream:
            self.stream = await audit_stream_of(self.postgres)
        entries = await self.redis.audit_entries(
            self.stream, GROUP, self.consumer, count=self.batch, block_ms=block_ms, claim_idle_ms=self.claim_idle_ms
        )
        if not entries:
            return 0
        good: list[tuple[StreamEntry, Row]] = []
        dead: list[StreamEntry] = []
        for entry in entries:
            row = _record(entry)
            if row is None:
                self.counters["malformed"] += 1
                log.warning(
                    "audit drain: entry %s is not a gateway's audit record; moved to %s:dead", entry.id, self.stream
                )
                dead.append(entry)
            else:
                good.append((entry, row))
        try:
            new = await self.postgres.audit_drained([row for _entry, row in good])
        except StoreUnavailable:
            raise
        except StoreError as exc:  # one row PostgreSQL refuses must not hold back the others: one by one
            log.warning("audit drain: PostgreSQL refused a batch (%s); inserting its records one by one", exc)
            new, kept = 0, []
            for entry, row in good:
                try:
                    new += await self.postgres.audit_drained([row])
                except StoreUnavailable:
                    raise
                except StoreError as one:
                    if not _refused_for_good(one):  # the server's trouble, not the row's: retried later, kept
                        raise
                    self.counters["refused"] += 1
                    log.warning(
                        "audit drain: PostgreSQL refused entry %s (%s); moved to %s:dead", entry.id, one, self.stream
                    )
                    dead.append(entry)
                else:
                    kept.append((entry, row))
            good = kept
        await self.redis.audit_dead_letter(self.stream, GROUP, dead, maxlen=self.dead_max)
        handed = await self.redis.audit_handover(
            self.stream,
            GROUP,
            [(entry.id, row[0], _handover(entry)) for entry, row in good],
            dedupe_ttl_s=self.handover_dedupe_ttl_s,
        )
        self.counters["drained"] += new
        self.counters["duplicates"] += len(good) - new
        self.counters["handed_over"] += handed
        self.counters["batches"] += 1
        return len(entries)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain until cancelled; store outages are waited out, and no error ends it (the gateway's nursery, and
        so the node, must not stop because of what some entry holds)."""
        task_status.started()
        warned = False
        while True:
            try:
                if not self.stream:
                    self.stream = await audit_stream_of(self.postgres)
                await self.redis.audit_ensure_group(self.stream, GROUP)
                await self.redis.audit_prune_consumers(self.stream, GROUP, idle_ms=PRUNE_IDLE_MS, keep=self.consumer)
                if not warned:
                    warned = True
                    if await self.redis.append_only() is False:
                        log.warning(
                            "Redis runs without an append-only file (appendonly no): audit records and queued "
                            "messages waiting there are lost if it restarts; set appendonly yes"
                        )
                while True:
                    if 0 < await self.drain_once(block_ms=self.block_ms) < self.batch:
                        await trio.sleep(self.linger_s)  # let a busy gateway's records gather into one batch
            except StoreError as exc:
                if not isinstance(exc, StoreUnavailable):  # that one the store logs, once per outage
                    log.warning("audit drain: %s; retrying in %g s", exc, RETRY_S)
            except Exception:  # a bug, or an entry nobody foresaw: logged, counted, retried; never fatal
                self.counters["errors"] += 1
                log.exception("audit drain: unexpected error; retrying in %g s", RETRY_S)
            await trio.sleep(RETRY_S)

    async def flush(self, *, timeout_s: float) -> bool:
        """Drain what is waiting now (at stop); True if the stream was emptied within ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            try:
                while await self.drain_once() > 0:
                    pass
                return True
            except StoreError:
                return False
            except Exception:  # at stop: what is left waits for the next start
                log.exception("audit drain: flush stopped")
                return False
        return False
