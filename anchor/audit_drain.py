"""Audit records kept in Redis, drained to PostgreSQL's ``audit_log`` in batches.

``POST /v1/messages`` writes its audit record to the Redis stream ``aiv:audit:<database>`` (one per PostgreSQL
database name: the gateways of one anchor share it, anchors that share a Redis but not a database do not) in the
same atomic script that takes its rate-limit tokens and queues the message
(:meth:`anchor.stores.redis_store.RedisStore.send_audited`): the record exists, in Redis's append-only file, before
the message can reach the node, and no message exists without it. This task moves the records to PostgreSQL: every
gateway sharing the Redis runs one, as a consumer of the one group ``audit-drain``, so each record is inserted by
one of them. Delivery is at least once: a record is acknowledged (and deleted from the stream) only after the
transaction that inserted it committed, and the insert is idempotent by the record's event ID (made at the gateway),
so a drain that dies between the two leaves a record another drain (or its own next start) inserts again without a
duplicate row. A drain's unacknowledged records are claimed by any other drain after ``claim_idle_s``.

While PostgreSQL is down the records wait in Redis (bounded by ``[anchor] audit_backlog_max``; beyond it
``POST /v1/messages`` answers 503) and the drain retries every ``RETRY_S``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets

import trio

from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.postgres import PostgresStore
from anchor.stores.redis_store import RedisStore, StreamEntry

log = logging.getLogger("village.anchor.audit")

GROUP = "audit-drain"
BATCH = 256  # records per transaction
RETRY_S = 1.0
BLOCK_MS = 1000
PRUNE_IDLE_MS = 24 * 3600 * 1000  # consumers (past drain runs) idle this long and holding nothing are forgotten
LINGER_S = 0.05  # after a part batch, wait this long for more (fewer, larger transactions under load)


def audit_stream(database: str) -> str:
    """The audit stream's name for a PostgreSQL database (the Redis key is ``aiv:audit:<database>``)."""
    return f"audit:{database}"


def consumer_name(peer_id_hex: str) -> str:
    """This process's consumer in the group: unique per run (a restarted drain's records are claimed)."""
    return f"{peer_id_hex[:16]}-{os.getpid()}-{secrets.token_hex(3)}"


def _record(entry: StreamEntry) -> tuple[str, int, str, str, str, str] | None:
    f = entry.fields
    try:
        row = (
            f["eid"].decode(),
            int(f["at_ms"]),
            f["actor"].decode(),
            f["action"].decode(),
            f["target"].decode(),
            f["detail"].decode(),
        )
        if not isinstance(json.loads(row[5]), dict):
            return None
    except (KeyError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return row


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
    ) -> None:
        self.redis = redis
        self.postgres = postgres
        self.stream = audit_stream(postgres.database)
        self.consumer = consumer
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.block_ms = block_ms
        self.batch = batch
        self.linger_s = linger_s
        self.counters: dict[str, int] = {"drained": 0, "duplicates": 0, "malformed": 0, "batches": 0}

    async def drain_once(self, *, block_ms: int = 0) -> int:
        """One batch: claim or read up to ``batch`` records, insert them, acknowledge them; how many were read
        (0: nothing waiting). StoreUnavailable / StoreError propagate (nothing acknowledged then)."""
        entries = await self.redis.audit_entries(
            self.stream, GROUP, self.consumer, count=self.batch, block_ms=block_ms, claim_idle_ms=self.claim_idle_ms
        )
        if not entries:
            return 0
        rows = []
        for entry in entries:
            row = _record(entry)
            if row is None:  # not written by a gateway: kept out of the log, said once in ours
                self.counters["malformed"] += 1
                log.warning("audit drain: dropped malformed entry %s", entry.id)
            else:
                rows.append(row)
        new = await self.postgres.audit_drained(rows)
        await self.redis.audit_ack(self.stream, GROUP, [e.id for e in entries])
        self.counters["drained"] += new
        self.counters["duplicates"] += len(rows) - new
        self.counters["batches"] += 1
        return len(entries)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain until cancelled; store outages are waited out."""
        task_status.started()
        warned = False
        while True:
            try:
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
        return False
