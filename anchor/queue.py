"""The queue between the gateway and the node: a Redis Stream per node, read by one consumer group.

``POST /v1/messages`` checks the message (the node's own rules: peer, length, queue limits), then
:meth:`MessageQueue.put_audited` writes its audit record, carrying the message, to the audit stream
(:mod:`anchor.audit_drain`) together with a status record (one atomic Redis script, which on the common path also
takes the rate-limit tokens) under an ID made at the gateway, and answers 202 with that ID. The audit drain
appends the message to this stream only after its audit row committed in PostgreSQL, so everything read here is
audited durably. :meth:`MessageQueue.run` (a task in ``run_anchor``'s nursery) reads the stream as consumer
``node`` of group ``node`` in batches of up to ``READ_COUNT`` and hands each entry to the node —
``Node.send_private(..., message_id=ID)`` (so the client's ID is the mesh message ID, and the outbox, on disk before
the call returns, refuses a second copy) or ``Node.broadcast`` — and only then updates the status records,
acknowledges and deletes the batch's entries (one atomic script per batch, not per message).

Crash safety: an entry read but not acknowledged stays in the group's pending list; at every (re)start and after
every store error the consumer first re-reads its pending entries. A private message found there is in the
outbox already or not at all, so it is accepted exactly once. A broadcast has no outbox: its status record says
whether it went out. When the settle of a batch fails (Redis down, slow, or its answer lost) the process remembers
what it handed over, and settles those entries when Redis answers again without handing them over a second time
(a settle that took effect although its answer was lost leaves nothing pending, and nothing is sent again either).
A stop requested mid-batch ends the hand-over at once (the node's drain sends LEAVE and closes its links: a
broadcast handed over after that would be settled and never sent); the rest of the batch stays pending for the
next start. A stop waits for the settle of what the node took (shielded from the cancellation, bounded by the
store's timeout). That memory is the process's own, so two things can send a broadcast of a batch a second time at the
next start (at most ``READ_COUNT`` broadcasts; before batching, one): a crash of the process (killed, power lost)
between handing the batch to the node and that batch's settle, or a stop (a restart, SIGTERM) while Redis cannot
be reached, whose shielded settle then fails. The crash window is the batch's hand-over plus one Redis round trip:
a broadcast costs its signature, a private message one fsync of the outbox (milliseconds each; a batch of 64
private messages took ~0.5 s on the review's disk), and the consumer lets the rest of the node run between two
hand-overs, so under load the window is longer still. The queue delivers at least once, never loses an accepted
message. Private messages are never sent twice.

Replicas (``[anchor] cluster``): several gateways of one anchor, each its own node with its own identity and data
dir, share one stream (``messages:{<cluster>}``; the braces are a Redis Cluster hash tag, so a stream and its
status records would live on one shard — but Redis Cluster is not supported yet: the script of ``POST
/v1/messages`` also touches the audit stream, the key cache and the rate-limit buckets, in other slots; Redis
Sentinel is the path to failover) and one consumer group in which each replica is a consumer named by its peer ID
(stable across its restarts). Before a replica hands an entry to its node it sets the status record from
``queued`` to ``handing`` by itself (a compare-and-set): of two replicas holding the same entry, one hands it over.
A replica that stops or hangs keeps what it read in its pending list; after ``anchor.claim_idle_s`` another
replica claims (XCLAIM) those entries whose record still says ``queued``. An entry whose record says ``handing``
by the stopped replica is in doubt (its node may hold it in its outbox on its disk) and is left to it: it resolves
it when it starts again with its data dir, exactly as a lone anchor does after a crash. A replica stopped mid-batch
sets the records it began and did not hand over back to ``queued`` (``RedisStore.queue_release_many``), so another
replica claims those after ``anchor.claim_idle_s``, not after its restart. A ``handing`` record has no
TTL until it is settled; should an entry delivered before have no status record at all (evicted: the anchor refuses
a Redis whose ``maxmemory-policy`` is not ``noeviction``; or deleted), it is settled as ``failed`` ("status lost;
not sent again"), never handed over a second time.

A message the node refuses when it reads it (its rules changed meanwhile, e.g. a full pending queue) is settled
as ``failed`` with the reason; ``GET /v1/messages/{id}`` shows it. The backlog is bounded (``anchor.queue_max``):
more is refused with 503 + Retry-After.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
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
CONSUMER = "node"  # a lone anchor's consumer (stable across restarts, so its pending list is ours); replicas: peer ID
STATUS_TTL_S = 7 * 24 * 3600.0  # how long GET /v1/messages/{id} can find a message
RETRY_S = 1.0  # pause after a store error before the consumer tries again
READ_COUNT = 64  # entries read, handed over and settled per batch (one settle script each, see the note above)
STATUS_LOST = "status lost; not sent again (its hand-over may have begun on a replica that did not come back)"


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
        cluster: str = "",
        claim_idle_s: float = 30.0,
    ) -> None:
        self.redis = redis
        self.node = node
        self.max_backlog = max_backlog
        self.max_audit_backlog = max_audit_backlog
        self.audit_stream = audit_stream  # anchor.audit_drain.audit_stream_of(<PostgreSQL>); "": not known yet
        self.block_ms = block_ms
        self.cluster = cluster
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        scope = f"{{{cluster}}}" if cluster else node.identity.peer_id_hex
        self.stream = f"messages:{scope}"
        self._status_prefix = f"msg:{scope}:"
        self.consumer = node.identity.peer_id_hex if cluster else CONSUMER
        self.counters: dict[str, int] = {
            "accepted": 0,
            "failed": 0,
            "duplicates": 0,
            "malformed": 0,
            "claimed": 0,  # entries taken over from a replica that stopped or hung
            "in_doubt": 0,  # entries another replica began to hand over (left to it)
        }
        # Entries handed to the node whose settle has not taken effect yet (entry ID -> status key, status): at
        # most the entries of this consumer's pending list; emptied as their settles succeed.
        self._unsettled: dict[str, tuple[str, dict[str, str]]] = {}

    def _status_key(self, message_id: str) -> str:
        return self._status_prefix + message_id

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
        by = record.get("by", "")
        if state == "handing":  # being handed to a node right now
            state = "queued"
        elif state == "accepted" and to is not None and by not in ("", self.consumer):
            # Another replica's node holds it: its receipt is known there only.
            state, detail = "pending", f"accepted by anchor replica {by}; its delivery receipt is known there"
        elif state == "accepted":
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
                next_claim = trio.current_time()
                while True:
                    if self.cluster and trio.current_time() >= next_claim:
                        await self._claim_stale()
                        next_claim = trio.current_time() + self.claim_idle_ms / 2000.0
                    entries = await self.redis.stream_read(
                        self.stream, GROUP, self.consumer, count=READ_COUNT, block_ms=self.block_ms
                    )
                    await self._handle_batch(entries, recovered=False)
            except (StoreError, OutboxError, _NodeNotRunning) as exc:
                if not isinstance(exc, StoreUnavailable):  # that one the store logs, once per outage
                    log.warning("message queue: %s; retrying in %g s", exc or "the node is not running", RETRY_S)
            await trio.sleep(RETRY_S)

    async def drain_backlog(self) -> int:
        """Hand over whatever waits in this stream (pending or new) and return how many entries were handled: what
        a lone anchor left in its own stream (``messages:<peer ID>``) when it joined a cluster, whose replicas read
        the cluster's stream only. Nothing is written when the stream is empty or absent."""
        if await self.redis.stream_length(self.stream) == 0:
            return 0
        await self.redis.stream_ensure_group(self.stream, GROUP)
        handled = 0
        pending = True
        while True:
            entries = await self.redis.stream_read(
                self.stream, GROUP, self.consumer, count=READ_COUNT, pending=pending, after="0"
            )
            if not entries:
                if not pending:
                    return handled
                pending = False
                continue
            try:
                await self._handle_batch(entries, recovered=True)
            except _NodeNotRunning:
                return handled  # the node stopped: the rest waits for its next start
            handled += len(entries)

    async def _drain_pending(self) -> None:
        """Settle or hand over this consumer's pending entries (read before a crash or a store error)."""
        after = "0"
        while True:
            entries = await self.redis.stream_read(
                self.stream, GROUP, self.consumer, count=READ_COUNT, pending=True, after=after
            )
            if not entries:
                # What is remembered as handed-but-unsettled and no longer pending anywhere in the group was
                # settled: a settle whose answer was lost took effect after all. What another replica holds right
                # now (it claimed it, found it being handed over by us, and gives it back) stays remembered, so it
                # is settled, not handed over a second time, when it comes back.
                if self._unsettled:
                    still = await self.redis.stream_still_pending(self.stream, GROUP, list(self._unsettled))
                    for entry_id in [i for i in self._unsettled if i not in still]:
                        del self._unsettled[entry_id]
                return
            await self._handle_batch(entries, recovered=True)
            after = entries[-1].id

    async def _claim_stale(self) -> None:
        """Take over the entries other replicas read and left unacknowledged for ``claim_idle_s``, unless their
        hand-over began (in doubt: left to the replica that began it), and hand them to this node."""
        after = "-"
        while True:
            stale = await self.redis.stream_pending_idle(
                self.stream, GROUP, min_idle_ms=self.claim_idle_ms, after=after, count=4 * READ_COUNT
            )
            wanted: list[str] = []
            for pending in stale:
                if pending.consumer != self.consumer and await self._claimable(pending.id):
                    wanted.append(pending.id)
            claimed = await self.redis.stream_claim(
                self.stream, GROUP, self.consumer, wanted, min_idle_ms=self.claim_idle_ms
            )
            for entry in claimed:
                self.counters["claimed"] += 1
                log.info("message queue: claimed entry %s from a replica that stopped or hangs", entry.id)
            await self._handle_batch(claimed, recovered=True)
            if len(stale) < 4 * READ_COUNT:
                return
            after = stale[-1].id

    async def _claimable(self, entry_id: str) -> bool:
        entry = await self.redis.stream_entry(self.stream, entry_id)
        if entry is None:
            return True  # gone from the stream: claiming it just clears the pending list (_handle skips nothing)
        try:
            message = QueuedMessage.from_payload(entry.fields.get("m", b""))
        except ValueError:
            return True  # _handle drops it
        record = await self.redis.status_get(self._status_key(message.id))
        return record is None or record.get("state") != "handing"

    async def _handle(self, entry: StreamEntry, *, recovered: bool = True) -> None:
        """One entry: :meth:`_handle_batch` of one."""
        await self._handle_batch([entry], recovered=recovered)

    async def _handle_batch(self, entries: Sequence[StreamEntry], *, recovered: bool) -> None:
        """Hand a read batch to the node and settle it in one atomic step. A lone anchor (no ``cluster``) reading
        new entries (with ``>``: delivered to this group for the first time) skips the status step; ``recovered``
        entries (from a pending list: read before a crash, a store error or by another replica) and every batch of a
        cluster go through the atomic status switch first (see ``RedisStore.queue_begin_many``), one script for the
        batch. Each entry handed to the node is remembered until its settle took effect, so a settle that fails
        (Redis down or slow) is retried without handing anything to the node a second time."""
        if not entries:
            return
        if self._stopping():
            await trio.lowlevel.checkpoint_if_cancelled()  # the consumer's own stop: Cancelled
            raise _NodeNotRunning()
        settles: list[tuple[str, str | None, Mapping[str, str] | None]] = []
        todo: list[tuple[StreamEntry, QueuedMessage]] = []
        for entry in entries:
            remembered = self._unsettled.get(entry.id)
            if remembered is not None:  # handed to the node already; only its settle failed
                settles.append((entry.id, *remembered))
                continue
            try:
                todo.append((entry, QueuedMessage.from_payload(entry.fields.get("m", b""))))
            except ValueError as exc:
                self.counters["malformed"] += 1
                log.warning("message queue: dropped malformed entry %s: %s", entry.id, exc)
                settles.append((entry.id, None, None))
        began = bool(todo and (recovered or self.cluster))  # status records set to "handing" (else left "queued")
        if began:
            keys = [self._status_key(message.id) for _entry, message in todo]
            verdicts = await self.redis.queue_begin_many(keys, self.consumer, ttl_s=STATUS_TTL_S, delivered=recovered)
            if self._stopping():  # a stop began meanwhile: what this call began goes back to "queued"
                with trio.CancelScope(shield=True):
                    await self._release(
                        [key for key, (verdict, _d) in zip(keys, verdicts, strict=True) if verdict == "mine"]
                    )
                await trio.lowlevel.checkpoint_if_cancelled()  # the consumer's own stop: Cancelled
                raise _NodeNotRunning()
        else:
            verdicts = [("mine", "")] * len(todo)
        give_back: list[tuple[str, str]] = []
        stopped = False
        not_handed: list[str] = []  # status records this call set to "handing" and a stop kept from the node
        for index, ((entry, message), (verdict, detail)) in enumerate(zip(todo, verdicts, strict=True)):
            key = self._status_key(message.id)
            if verdict in ("mine", "again"):
                if self._stopping():  # a stop began while the batch was handed over (the node sends LEAVE and
                    stopped = True  # closes its links): the rest waits in the pending list for its next start,
                    # what the node took is settled below. No await between this test and the hand-over. What
                    # this call began goes back to "queued" (another replica may claim it meanwhile); what a
                    # crash left "handing" ("again": maybe in the outbox) stays so, resolved at the next start.
                    rest = zip(todo[index:], verdicts[index:], strict=True)
                    not_handed = [self._status_key(m.id) for (_e, m), (v, _d) in rest if v == "mine" and began]
                    break
                # "again": this consumer began it before a crash — a private message is then in the outbox or not
                # at all (send_private accepts an ID once), a broadcast may go out twice (see the module's note).
                # No await between the hand-over and remembering it.
                status = self._hand_over(message)
                self._unsettled[entry.id] = (key, status)
                settles.append((entry.id, key, status))
                # The rest of the node runs between two hand-overs (a private message costs an fsync of the outbox,
                # milliseconds: a batch of them must not stall the event loop). This checkpoint cannot raise
                # Cancelled, so the shielded settle below is reached whatever happens meanwhile.
                await trio.lowlevel.cancel_shielded_checkpoint()
            elif verdict == "settled":
                self.counters["duplicates"] += 1  # handled before a crash, not acknowledged: just acknowledge now
                settles.append((entry.id, key, {"state": detail}))
            elif verdict == "unknown":
                settles.append((entry.id, key, self._status_lost(entry, message)))
            else:  # "other"
                # Another replica began handing this entry over (it claimed it from us while we were slow, or we
                # claimed it just as it began): not ours to send or acknowledge. It goes back to that replica's
                # pending list, which the replica settles (alive) or resolves when it starts again (stopped).
                self.counters["in_doubt"] += 1
                log.info("message queue: entry %s is being handed over by replica %s; left to it", entry.id, detail)
                if detail:
                    give_back.append((entry.id, detail))
        # Shielded: a stop (the nursery cancelled) waits for the settle of what the node took — at most the store's
        # timeout — instead of leaving it to be handed over again at the next start.
        with trio.CancelScope(shield=True):
            for entry_id, owner in give_back:
                await self.redis.stream_claim(self.stream, GROUP, owner, [entry_id], min_idle_ms=0)
            await self.redis.queue_settle_many(self.stream, GROUP, settles, ttl_s=STATUS_TTL_S)
        for entry_id, _key, _status in settles:
            self._unsettled.pop(entry_id, None)
        if not_handed:
            with trio.CancelScope(shield=True):
                await self._release(not_handed)
        if stopped:
            await trio.lowlevel.checkpoint_if_cancelled()  # the consumer's own stop: Cancelled, not a warning
            raise _NodeNotRunning()

    async def _release(self, keys: Sequence[str]) -> None:
        """Give back records this consumer set to "handing" and did not hand over (a stop came first). A store
        error leaves them "handing": resolved at this consumer's next start (as after a crash)."""
        if not keys:
            return
        try:
            await self.redis.queue_release_many(keys, self.consumer, ttl_s=STATUS_TTL_S)
        except StoreError as exc:
            log.warning(
                "message queue: %d entries begun and not handed over stay in doubt until the next start: %s",
                len(keys),
                exc,
            )

    def _stopping(self) -> bool:
        """Whether hand-overs must stop: the node is not running yet, a stop of the node was requested (its drain
        sends LEAVE and closes its link queues right after: a broadcast handed over then would be settled
        ``accepted`` and never sent), it stopped, or this consumer was cancelled."""
        return (
            self.node.core is None
            or self.node.stop_requested
            or self.node.stopped.is_set()
            or trio.current_effective_deadline() == -math.inf
        )

    def _hand_over(self, message: QueuedMessage) -> dict[str, str]:
        """Give one message to the node (synchronously); the status to settle it with."""
        try:
            if message.to is None:
                mesh_id = self.node.broadcast(message.text)
            else:
                mesh_id = self.node.send_private(message.to, message.text, message_id=message.id)
        except MeshError as exc:
            self.counters["failed"] += 1
            log.warning("message queue: message %s refused by the node: %s", message.id, exc)
            return {"state": "failed", "detail": str(exc)}
        self.counters["accepted"] += 1
        return {"state": "accepted", "mesh_id": mesh_id, "detail": ""}

    def _status_lost(self, entry: StreamEntry, message: QueuedMessage) -> dict[str, str]:
        """The settle of an entry delivered before whose status record is gone (expired, or evicted): its hand-over
        may have begun on a replica that never came back, whose node may have sent it. Not sent again; said so —
        unless this node's own outbox holds it (this consumer began it before a crash): then it was accepted here."""
        if message.to is not None and self.node.outbox is not None and self.node.outbox.get(message.id):
            return {"state": "accepted", "mesh_id": message.id, "detail": "", "to": message.to, "key": message.key_id}
        self.counters["failed"] += 1
        log.warning("message queue: entry %s (message %s) lost its status record; not sent again", entry.id, message.id)
        return {"state": "failed", "detail": STATUS_LOST, "to": message.to or "", "key": message.key_id}
