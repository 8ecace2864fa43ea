"""Village governance over the mesh: the trio adapter around :class:`node.agents.governance.gossip.Gossip`.

One :class:`GovMesh` per namespace a node takes part in. It serves the app-channel service ``gov.gossip``
(pushes and catch-up pulls, see the gossip module), pushes what is new to it to up to ``gossip_max_peers``
reachable peers (never back to the peer it came from), pulls from a peer every ``catch_up_interval_s`` and
when a link comes up (a node that was offline or partitioned catches up with the current epoch's proposals,
votes, evidence and certificates, and follows membership certificates through epochs), and persists every
accepted item in its :class:`GovStore` before forwarding it. Its own votes are written to the store before
they leave, so a restart never makes it sign a slot twice.

Prevotes are the operator's (:meth:`GovMesh.cast`, ``village vote cast``); with ``auto_precommit`` the node
precommits the value that > 2/3 prevoted (CometBFT). Certificates that execute are handed to ``on_executed``.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import nacl.signing
import trio

from node.agents.errors import GovernanceError
from node.agents.governance import (
    MEMBERSHIP_ROUND,
    Action,
    ActionKind,
    Certificate,
    Executed,
    Governance,
    Proposal,
    Value,
    Vote,
    Voter,
    VoteType,
    make_proposal,
)
from node.agents.governance.formats import action_applicable, sign_vote
from node.agents.governance.gossip import (
    MAX_ITEMS,
    SERVICE,
    Gossip,
    Item,
    Pull,
    Push,
    Received,
    batch_from_bytes_untrusted,
    certificate_item,
    encode_ack,
    encode_pull,
    encode_push,
    proposal_item,
    request_from_bytes_untrusted,
    vote_item,
)
from node.agents.govsettings import GovernanceSettings
from node.agents.govstore import GovernanceStore
from node.errors import MeshError
from node.routing.app import APP_MAX_BODY_BYTES
from node.wire.errors import MalformedFrame

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("village.governance")

PUSH_MAX_BYTES = APP_MAX_BODY_BYTES - 512  # one push body, with room for the header
MAX_PULL_PAGES = 64  # pages one catch-up reads from one peer
PULL_PEERS = 2  # peers one anti-entropy round asks
MAX_PEER_QUEUES = 64  # peers with pushes pending at once (each a queue of <= gossip_queue_items and one task)
UNSAVED_BATCHES = 64  # batches kept for a retry after the store failed (older ones: catch-up from peers repairs)

Executor = Callable[[list[Executed]], Awaitable[None]]


class GovMesh:
    def __init__(
        self,
        node: Node,
        gov: Governance,
        store: GovernanceStore | None,
        key: nacl.signing.SigningKey,
        settings: GovernanceSettings,
        *,
        db_limiter: trio.CapacityLimiter | None = None,
        on_executed: Executor | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node, self.gov, self.store, self.settings = node, gov, store, settings
        self.key = key
        self.voter = Voter(key, gov, store.signed() if store is not None else None)
        self.gossip = Gossip(
            gov,
            items_per_s=settings.gossip_items_per_s,
            burst_items=settings.gossip_burst_items,
            pulls_per_s=settings.gossip_pulls_per_s,
            burst_pulls=settings.gossip_burst_pulls,
            max_answer_bytes=PUSH_MAX_BYTES,
        )
        self.db_limiter = db_limiter or trio.CapacityLimiter(1)
        self.on_executed = on_executed
        self._rng = rng or random.Random()
        self._queue: deque[tuple[Item, bytes | None]] = deque()  # (item, the peer it came from)
        self._wake = trio.Event()
        self._peer_queues: dict[bytes, deque[Item]] = {}  # per-peer push queues, each drained by its own task
        self._pull_now = trio.Event()
        self._unsaved: list[tuple[list[Proposal], list[Vote], list[Certificate]]] = []  # failed writes
        self._lock = trio.Lock()  # one batch at a time through core + store (keeps store order = core order)
        self.changed = trio.Event()  # set (and replaced) whenever something new was accepted: tests wait on it

    @property
    def namespace(self) -> str:
        return self.gov.namespace

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.node.register_app_handler(SERVICE, self._handle)
        self.node.on_link_up(lambda _addr: self._pull_now.set())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pusher, nursery)
            nursery.start_soon(self._anti_entropy)
            task_status.started()

    # ------------------------------------------------------------------------------------------ serving

    async def _handle(self, peer: bytes, body: bytes) -> bytes:
        try:
            req = request_from_bytes_untrusted(body)
        except MalformedFrame as exc:
            self.gossip.counters["requests_malformed"] += 1
            raise GovernanceError(f"malformed governance request: {exc}") from exc
        if req.namespace != self.namespace:
            self.gossip.counters["requests_other_namespace"] += 1
            raise GovernanceError(f"this node does not take part in {req.namespace!r}")
        now_ms = self.node.clock.wall_ms()
        if isinstance(req, Pull):
            return self.gossip.catch_up(peer, req.epoch, req.skip, now_ms)
        assert isinstance(req, Push)
        accepted = await self._receive(peer, req.items)
        return encode_ack(accepted)

    async def _receive(self, peer: bytes, items: Sequence[Item], *, pull_answer: bool = False) -> int:
        async with self._lock:  # a cancel while waiting here changes nothing
            # Shielded from here: once the core took the items, they are stored, forwarded and executed even if
            # the handler's deadline (APP_HANDLER_TIMEOUT_S) or a pull's cancel strikes meanwhile; otherwise they
            # would live in memory only, and dedupe would make every re-send useless.
            with trio.CancelScope(shield=True):
                now_ms = self.node.clock.wall_ms()
                # answers to our pulls: a per-peer budget of their own (a lying answerer costs no more than pushes)
                got = self.gossip.receive_items(peer, items, now_ms, pull_answer=pull_answer)
                await self._persist(got.new_proposals, got.new_votes, got.certificates, bool(got.forward))
                for it in got.forward:
                    self._enqueue(it, peer)
                await self._after_change(got, now_ms)
        return len(got.forward)

    async def _persist(
        self, proposals: Sequence[Proposal], votes: Sequence[Vote], certificates: Sequence[Certificate], new: bool
    ) -> None:
        """Write what the core accepted (and whatever an earlier failed write left unsaved). A database error is
        counted and logged; the batch is kept (bounded) and written with the next one."""
        store = self.store
        if store is None or not (new or self._unsaved):
            return
        batch = (list(proposals), list(votes), list(certificates))
        pending = [*self._unsaved, batch]
        evidence = [self.gov.evidence[k] for k in self.gov.evidence]  # INSERT OR IGNORE: cheap to repeat

        def write() -> None:
            for ps, vs, cs in pending:
                for p in ps:
                    store.save_proposal(p)
                for v in vs:
                    store.save_vote(v)
                for c in cs:
                    store.save_certificate(c)
            for e in evidence:
                store.save_evidence(e)

        try:
            await self._db(write)
        except Exception:  # sqlite3/psycopg errors of the store, or a hung write: the items stay in the core
            self.gossip.counters["persist_failed"] += 1
            log.exception("governance store write failed; retried with the next batch")
            self._unsaved = pending[-UNSAVED_BATCHES:]
            return
        self._unsaved = []

    async def _db(self, fn: Callable[[], None]) -> None:
        """Run a blocking store write in a thread, at most ``store_timeout_s`` (even in a shielded section). A hung
        write is abandoned (its thread keeps the DB limiter until it returns, so later writes stay in order) and
        raises :class:`GovernanceError`: the caller's lock is released instead of held forever."""
        with trio.move_on_after(self.settings.store_timeout_s) as scope:
            await trio.to_thread.run_sync(fn, limiter=self.db_limiter, abandon_on_cancel=True)
        if scope.cancelled_caught:
            self.gossip.counters["store_timeouts"] += 1
            raise GovernanceError(f"the governance store did not answer within {self.settings.store_timeout_s} s")

    async def _after_change(self, got: Received, now_ms: int) -> None:
        """Precommit polkas (auto_precommit), execute what is certified, wake waiters."""
        if self.settings.auto_precommit:
            slots = {(v.epoch, v.round) for v in got.new_votes if v.vote_type is VoteType.PREVOTE}
            for epoch, round_ in sorted(slots):
                vote = self.voter.maybe_precommit(epoch, round_, now_ms)
                if vote is not None:
                    try:
                        await self._send_own(vote, now_ms)
                    except GovernanceError:  # the store timed out: the precommit stays signed, unsent
                        self.gossip.counters["precommit_failed"] += 1
                        log.warning("our precommit for epoch %d round %d was not stored in time", epoch, round_)
        executed = self.gov.execute_ready()
        adopted = self.gov.take_adopted()  # certificates of the new epoch that waited for its electorate
        if adopted:
            await self._persist((), (), adopted, True)
            for c in adopted:
                self._enqueue(certificate_item(c), None)
        if executed and self.on_executed is not None:
            await self.on_executed(executed)
        if got.forward or executed:
            self.changed.set()
            self.changed = trio.Event()

    async def _send_own(self, vote: Vote, now_ms: int) -> None:
        """Persist our vote, then count it and gossip it (and the certificate it completes)."""
        store = self.store
        if store is not None:

            def write() -> None:
                store.save_signed(vote)
                store.save_vote(vote)

            await self._db(write)  # not stored in time: the vote is neither counted nor sent (GovernanceError)
        r = self.gov.receive_vote(vote, now_ms)
        self._enqueue(vote_item(vote), None)
        if r.certificate is not None:
            if store is not None:
                await self._persist((), (), [r.certificate], True)  # a failed write: kept in _unsaved for a retry
            self._enqueue(certificate_item(r.certificate), None)

    # ---------------------------------------------------------------------------------------- pushing

    def _enqueue(self, item: Item, origin: bytes | None) -> None:
        self._queue.append((item, origin))
        while len(self._queue) > self.settings.gossip_queue_items:
            self._queue.popleft()  # catch-up pulls repair what a full queue drops
            self.gossip.counters["push_queue_dropped"] += 1
        self._wake.set()

    def _reachable(self) -> list[bytes]:
        core = self.node.core
        if core is None:
            return []
        now = self.node.clock.now()
        peers = sorted((p for p in core.peers if core.is_reachable(p, now)), key=lambda p: (p.hops, p.peer_id))
        return [p.peer_id for p in peers[: self.settings.gossip_max_peers]]

    async def _pusher(self, nursery: trio.Nursery) -> None:
        """Fan queued items out to each reachable peer's own queue, drained by that peer's own sender task: a slow
        or silent peer delays only its own pushes (its queue is bounded; catch-up repairs what it drops)."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._queue = list(self._queue), deque()
            for peer in self._reachable():
                items = [it for it, origin in batch if origin != peer]
                if not items:
                    continue
                q = self._peer_queues.get(peer)
                if q is None:
                    if len(self._peer_queues) >= MAX_PEER_QUEUES:
                        self.gossip.counters["push_peer_dropped"] += len(items)
                        continue
                    q = self._peer_queues[peer] = deque()
                    nursery.start_soon(self._sender, peer, q)
                q.extend(items)
                while len(q) > self.settings.gossip_queue_items:
                    q.popleft()
                    self.gossip.counters["push_queue_dropped"] += 1

    async def _sender(self, peer: bytes, q: deque[Item]) -> None:
        """Push ``peer``'s queue in batches, one request at a time, until it is empty."""
        try:
            while q:
                items: list[Item] = []
                size = 0
                while q and len(items) < MAX_ITEMS and size + 3 + len(q[0].data) <= PUSH_MAX_BYTES:
                    it = q.popleft()
                    items.append(it)
                    size += 3 + len(it.data)
                if not items:  # an item larger than one push (never built here): drop it
                    q.popleft()
                    continue
                await self._push_one(peer, items)
        finally:
            del self._peer_queues[peer]

    async def _push_one(self, peer: bytes, items: list[Item]) -> None:
        try:
            await self.node.app_request(
                peer, SERVICE, encode_push(self.namespace, items), timeout_s=self.settings.gossip_timeout_s
            )
            self.gossip.counters["pushes_sent"] += 1
        except MeshError as exc:  # AppTimeout/AppRemoteError/AppError: the peer catches up later
            self.gossip.counters["pushes_failed"] += 1
            log.debug("governance push to %s failed: %s", peer.hex()[:16], exc)

    # ---------------------------------------------------------------------------------------- catch-up

    async def _anti_entropy(self) -> None:
        while True:
            with trio.move_on_after(self.settings.catch_up_interval_s):
                await self._pull_now.wait()
            self._pull_now = trio.Event()
            peers = self._reachable()
            self._rng.shuffle(peers)
            for peer in peers[:PULL_PEERS]:
                await self.pull_from(peer)

    async def pull_from(self, peer: bytes) -> int:
        """Ask ``peer`` for everything of our epoch onwards; returns the items that were new here."""
        new = 0
        skip = 0
        for _ in range(MAX_PULL_PAGES):
            epoch = self.gov.epoch
            try:
                raw = await self.node.app_request(
                    peer, SERVICE, encode_pull(self.namespace, epoch, skip), timeout_s=self.settings.gossip_timeout_s
                )
                items, more = batch_from_bytes_untrusted(raw)
            except MalformedFrame:
                self.gossip.counters["pull_answers_malformed"] += 1
                return new
            except MeshError:
                self.gossip.counters["pulls_failed"] += 1
                return new
            self.gossip.counters["pulls_sent"] += 1
            new += await self._receive(peer, items, pull_answer=True)
            if not more or not items:
                break
            skip = 0 if self.gov.epoch != epoch else skip + len(items)
        return new

    async def catch_up(self) -> int:
        """Pull from every reachable peer now (a node back from being offline)."""
        total = 0
        for peer in self._reachable():
            total += await self.pull_from(peer)
        return total

    # ------------------------------------------------------------------------------------ local actions

    def _next_round(self) -> int:
        g = self.gov
        used = {r for (e, r) in g.certificates if e == g.epoch} | {
            p.round for p in g.all_proposals() if p.epoch == g.epoch
        }
        return next(r for r in range(len(used) + 1) if r not in used)

    async def propose(self, kind: str, key: str, value: Any, *, ttl_s: float) -> Proposal:
        """Propose a typed action in the next free round of the current epoch and gossip it (no vote yet:
        ``cast`` votes, this node's operator included)."""
        try:
            action = Action(ActionKind(kind), key, value)
        except ValueError as exc:
            raise GovernanceError(f"kind must be one of config, policy, admit, remove, not {kind!r}") from exc
        async with self._lock:
            g = self.gov
            now_ms = self.node.clock.wall_ms()
            membership = action.kind in (ActionKind.ADMIT, ActionKind.REMOVE)
            p = make_proposal(
                g.namespace,
                g.epoch,
                MEMBERSHIP_ROUND if membership else self._next_round(),
                action,
                expires_at_ms=now_ms + int(ttl_s * 1000),
                signer=self.key,
            )
            if not g.add_proposal(p, now_ms):
                raise GovernanceError("the proposal was refused (slot taken, budget spent, or not a member)")
            with trio.CancelScope(shield=True):  # in the core now: stored and gossiped even if we are cancelled
                await self._persist([p], (), (), True)
                self._enqueue(proposal_item(p), None)
                self.changed.set()
                self.changed = trio.Event()
            return p

    async def cast(self, proposal_hash: bytes, value: Value) -> Vote:
        """Prevote ``value`` on a known proposal of the current epoch as this node (once per slot)."""
        async with self._lock:
            g = self.gov
            p = g.proposal(proposal_hash)
            if p is None:
                raise GovernanceError(f"no proposal {proposal_hash.hex()[:16]}... here (pull from peers first?)")
            now_ms = self.node.clock.wall_ms()
            if p.epoch != g.epoch:
                raise GovernanceError(f"the proposal is of epoch {p.epoch}; the current epoch is {g.epoch}")
            if now_ms >= p.expires_at_ms:
                raise GovernanceError("the proposal has expired")
            e = g.electorates[p.epoch]
            if e.index(self.voter.public) is None:
                raise GovernanceError("this node is not a member of the current electorate")
            if value is Value.YES and (why := action_applicable(e, p.action)) is not None:
                raise GovernanceError(f"cannot vote yes: {why}")
            slot = (p.epoch, p.round, VoteType.PREVOTE)
            if slot in self.voter.signed:
                raise GovernanceError("this node already prevoted in this slot (a second vote would equivocate)")
            vote = sign_vote(self.key, g.namespace, p.epoch, p.hash, p.round, VoteType.PREVOTE, value)
            with trio.CancelScope(shield=True):  # signed: stored, counted and gossiped even if we are cancelled
                self.voter.signed[slot] = vote
                await self._send_own(vote, now_ms)
                got = Received([], [vote], [], [])
                await self._after_change(got, now_ms)
            return vote

    def status(self) -> dict[str, Any]:
        g = self.gov
        return {
            "namespace": g.namespace,
            "me": self.voter.public.hex(),
            "epoch": g.epoch,
            "electorate": [[k.hex(), p] for k, p in g.electorate.members],
            "proposals": [
                {
                    "hash": p.hash.hex(),
                    "epoch": p.epoch,
                    "round": p.round,
                    "expires_at_ms": p.expires_at_ms,
                    "votes": sum(1 for v in g.votes(p.epoch, p.round) if v.proposal_hash == p.hash),
                    **p.action.to_json(),
                }
                for p in g.all_proposals()
            ],
            "certificates": [c.to_json() for c in g.certificates.values()],
            "evidence": len(g.evidence),
            "state": g.state(),
            "counters": {**dict(self.gossip.counters), **{f"core_{k}": v for k, v in g.counters.items()}},
        }
