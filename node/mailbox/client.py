"""The node's mailbox client: deposits sealed envelopes for unreachable peers at the configured anchors
(``mailbox.anchors``) and fetches this node's own envelopes from them over BetaNet.

* **Deposit.** The mesh core seals a held private message after ``mesh.courier_after_s`` (the courier's Noise_X
  envelope: the anchor never sees the text) and emits :class:`~node.routing.mesh.EnvelopeSealed`; the node hands
  it here and it is queued for every anchor (bounded: ``mailbox.max_pending_deposits``, oldest dropped) and
  deposited as soon as the anchor answers. A deposit the anchor refuses for good (expired, malformed) is dropped
  with a warning; one refused as full (the recipient's mailbox, or our share of it), or that fails in transit,
  stays queued and is retried with backoff.
* **Fetch.** At start, whenever a link to an anchor comes up, and every ``mailbox.fetch_interval_s``: ask for a
  challenge, answer it (:func:`~node.mailbox.protocol.make_proof`: our Noise and signing keys bound to the anchor's
  fresh nonce), receive our envelopes, deliver each into the mesh core (which opens it and writes the inbox, unique
  by (sender, message ID)), and only then ACK them so the anchor deletes them. A crash in between re-delivers, and
  the inbox keeps one copy. Opening an envelope makes the core send its delivery ack to the sender through the mesh,
  so a sender that is online learns "delivered".

One task per anchor, owned by :meth:`MailboxClient.run`'s nursery.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.errors import MeshError, NodeError, StartupError
from node.identity import Identity
from node.inbox import InboxError
from node.mailbox import protocol as p
from node.mailbox.protocol import MailboxError
from node.mailbox.settings import MailboxSection
from node.mailbox.stream import ByteStream, FramedStream
from node.transports.betanet.transport import signing_key_of
from node.wire import MalformedFrame

log = logging.getLogger("village.mailbox")

RETRY_INITIAL_S = 1.0  # first wait after a failed exchange with an anchor; doubles per failure
RETRY_MAX_S = 60.0
FETCH_BATCH = 64  # envelopes asked for per FETCH
MAX_FETCH_ROUNDS = 64  # FETCH rounds per exchange (64 x 64 envelopes), so one anchor cannot keep us busy forever


class StreamOpener(Protocol):
    """What the client needs of BetaNet (:class:`~node.transports.betanet.transport.BetanetTransport`): a new stream
    on a protocol to the peer at a multiaddr ending in /p2p/<id>."""

    async def open_stream(self, addr: str, protocol: TProtocol) -> ByteStream: ...


@dataclass(slots=True)
class MailboxClientCounters:
    deposited: int = 0
    deposit_duplicates: int = 0
    deposits_refused: int = 0
    deposits_deferred: int = 0  # refused as full (E_FULL): kept and retried with backoff
    deposits_dropped: int = 0  # queue full: the oldest went
    fetches: int = 0  # completed fetch exchanges (with or without envelopes)
    fetched: int = 0
    delivered: int = 0  # opened (a copy already in the inbox is not stored again)
    acked: int = 0
    store_failed: int = 0  # fetched but not stored in the inbox (disk full): not acked, fetched again later
    exchange_failures: int = 0


@dataclass
class AnchorTarget:
    addr: str
    peer_id: str  # libp2p peer ID (base58)
    anchor_key: bytes  # its Ed25519 key: the proof names it
    pending: deque[bytes] = field(default_factory=deque)
    wake: trio.Event = field(default_factory=trio.Event)
    fetch_due: bool = True


def parse_anchor(addr: str) -> tuple[str, bytes]:
    try:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:  # noqa: BLE001 - multiaddr/libp2p raise several error types for bad input
        raise StartupError(f"mailbox.anchors: {addr!r} is not a multiaddr ending in /p2p/<peer id> ({exc})") from None
    key = signing_key_of(info.peer_id)
    if key is None:
        raise StartupError(f"mailbox.anchors: {addr!r}: the peer ID does not carry an Ed25519 key")
    return str(info.peer_id), key


class MailboxClient:
    """``deliver(envelope) -> bool`` hands a fetched envelope to the node (True: new to the inbox; raises
    :class:`~node.inbox.InboxError` when it could not be stored, and the envelope is then not acked); it must have
    stored the message durably when it returns."""

    def __init__(
        self,
        identity: Identity,
        settings: MailboxSection,
        transport: StreamOpener,
        deliver: Callable[[bytes], bool],
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.transport = transport
        self.deliver = deliver
        self.counters = MailboxClientCounters()
        self.anchors: list[AnchorTarget] = []
        for addr in settings.anchors:
            peer_id, key = parse_anchor(addr)
            self.anchors.append(AnchorTarget(addr, peer_id, key))
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for target in self.anchors:
                nursery.start_soon(self._serve_anchor, target)
            task_status.started()

    # ------------------------------------------------------------ node hooks
    def on_sealed(self, envelope: bytes) -> None:
        for target in self.anchors:
            if len(target.pending) >= self.settings.max_pending_deposits:
                target.pending.popleft()
                self.counters.deposits_dropped += 1
                log.warning("mailbox: deposit queue for %s full; dropped the oldest envelope", target.addr)
            target.pending.append(envelope)
            target.wake.set()

    def on_link_up(self, remote_address: str) -> None:
        for target in self.anchors:
            if remote_address.endswith(f"/p2p/{target.peer_id}"):
                target.fetch_due = True
                target.wake.set()

    def pending_deposits(self) -> int:
        return sum(len(t.pending) for t in self.anchors)

    async def wait_counters(self, predicate: Callable[[MailboxClientCounters], bool]) -> None:
        while not predicate(self.counters):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------ per anchor
    async def _serve_anchor(self, target: AnchorTarget) -> None:
        retry = RETRY_INITIAL_S
        next_fetch = trio.current_time()
        while True:
            if trio.current_time() >= next_fetch:
                target.fetch_due = True
            if target.pending or target.fetch_due:
                target.wake = trio.Event()
                try:
                    await self._exchange(target)
                except (NodeError, MailboxError) as exc:
                    self.counters.exchange_failures += 1
                    self._notify()
                    log.warning("mailbox: %s: %s; retrying in %.0f s", target.addr, exc, retry)
                    with trio.move_on_after(retry):
                        await target.wake.wait()  # a link to the anchor coming up retries at once
                    retry = min(retry * 2, RETRY_MAX_S)
                    continue
                retry = RETRY_INITIAL_S
                next_fetch = trio.current_time() + self.settings.fetch_interval_s
            with trio.move_on_at(next_fetch if not target.pending else math.inf):
                await target.wake.wait()

    async def _exchange(self, target: AnchorTarget) -> None:
        """One stream: deposit what is queued, then fetch if due. Every step is bounded: the dial by
        ``betanet.dial_timeout_s``, each request by ``mailbox.request_timeout_s``, the work by the queue bound and
        :data:`MAX_FETCH_ROUNDS`."""
        stream = await self.transport.open_stream(target.addr, p.MAILBOX_PROTOCOL)
        framed = FramedStream(stream, timeout_s=self.settings.request_timeout_s)
        try:
            full = await self._deposit_all(target, framed)
            if target.fetch_due:
                await self._fetch_all(target, framed)
                target.fetch_due = False
                self.counters.fetches += 1
            if full:  # the exchange went through, but these wait: retried with the failure backoff
                raise MailboxError(p.E_FULL, f"{full} envelope(s) kept: their recipients' mailboxes are full")
        except MalformedFrame as exc:
            raise MeshError(f"the anchor answered nonsense: {exc}") from exc
        finally:
            await framed.aclose()
            self._notify()

    async def _deposit_all(self, target: AnchorTarget, framed: FramedStream) -> int:
        """Deposit the queue; how many envelopes were kept because their recipients' mailboxes are full."""
        full = 0  # envelopes in a row the anchor found full for their recipient: kept, tried again later
        while len(target.pending) > full:
            envelope = target.pending[0]
            try:
                _, new = p.decode_deposited_untrusted(await framed.request(p.encode_deposit(envelope)))
            except MailboxError as exc:
                if exc.code in p.TRANSIENT:
                    raise  # the anchor's store is down, or we deposit too fast: keep the envelope, retry later
                if exc.code == p.E_FULL:
                    # The recipient's mailbox (or our share of it) is full until it fetches: keep the envelope at
                    # the back (the queue is bounded) and go on with the others; retried with backoff.
                    target.pending.rotate(-1)
                    full += 1
                    self.counters.deposits_deferred += 1
                    continue
                target.pending.popleft()
                self.counters.deposits_refused += 1
                log.warning("mailbox: %s refused an envelope: %s", target.addr, exc)
                continue
            target.pending.popleft()
            if new:
                self.counters.deposited += 1
            else:
                self.counters.deposit_duplicates += 1
            log.info("mailbox: envelope deposited at %s", target.addr)
        return full

    async def _fetch_all(self, target: AnchorTarget, framed: FramedStream) -> None:
        for _ in range(MAX_FETCH_ROUNDS):
            challenge = p.decode_challenge_untrusted(await framed.request(p.encode_challenge_request()))
            proof = p.make_proof(self.identity, target.anchor_key, challenge)
            grant, items = p.decode_envelopes_untrusted(await framed.request(p.encode_fetch(proof, FETCH_BATCH)))
            if not items:
                return
            self.counters.fetched += len(items)
            done = []
            for item in items:
                try:
                    if self.deliver(item.envelope):  # committed to the inbox (or refused for good) before the ack
                        self.counters.delivered += 1
                except InboxError as exc:  # not stored (disk full): not acked, so the anchor keeps it
                    self.counters.store_failed += 1
                    log.error("mailbox: %s", exc)
                    continue
                done.append(item.id)
            if done:
                self.counters.acked += p.decode_acked_untrusted(await framed.request(p.encode_ack(grant, done)))
            log.info("mailbox: %d envelope(s) fetched from %s", len(items), target.addr)
            if len(items) < FETCH_BATCH or len(done) < len(items):  # (a failing inbox: try again later)
                return
