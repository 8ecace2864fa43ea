"""The queue between the gateway and the node: a Redis Stream per node, read by one consumer group.

``POST /v1/messages`` checks the message (the node's own rules: peer, length, queue limits), then
:meth:`MessageQueue.put_audited` writes its audit record, carrying the message, to the audit stream
(:mod:`anchor.audit_drain`) together with a status record (one atomic Redis script, which on the common path also
takes the rate-limit tokens) under an ID made at the gateway, and answers 202 with that ID. The audit drain
appends the message to this stream only after its audit row committed in PostgreSQL, so everything read here is
audited durably. :meth:`MessageQueue.run` (a task in ``run_anchor``'s nursery) reads the stream as consumer
``node`` of group ``node`` and hands each entry to the node — ``Node.send_private(..., message_id=ID)`` (so the
client's ID is the mesh message ID, and the outbox, on disk before the call returns, refuses a second copy) or
``Node.broadcast`` — and only then updates the status record, acknowledges and deletes the entry (again one
atomic script).

Crash safety: an entry read but not acknowledged stays in the group's pending list; at every (re)start and after
every store error the consumer first re-reads its pending entries. A private message found there is in the
outbox already or not at all, so it is accepted exactly once. A broadcast has no outbox: its status record says
whether it went out, and only a crash between ``broadcast`` and the status update (microseconds, no I/O in
between but the Redis call) could send it twice.

A message the node refuses when it reads it (its rules changed meanwhile, e.g. a full pending queue) is settled
as ``failed`` with the reason; ``GET /v1/messages/{id}`` shows it. The backlog is bounded (``anchor.queue_max``):
more is refused with 503 + Retry-After.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from anchor.gateway.errors import AuditBacklogFull, QueueFull
from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.redis_store import AuditRecord, RedisStore, SendOutcome, StreamEntry
from node.errors import MeshError
from node.outbox import OutboxError

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("village.anchor.queue")

GROUP = "node"
CONSUMER = "node"  # one consumer: the node of this anchor (stable across restarts, so its pending list is ours)
STATUS_TTL_S = 7 * 24 * 3600.0  # how long GET /v1/messages/{id} can find a message
RETRY_S = 1.0  # pause after a store error before the consumer tries again
READ_COUNT = 16


class _NodeNotRunning(Exception):
    """The node stopped under the consumer: the entry stays in the stream for its next start."""


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: str
    to: str | None  # recipient peer ID (hex); None: a public broadcast
    text: str
    key_id: str  # the API key that sent it (only it, or an admin, may read its status)

    def payload(self) -> bytes:
        return json.dumps({"id": self.id, "to": self.to, "text": self.text, "key": self.key_id}).encode()

    @classmethod
    def from_payload(cls, raw: bytes) -> QueuedMessage:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        to, text, mid, key = data.get("to"), data.get("text"), data.get("id"), data.get("key")
        if not (isinstance(mid, str) and isinstance(text, str) and isinstance(key, str)):
            raise ValueError("id, text and key must be strings")
        if to is not None and not isinstance(to, str):
            raise ValueError("to must be a string or null")
        return cls(mid, to, text, key)


def new_message_id() -> str:
    """The same form as the mesh's own IDs (an upper-case UUID4), from the OS's random source."""
    return str(uuid.uuid4()).upper()


class MessageQueue:
    def __init__(
        self,
        redis: RedisStore,
        node: Node,
        *,
        max_backlog: int,
        block_ms: int,
        max_audit_backlog: int = 100_000,
        audit_stream: str = "",
    ) -> None:
        self.redis = redis
        self.node = node
        self.max_backlog = max_backlog
        self.max_audit_backlog = max_audit_backlog
        self.audit_stream = audit_stream  # anchor.audit_drain.audit_stream_of(<PostgreSQL>); "": not known yet
        self.block_ms = block_ms
        self.stream = f"messages:{node.identity.peer_id_hex}"
        self.counters: dict[str, int] = {"accepted": 0, "failed": 0, "duplicates": 0, "malformed": 0}

    def _status_key(self, message_id: str) -> str:
        return f"msg:{self.node.identity.peer_id_hex}:{message_id}"

    # ------------------------------------------------------------------------------------------ gateway side
    async def put(self, message: QueuedMessage) -> None:
        """Queue a checked message; QueueFull when the backlog is full, StoreUnavailable when Redis is down."""
        status = {"state": "queued", "to": message.to or "", "key": message.key_id, "detail": "", "mesh_id": ""}
        entry = await self.redis.queue_put(
            self.stream,
            message.payload(),
            self._status_key(message.id),
            status,
            max_backlog=self.max_backlog,
            ttl_s=STATUS_TTL_S,
        )
        if entry is None:
            raise QueueFull(f"{self.max_backlog} messages already wait for the node (anchor.queue_max); retry later")

    async def put_audited(
        self,
        message: QueuedMessage,
        record: AuditRecord,
        *,
        key_cache: str | None = None,
        ip_buckets: tuple[tuple[str, float, int], ...] = (),
        key_bucket: tuple[str, float, int] | None = None,
    ) -> SendOutcome:
        """Audit and queue a checked message in one atomic Redis step (:meth:`RedisStore.send_audited`): the
        audit record, carrying the message, goes to the audit stream; :mod:`anchor.audit_drain` hands the message
        to this queue's stream once the record committed in PostgreSQL. With ``key_cache`` / the buckets the same
        step checks the key's cached state and takes the rate-limit tokens; the outcome says if it did not
        (``miss``, ``ip``, ``key``). QueueFull when the backlog is full (messages waiting for their audit row or
        for the node; audited, not queued), AuditBacklogFull when too many audit records wait for PostgreSQL (the
        tokens are spent, nothing written), StoreUnavailable when Redis is down."""
        if not self.audit_stream:  # named after the PostgreSQL server, which has not answered since the start
            raise StoreUnavailable("postgres", "not reached since the gateway started")
        status = {"state": "queued", "to": message.to or "", "key": message.key_id, "detail": "", "mesh_id": ""}
        outcome = await self.redis.send_audited(
            audit_stream=self.audit_stream,
            stream=self.stream,
            status_key=self._status_key(message.id),
            status=status,
            payload=message.payload(),
            record=record,
            max_audit_backlog=self.max_audit_backlog,
            max_backlog=self.max_backlog,
            ttl_s=STATUS_TTL_S,
            key_cache=key_cache,
            ip_buckets=ip_buckets,
            key_bucket=key_bucket,
        )
        if outcome.result == "queue_full":
            raise QueueFull(f"{self.max_backlog} messages already wait for the node (anchor.queue_max); retry later")
        if outcome.result == "audit_full":
            raise AuditBacklogFull(
                f"{self.max_audit_backlog} audit records wait for PostgreSQL (anchor.audit_backlog_max); retry later"
            )
        return outcome

    async def status(self, message_id: str) -> dict[str, Any] | None:
        """What became of a message: queued, pending (in the outbox, awaiting the recipient's receipt),
        delivered, failed (with the reason) or sent (a broadcast); None if unknown or expired."""
        record = await self.redis.status_get(self._status_key(message_id))
        if record is None:
            return None
        state, detail = record.get("state", "queued"), record.get("detail", "")
        to = record.get("to") or None
        if state == "accepted":
            state = "sent" if to is None else self._private_state(message_id)
            if state == "failed":
                msg = self.node.outgoing.get(message_id)
                detail = msg.detail if msg is not None else detail
        return {
            "id": message_id,
            "to": to,
            "state": state,
            "detail": detail,
            "mesh_id": record.get("mesh_id") or None,
            "key_id": record.get("key", ""),
        }

    def _private_state(self, message_id: str) -> str:
        msg = self.node.outgoing.get(message_id)
        if msg is not None:
            return msg.state
        if self.node.outbox is not None:
            with_state = self.node.outbox.get(message_id)
            if with_state is not None:
                return with_state.state
        return "pending"

    # ------------------------------------------------------------------------------------------ node side
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hand queued messages to the node until cancelled; store errors are waited out."""
        task_status.started()
        while True:
            try:
                await self.redis.stream_ensure_group(self.stream, GROUP)
                await self._drain_pending()
                while True:
                    entries = await self.redis.stream_read(
                        self.stream, GROUP, CONSUMER, count=READ_COUNT, block_ms=self.block_ms
                    )
                    for entry in entries:
                        await self._handle(entry, recovered=False)
            except (StoreError, OutboxError, _NodeNotRunning) as exc:
                if not isinstance(exc, StoreUnavailable):  # that one the store logs, once per outage
                    log.warning("message queue: %s; retrying in %g s", exc or "the node is not running", RETRY_S)
            await trio.sleep(RETRY_S)

    async def _drain_pending(self) -> None:
        after = "0"
        while True:
            entries = await self.redis.stream_read(
                self.stream, GROUP, CONSUMER, count=READ_COUNT, pending=True, after=after
            )
            if not entries:
                return
            for entry in entries:
                await self._handle(entry, recovered=True)
                after = entry.id

    async def _handle(self, entry: StreamEntry, *, recovered: bool) -> None:
        """Hand one entry to the node and settle it. Only a ``recovered`` entry (from the pending list: read
        before a crash or a store error) can have been handled already, so only its status record is read first;
        a new one (read with ``>``) is delivered to this group for the first time."""
        if self.node.core is None:
            raise _NodeNotRunning()
        try:
            message = QueuedMessage.from_payload(entry.fields.get("m", b""))
        except ValueError as exc:
            self.counters["malformed"] += 1
            log.warning("message queue: dropped malformed entry %s: %s", entry.id, exc)
            await self.redis.stream_ack_delete(self.stream, GROUP, [entry.id])
            return
        key = self._status_key(message.id)
        record = await self.redis.status_get(key) if recovered else None
        if record is not None and record.get("state") not in (None, "queued"):
            self.counters["duplicates"] += 1  # handled before a crash, not acknowledged: just acknowledge now
            await self.redis.queue_settle(
                self.stream, GROUP, entry.id, key, {"state": record["state"]}, ttl_s=STATUS_TTL_S
            )
            return
        status: dict[str, str]
        try:
            if message.to is None:
                mesh_id = self.node.broadcast(message.text)
            else:
                mesh_id = self.node.send_private(message.to, message.text, message_id=message.id)
            status = {"state": "accepted", "mesh_id": mesh_id, "detail": ""}
            self.counters["accepted"] += 1
        except MeshError as exc:
            status = {"state": "failed", "detail": str(exc)}
            self.counters["failed"] += 1
            log.warning("message queue: message %s refused by the node: %s", message.id, exc)
        await self.redis.queue_settle(self.stream, GROUP, entry.id, key, status, ttl_s=STATUS_TTL_S)
