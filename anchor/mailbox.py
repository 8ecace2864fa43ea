"""The anchor's mailbox for offline peers: it keeps sealed envelopes for a recipient until that recipient, having
proved its identity, has fetched and acknowledged them.

* :class:`MailboxCore` (sans-IO, time injected as wall-clock ms): deposit checks (size, expiry) and a token bucket
  per depositor, challenges (fresh, single use, expiring, bounded in number), proofs
  (:func:`node.mailbox.protocol.check_proof`) and grants (short-lived, one recipient each, bounded in number).
* :mod:`anchor.mailbox_quota` (sans-IO): how much each depositor may keep for one recipient when depositor keys
  are free (fair shares that shrink as depositors grow, a byte bound, room kept for trusted depositors, no
  eviction of stored mail); the storage applies it atomically with the insert.
* :mod:`anchor.mailbox_admission` (sans-IO): :class:`MailboxLimits` and whether a deposit is taken at all when the
  anchor is full (a proven recipient's reserve), under which quota, and for how long.
* :class:`MailboxService` (trio): the core over a :class:`MailboxStorage` — PostgreSQL in an anchor
  (:class:`PostgresMailboxStorage`, the ``mailbox`` table of :mod:`anchor.stores`), or :class:`MemoryMailboxStorage`
  for in-process tests. It serves the BetaNet protocol (:meth:`MailboxService.serve_stream`; bounded per-envelope,
  per-recipient and in total) and the gateway's ``GET /v1/mailbox`` (:meth:`MailboxService.gateway_fetch`: challenge,
  proof → envelopes + grant, grant + IDs → deleted).
* :func:`serve_mailbox`: all of it in an anchor node (``mailbox.serve``), on PostgreSQL.

What the anchor stores per envelope is what the courier format carries in the clear — recipient peer ID, expiry,
and the Noise_X ciphertext — plus a digest for dedupe and the deposit time. Never a message text: only the
recipient's Noise private key opens the envelope. Deletion: on the recipient's ACK (after it stored the message),
or on expiry; never to make room for another deposit (:mod:`anchor.mailbox_quota` refuses what does not fit).
A recipient that fetched but crashed before acknowledging gets the same envelopes again next time; its inbox is
unique by (sender, message ID), so the message lands exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import nacl.bindings
import nacl.utils
import trio

from anchor import mailbox_admission as admission
from anchor.mailbox_admission import MailboxLimits as MailboxLimits  # re-exported: callers build it from here
from anchor.mailbox_quota import Held, ProvenRecipients, QuotaFull, QuotaPolicy, decide_deposit
from anchor.settings import AnchorSection
from node.errors import CryptoError, NodeError, StartupError
from node.mailbox import protocol as p
from node.mailbox.protocol import Challenge, MailboxError, Proof, StoredEnvelope
from node.mailbox.settings import MailboxSection
from node.mailbox.stream import ByteStream, FramedStream, StreamClosed
from node.routing.courier import Envelope, decode_envelope_untrusted, encode_envelope
from node.settings import Config
from node.wire import MalformedFrame

if TYPE_CHECKING:
    from libp2p.abc import INetStream

    from anchor.stores.postgres import MailboxHeld, PostgresStore
    from node.node import Node

log = logging.getLogger("village.mailbox")

MAX_STREAMS = 256  # mailbox streams served at once; more are closed at once
EXPIRE_EVERY_S = 60.0  # how often expired envelopes are deleted
CHALLENGES_PER_STREAM = 4  # unanswered challenges one stream may hold (x MAX_STREAMS < max_challenges)
TOTAL_RECOUNT_MS = 1000  # the all-recipients count is refreshed this often (in between, deposits are added to it)


class MailboxStorage(Protocol):
    """Where envelopes live. Every method may raise a :class:`NodeError` when the store is down."""

    async def put(
        self,
        recipient: bytes,
        digest: bytes,
        envelope: bytes,
        expires_at_ms: int,
        now_ms: int,
        *,
        depositor: bytes,
        policy: QuotaPolicy,
    ) -> tuple[int, bool, int]:
        """Store (or find, by ``digest``) an envelope; (its ID, True if newly stored, envelopes evicted for it).
        A new one is admitted by :func:`~anchor.mailbox_quota.decide_deposit` over the recipient's unexpired
        envelopes (or raises :class:`QuotaFull`; the policy names envelopes to evict, which it never does now); the
        decision, any evictions and the insert are atomic."""
        ...

    async def count(self, recipient: bytes | None, now_ms: int) -> int:
        """Unexpired envelopes for ``recipient`` (all recipients if None)."""
        ...

    async def count_by_depositor(self, depositor: bytes, now_ms: int) -> int:
        """Unexpired envelopes ``depositor`` holds for all recipients."""
        ...

    async def list_for(self, recipient: bytes, now_ms: int, limit: int) -> list[StoredEnvelope]: ...

    async def delete(self, recipient: bytes, ids: list[int]) -> int:
        """Delete those of ``ids`` that belong to ``recipient``; how many went."""
        ...

    async def expire(self, now_ms: int) -> int: ...


@dataclass
class _MemoryRow:
    recipient: bytes
    digest: bytes
    envelope: bytes
    expires_at_ms: int
    deposited_at_ms: int
    depositor: bytes = b""


class MemoryMailboxStorage:
    """Envelopes in a dict, for in-process tests (an anchor uses PostgreSQL)."""

    def __init__(self) -> None:
        self.rows: dict[int, _MemoryRow] = {}
        self._next = 1

    async def put(
        self,
        recipient: bytes,
        digest: bytes,
        envelope: bytes,
        expires_at_ms: int,
        now_ms: int,
        *,
        depositor: bytes,
        policy: QuotaPolicy,
    ) -> tuple[int, bool, int]:
        await trio.lowlevel.checkpoint()  # no checkpoint below: the quota check and the insert are atomic
        for rid, row in self.rows.items():
            if row.recipient == recipient and row.digest == digest:
                return rid, False, 0
        held = [
            Held(i, r.depositor, len(r.envelope), r.deposited_at_ms)
            for i, r in self.rows.items()
            if r.recipient == recipient and r.expires_at_ms > now_ms
        ]
        evict = decide_deposit(policy, held, depositor, len(envelope))
        for i in evict:
            del self.rows[i]
        rid, self._next = self._next, self._next + 1
        self.rows[rid] = _MemoryRow(recipient, digest, envelope, expires_at_ms, now_ms, depositor)
        return rid, True, len(evict)

    async def count(self, recipient: bytes | None, now_ms: int) -> int:
        await trio.lowlevel.checkpoint()
        return sum(1 for r in self.rows.values() if r.expires_at_ms > now_ms and recipient in (None, r.recipient))

    async def count_by_depositor(self, depositor: bytes, now_ms: int) -> int:
        await trio.lowlevel.checkpoint()
        return sum(1 for r in self.rows.values() if r.expires_at_ms > now_ms and r.depositor == depositor)

    async def list_for(self, recipient: bytes, now_ms: int, limit: int) -> list[StoredEnvelope]:
        await trio.lowlevel.checkpoint()
        found = [
            StoredEnvelope(i, r.envelope)
            for i, r in self.rows.items()
            if r.recipient == recipient and r.expires_at_ms > now_ms
        ]
        return found[:limit]

    async def delete(self, recipient: bytes, ids: list[int]) -> int:
        await trio.lowlevel.checkpoint()
        gone = [i for i in ids if i in self.rows and self.rows[i].recipient == recipient]
        for i in gone:
            del self.rows[i]
        return len(gone)

    async def expire(self, now_ms: int) -> int:
        await trio.lowlevel.checkpoint()
        old = [i for i, r in self.rows.items() if r.expires_at_ms <= now_ms]
        for i in old:
            del self.rows[i]
        return len(old)


class PostgresMailboxStorage:
    """The ``mailbox`` table of the anchor's PostgreSQL (:class:`anchor.stores.postgres.PostgresStore`); the
    store raises ``StoreUnavailable`` when the server is down."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def put(
        self,
        recipient: bytes,
        digest: bytes,
        envelope: bytes,
        expires_at_ms: int,
        now_ms: int,
        *,
        depositor: bytes,
        policy: QuotaPolicy,
    ) -> tuple[int, bool, int]:
        evicted: list[int] = []

        def decide(held: list[MailboxHeld]) -> list[int]:  # in the store's transaction, under its recipient lock
            evicted[:] = decide_deposit(
                policy,
                [Held(h.id, h.depositor, h.size_bytes, h.deposited_at_ms) for h in held],
                depositor,
                len(envelope),
            )
            return evicted

        env_id, new = await self.store.mailbox_deposit(
            recipient, digest, envelope, expires_at_ms, now_ms, depositor=depositor, decide=decide
        )
        return env_id, new, len(evicted) if new else 0

    async def count(self, recipient: bytes | None, now_ms: int) -> int:
        return await self.store.mailbox_count(recipient, now_ms)

    async def count_by_depositor(self, depositor: bytes, now_ms: int) -> int:
        return await self.store.mailbox_count_by_depositor(depositor, now_ms)

    async def list_for(self, recipient: bytes, now_ms: int, limit: int) -> list[StoredEnvelope]:
        return [StoredEnvelope(r.id, r.envelope) for r in await self.store.mailbox_list(recipient, now_ms, limit)]

    async def delete(self, recipient: bytes, ids: list[int]) -> int:
        return await self.store.mailbox_delete(recipient, ids)

    async def expire(self, now_ms: int) -> int:
        return await self.store.mailbox_expire(now_ms)


@dataclass(frozen=True, slots=True)
class Grant:
    token: bytes
    recipient_id: bytes
    expires_at_ms: int


@dataclass
class _Issued:
    challenge: Challenge
    ephemeral_private: bytes


@dataclass
class MailboxCounters:
    deposited: int = 0
    deposit_duplicates: int = 0
    deposits_refused: int = 0
    challenges: int = 0
    proofs_refused: int = 0
    fetched: int = 0
    acked: int = 0
    malformed: int = 0
    evicted: int = 0  # envelopes dropped by the quota policy to make room for a fairer deposit
    reserved: int = 0  # deposits taken into a proven recipient's reserve while the anchor was full


@dataclass
class MailboxCore:
    """The anchor's mailbox rules, without I/O. ``anchor_key`` is the anchor's Ed25519 public key (its libp2p
    identity), which every proof must name."""

    anchor_key: bytes
    limits: MailboxLimits = field(default_factory=MailboxLimits)
    random_bytes: Callable[[int], bytes] = nacl.utils.random

    def __post_init__(self) -> None:
        self.counters = MailboxCounters()
        self._challenges: OrderedDict[bytes, _Issued] = OrderedDict()
        self._grants: OrderedDict[bytes, Grant] = OrderedDict()
        self._buckets: OrderedDict[bytes, tuple[float, int]] = OrderedDict()  # depositor -> (tokens, at ms)
        lim = self.limits
        rates = {"new_per_hour": lim.new_proven_per_hour, "new_per_key_per_hour": lim.new_proven_per_key_per_hour}
        self.proven = ProvenRecipients(lim.max_proven_recipients, int(lim.proven_recipient_s * 1000), **rates)

    def take_deposit_token(self, depositor: bytes, now_ms: int) -> None:
        """Count one deposit against ``depositor``'s rate, or :class:`MailboxError` (E_BUSY) when it is used up."""
        rate = self.limits.deposits_per_peer_per_min
        tokens, at = self._buckets.pop(depositor, (rate, now_ms))
        tokens = min(rate, tokens + (now_ms - at) * rate / 60_000)
        if tokens < 1:
            self._buckets[depositor] = (tokens, now_ms)
            self.counters.deposits_refused += 1
            wait_s = (1 - tokens) * 60 / rate
            raise MailboxError(p.E_BUSY, f"too many deposits from this peer; retry in {wait_s:.1f} s")
        self._buckets[depositor] = (tokens - 1, now_ms)
        while len(self._buckets) > self.limits.max_depositors:
            self._buckets.popitem(last=False)

    def check_deposit_untrusted(self, data: bytes, now_ms: int) -> Envelope:
        """The envelope in a deposit, or :class:`MailboxError` (malformed, too big, expired, too long-lived)."""
        if len(data) > self.limits.max_envelope_bytes:
            self.counters.deposits_refused += 1
            raise MailboxError(p.E_REFUSED, f"envelope of {len(data)} bytes (limit {self.limits.max_envelope_bytes})")
        try:
            env = decode_envelope_untrusted(data)
        except MalformedFrame as exc:
            self.counters.deposits_refused += 1
            raise MailboxError(p.E_MALFORMED, f"not a sealed envelope: {exc}") from None
        if env.expires_at_ms <= now_ms:
            self.counters.deposits_refused += 1
            raise MailboxError(p.E_REFUSED, "the envelope has expired")
        if env.expires_at_ms > now_ms + self.limits.max_expiry_s * 1000:
            self.counters.deposits_refused += 1
            raise MailboxError(p.E_REFUSED, f"the envelope expires more than {self.limits.max_expiry_s:g} s from now")
        return Envelope(env.recipient_id, env.expires_at_ms, 1, env.sealed)  # copy counts mean nothing here

    def issue_challenge(self, now_ms: int) -> Challenge:
        self._forget_expired(now_ms)
        ephemeral_private = self.random_bytes(32)
        ch = Challenge(
            self.random_bytes(p.NONCE_BYTES),
            nacl.bindings.crypto_scalarmult_base(ephemeral_private),
            now_ms + int(self.limits.challenge_ttl_s * 1000),
        )
        self._challenges[ch.nonce] = _Issued(ch, ephemeral_private)
        while len(self._challenges) > self.limits.max_challenges:
            self._challenges.popitem(last=False)
        self.counters.challenges += 1
        return ch

    def redeem(self, proof: Proof, now_ms: int, link_key: bytes | None = None) -> Grant:
        """A grant for the proof's recipient, or :class:`MailboxError` (E_AUTH). The challenge is used up either
        way. ``link_key``: the Ed25519 key the transport authenticated (BetaNet); the proof must use the same."""
        issued = self._challenges.pop(proof.nonce, None)
        try:
            if issued is None:
                raise CryptoError("unknown or already used challenge")
            if issued.challenge.expires_at_ms <= now_ms:
                raise CryptoError("the challenge has expired")
            if link_key is not None and link_key != proof.signing_public:
                raise CryptoError("the proof is signed with another key than the connection's")
            p.check_proof(proof, self.anchor_key, issued.challenge, issued.ephemeral_private)
        except CryptoError as exc:
            self.counters.proofs_refused += 1
            raise MailboxError(p.E_AUTH, str(exc)) from None
        self._forget_expired(now_ms)
        grant = Grant(
            self.random_bytes(p.GRANT_BYTES), proof.recipient_id, now_ms + int(self.limits.grant_ttl_s * 1000)
        )
        self._grants[grant.token] = grant
        while len(self._grants) > self.limits.max_grants:
            self._grants.popitem(last=False)
        return grant

    def peek_grant(self, token: bytes, now_ms: int) -> Grant | None:
        """The live grant ``token`` names, or None; counts nothing (for the audit log)."""
        grant = self._grants.get(token)
        return grant if grant is not None and grant.expires_at_ms > now_ms else None

    def grant_for(self, token: bytes, now_ms: int) -> Grant:
        grant = self._grants.get(token)
        if grant is None or grant.expires_at_ms <= now_ms:
            self.counters.proofs_refused += 1
            raise MailboxError(p.E_AUTH, "unknown or expired grant; fetch again")
        return grant

    def _forget_expired(self, now_ms: int) -> None:
        for nonce in [n for n, i in self._challenges.items() if i.challenge.expires_at_ms <= now_ms]:
            del self._challenges[nonce]
        for token in [t for t, g in self._grants.items() if g.expires_at_ms <= now_ms]:
            del self._grants[token]


def envelope_digest(env: Envelope) -> bytes:
    """What dedupe matches on: the ciphertext *and* its expiry (bound into the Noise prologue, so a copy with another
    expiry cannot be opened). On the ciphertext alone, whoever holds a copy could deposit it first with a one-minute
    expiry and make the sender's own deposit a "duplicate" that vanishes a minute later."""
    return hashlib.sha256(env.expires_at_ms.to_bytes(8, "big") + env.sealed).digest()


class MailboxService:
    """The mailbox over a storage, for BetaNet streams and the gateway. ``wall_ms`` gives the wall clock."""

    def __init__(self, core: MailboxCore, storage: MailboxStorage, wall_ms: Callable[[], int]) -> None:
        self.core = core
        self.storage = storage
        self.wall_ms = wall_ms
        self._total = 0  # envelopes stored, as last counted plus new deposits since
        self._streams_by_key: dict[bytes, int] = {}  # open BetaNet streams per link key
        self._total_counted_at_ms: int | None = None

    @property
    def limits(self) -> MailboxLimits:
        return self.core.limits

    async def deposit(self, data: bytes, depositor: bytes | None = None) -> tuple[int, bool]:
        """Keep an envelope. ``depositor``: the BetaNet key of who deposits it (rate-limited per key)."""
        now = self.wall_ms()
        env = self.core.check_deposit_untrusted(data, now)
        if depositor is not None:
            self.core.take_deposit_token(depositor, now)
        if self._total_counted_at_ms is None or now - self._total_counted_at_ms >= TOTAL_RECOUNT_MS:
            self._total = await self.storage.count(None, now)  # a table scan: at most once a second
            self._total_counted_at_ms = now
        limits = self.limits
        verified = depositor is not None and depositor in limits.trusted_depositors
        reserved = admission.needs_reserve(limits, self._total, verified)
        if reserved:
            # Full: a recipient that proved its key here still takes a few envelopes from anyone, beyond the total
            # (bounded: see MailboxLimits and anchor.mailbox_admission).
            proven = self.core.proven.knows(env.recipient_id, now)
            held = await self.storage.count(env.recipient_id, now) if proven and not verified else 0
            if not admission.reserve_open(limits, proven=proven, verified=verified, held_for_recipient=held):
                self.core.counters.deposits_refused += 1
                raise MailboxError(p.E_FULL, "this anchor's mailbox is full")
        if not verified:
            held = await self.storage.count_by_depositor(depositor or b"", now)
            if admission.depositor_total_full(limits, held):
                self.core.counters.deposits_refused += 1
                raise MailboxError(
                    p.E_FULL, f"this depositor holds {held} envelopes at this anchor (the most it may); retry later"
                )
        try:
            env_id, new, evicted = await self.storage.put(
                env.recipient_id,
                envelope_digest(env),
                encode_envelope(env),
                admission.keep_until_ms(limits, env.expires_at_ms, now, verified),
                now,
                depositor=depositor or b"",
                policy=admission.deposit_policy(limits, verified=verified, reserved=reserved),
            )
        except QuotaFull as exc:
            self.core.counters.deposits_refused += 1
            if exc.which == "envelope":  # never fits, however long the sender retries: not E_FULL
                raise MailboxError(
                    p.E_REFUSED, f"the envelope is larger than this anchor keeps for one recipient ({exc.limit} bytes)"
                ) from None
            whose = "" if exc.which == "recipient" else "this depositor's share of "
            raise MailboxError(
                p.E_FULL, f"{whose}the mailbox of {env.recipient_id.hex()} is full ({exc.limit}); retry later"
            ) from None
        if evicted:
            self.core.counters.evicted += evicted
            # Counted (village mailbox: serving.evicted); a flood evicts on every deposit, so not logged above debug.
            log.debug("mailbox: %d envelope(s) for %s evicted by the quota policy", evicted, env.recipient_id.hex())
        if new:
            self.core.counters.reserved += reserved
            self.core.counters.deposited += 1
            self._total += 1 - evicted
        else:
            self.core.counters.deposit_duplicates += 1
        return env_id, new

    def challenge(self) -> Challenge:
        return self.core.issue_challenge(self.wall_ms())

    async def fetch(
        self, proof: Proof, max_envelopes: int, link_key: bytes | None = None
    ) -> tuple[Grant, list[StoredEnvelope]]:
        now = self.wall_ms()
        grant = self.core.redeem(proof, now, link_key)
        limit = max(1, min(max_envelopes, self.limits.max_fetch))
        items = await self.storage.list_for(grant.recipient_id, now, limit)
        if items or self.core.proven.knows(grant.recipient_id, now):
            # Proven (and given a reserve) only by fetching mail that waited for it: a fetch costs nothing, mail
            # for a throwaway recipient costs a deposit. Rate-limited per link key and in total.
            self.core.proven.note(grant.recipient_id, now, link_key or b"")
        self.core.counters.fetched += len(items)
        return grant, items

    async def ack(self, token: bytes, ids: list[int]) -> int:
        grant = self.core.grant_for(token, self.wall_ms())
        deleted = await self.storage.delete(grant.recipient_id, ids)
        self.core.counters.acked += deleted
        return deleted

    async def expire(self) -> int:
        return await self.storage.expire(self.wall_ms())

    # ------------------------------------------------------------ BetaNet
    async def serve_stream(self, stream: ByteStream, link_key: bytes | None) -> None:
        """Answer requests on one ``/aivillage/mailbox/1.0.0`` stream until the peer closes it, it idles past
        ``stream_timeout_s``, or it has been open ``stream_deadline_s``. A link key has at most
        ``max_streams_per_key`` streams at once; more are answered E_BUSY and closed."""
        framed = FramedStream(stream, timeout_s=self.limits.stream_timeout_s, max_frame_bytes=p.MAX_FRAME_BYTES)
        key = link_key or b""
        if self._streams_by_key.get(key, 0) >= self.limits.max_streams_per_key:
            with contextlib.suppress(StreamClosed):
                await framed.write_frame(p.encode_error(p.E_BUSY, "too many mailbox streams from this peer"))
            await framed.aclose()
            return
        self._streams_by_key[key] = self._streams_by_key.get(key, 0) + 1
        try:
            with trio.move_on_after(self.limits.stream_deadline_s):
                await self._serve_requests(framed, link_key)
        except StreamClosed as exc:
            log.debug("mailbox stream ended: %s", exc)
        finally:
            left = self._streams_by_key.pop(key) - 1
            if left:
                self._streams_by_key[key] = left
            await framed.aclose()

    async def _serve_requests(self, framed: FramedStream, link_key: bytes | None) -> None:
        # Challenges issued on this stream and not yet answered: a FETCH frees a slot only when it names one of
        # them (a malformed FETCH, or one with an invented nonce, frees nothing).
        issued: set[bytes] = set()
        for _ in range(self.limits.max_requests_per_stream):
            body = await framed.read_frame()
            if body is None:
                return
            kind = body[:1]
            if kind == bytes([p.CHALLENGE_REQUEST]) and len(issued) >= CHALLENGES_PER_STREAM:
                # One peer cannot push everybody's challenges out of the bounded table.
                await framed.write_frame(p.encode_error(p.E_BUSY, "answer the challenges you have first"))
                continue
            if kind == bytes([p.FETCH]):
                try:
                    proof = p.decode_request_untrusted(body).proof
                except MalformedFrame:
                    proof = None
                if proof is not None:
                    issued.discard(proof.nonce)
            reply = await self.answer(body, link_key)
            if kind == bytes([p.CHALLENGE_REQUEST]) and reply[:1] == bytes([p.CHALLENGE]):
                issued.add(p.decode_challenge_untrusted(reply).nonce)
            await framed.write_frame(reply)

    async def answer(self, body: bytes, link_key: bytes | None) -> bytes:
        """The reply frame to one request frame (errors become ERROR frames)."""
        try:
            req = p.decode_request_untrusted(body)
            if req.type == p.DEPOSIT:
                env_id, new = await self.deposit(req.envelope, link_key or b"")
                return p.encode_deposited(env_id, new)
            if req.type == p.CHALLENGE_REQUEST:
                return p.encode_challenge(self.challenge())
            if req.type == p.FETCH and req.proof is not None:
                grant, items = await self.fetch(req.proof, req.max_envelopes, link_key)
                return p.encode_envelopes(grant.token, items)
            return p.encode_acked(await self.ack(req.grant, list(req.ids)))
        except MalformedFrame as exc:
            self.core.counters.malformed += 1
            return p.encode_error(p.E_MALFORMED, str(exc))
        except MailboxError as exc:
            return p.encode_error(exc.code, exc.reason)
        except NodeError as exc:  # the store is down (StoreUnavailable) and the like
            log.warning("mailbox: %s", exc)
            return p.encode_error(p.E_UNAVAILABLE, "the mailbox store is unavailable; try again later")

    # ------------------------------------------------------------ gateway (JSON)
    def http_challenge(self) -> dict[str, Any]:
        """``GET /v1/mailbox/challenge``: a fresh challenge and the anchor key the proof must name."""
        ch = self.challenge()
        return {
            "anchor_key": self.core.anchor_key.hex(),
            "nonce": ch.nonce.hex(),
            "ephemeral_key": ch.ephemeral_public.hex(),
            "expires_at_ms": ch.expires_at_ms,
        }

    async def http_fetch(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/mailbox?peer=&noise_key=&signing_key=&nonce=&mac=&signature=[&limit=]`` (all hex): the
        recipient's envelopes (hex, courier encoding) and the grant to acknowledge them with. Raises
        :class:`MailboxError` (E_MALFORMED → 400, E_AUTH → 401/403, E_UNAVAILABLE → 503)."""
        proof = Proof(
            _hex(params, "peer", 8),
            _hex(params, "noise_key", 32),
            _hex(params, "signing_key", 32),
            _hex(params, "nonce", p.NONCE_BYTES),
            _hex(params, "mac", p.MAC_BYTES),
            _hex(params, "signature", p.SIGNATURE_BYTES),
        )
        try:
            limit = int(params.get("limit", str(self.limits.max_fetch)))
        except ValueError:
            raise MailboxError(p.E_MALFORMED, "limit: expected a whole number") from None
        grant, items = await self.fetch(proof, limit)
        return {
            "grant": grant.token.hex(),
            "grant_expires_at_ms": grant.expires_at_ms,
            "envelopes": [{"id": i.id, "envelope": i.envelope.hex()} for i in items],
        }

    async def http_ack(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/mailbox/ack`` with ``{"grant": hex, "ids": [int, ...]}``: delete acknowledged envelopes."""
        grant = _hex(body, "grant", p.GRANT_BYTES)
        ids = body.get("ids")
        if (
            not isinstance(ids, list)
            or len(ids) > p.MAX_IDS_PER_ACK
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise MailboxError(p.E_MALFORMED, f"ids: expected a list of at most {p.MAX_IDS_PER_ACK} whole numbers")
        return {"deleted": await self.ack(grant, ids)}

    def audit_entry(self, query: Mapping[str, str]) -> tuple[str, str, dict[str, Any]]:
        """The gateway's audit row for a ``GET /v1/mailbox`` (see :class:`~anchor.gateway.ports.MailboxPort`)."""
        if "grant" not in query:
            return "mailbox.fetch", query.get("peer", "-"), {}
        count = len([i for i in query.get("ack", "").split(",") if i])
        try:
            grant = self.core.peek_grant(bytes.fromhex(query["grant"]), self.wall_ms())
        except ValueError:
            grant = None
        return "mailbox.ack", grant.recipient_id.hex() if grant else "-", {"count": count}

    async def gateway_fetch(self, key_id: str, query: Mapping[str, str]) -> Any:
        """``GET /v1/mailbox`` (the gateway's :class:`~anchor.gateway.ports.MailboxPort`), in three steps by query:

        1. no proof → a challenge (:meth:`http_challenge`);
        2. ``peer, noise_key, signing_key, nonce, mac, signature`` (hex) → envelopes + grant (:meth:`http_fetch`);
        3. ``grant`` + ``ack=ID,ID,...`` → those envelopes deleted (:meth:`http_ack`).

        Refusals raise the gateway's errors (400 malformed, 401 failed proof or grant, 503 store down)."""
        from anchor.gateway.errors import GatewayError, Unauthenticated
        from anchor.stores.errors import StoreUnavailable

        try:
            if "grant" in query:
                try:
                    ids = [int(i) for i in query.get("ack", "").split(",") if i]
                except ValueError:
                    raise MailboxError(p.E_MALFORMED, "ack: expected IDs separated by commas") from None
                return await self.http_ack({"grant": query["grant"], "ids": ids})
            if "signature" in query:
                return await self.http_fetch(query)
            return self.http_challenge()
        except MailboxError as exc:
            if exc.code == p.E_AUTH:
                raise Unauthenticated(f"mailbox: {exc.reason}", code="mailbox_proof_refused") from None
            if exc.code == p.E_UNAVAILABLE:
                raise StoreUnavailable("postgres", exc.reason) from None
            raise GatewayError(f"mailbox: {exc.reason}", code="mailbox_bad_request") from None


def _hex(params: Mapping[str, Any], key: str, size: int) -> bytes:
    value = params.get(key)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise MailboxError(p.E_MALFORMED, f"{key}: expected {size} bytes as {2 * size} hex digits")
    return raw


# ---------------------------------------------------------------- in an anchor node


def postgres_dsn(config: Config) -> str:
    """The PostgreSQL the anchor's stores use (the settings file :func:`anchor.services_settings.settings_path`
    finds)."""
    from anchor.services_settings import ServicesError, load_settings, settings_path

    path = settings_path(config.section(AnchorSection).services_settings, config.data_dir)
    try:
        return load_settings(path).postgres.dsn
    except ServicesError as exc:
        raise StartupError(f"mailbox.serve needs PostgreSQL: {exc}") from exc


class MailboxServerService:
    """The node's service (``mailbox-server``, with ``mailbox.serve``): keeps envelopes for offline peers in
    PostgreSQL and serves ``/aivillage/mailbox/1.0.0`` on BetaNet (registered before the transports start). Once
    started, :attr:`service` is the :class:`MailboxService` (the gateway's :class:`MailboxPort`)."""

    name = "mailbox-server"

    def __init__(self) -> None:
        self.service: MailboxService | None = None

    def serving_counters(self) -> dict[str, int]:
        """What ``mailbox.status`` shows under ``serving`` (:class:`node.mailbox.control.MailboxServing`)."""
        return dataclasses.asdict(self.service.core.counters) if self.service is not None else {}

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.service = await nursery.start(serve_mailbox, node)
            task_status.started()


async def serve_mailbox(node: Node, *, task_status: trio.TaskStatus[MailboxService] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep envelopes for offline peers in this node's PostgreSQL and serve ``/aivillage/mailbox/1.0.0`` on its
    BetaNet host (``mailbox.serve``). Reports the :class:`MailboxService` (the gateway's :class:`MailboxPort`)."""
    from anchor.stores.errors import StoreUnavailable
    from anchor.stores.postgres import PostgresStore
    from node.transports.betanet.transport import BetanetTransport

    cfg = node.config
    anchor = cfg.section(AnchorSection)
    betanet = next((t for t in node.transports if isinstance(t, BetanetTransport)), None)
    if betanet is None:
        raise StartupError("mailbox.serve needs BetaNet (betanet.enabled = true)")
    dsn = postgres_dsn(cfg)
    async with PostgresStore(dsn, timeout_s=anchor.store_timeout_s) as store:
        service = MailboxService(
            MailboxCore(node.identity.signing_public, MailboxLimits.from_config(cfg.section(MailboxSection))),
            PostgresMailboxStorage(store),
            node.clock.wall_ms,
        )
        limiter = trio.CapacityLimiter(MAX_STREAMS)

        async def on_stream(stream: INetStream, remote_key: bytes | None) -> None:
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                log.warning("mailbox: %d streams already open; refusing another", MAX_STREAMS)
                await FramedStream(stream, timeout_s=1).aclose()
                return
            try:
                await service.serve_stream(stream, remote_key)
            finally:
                limiter.release()

        betanet.add_stream_handler(p.MAILBOX_PROTOCOL, on_stream)
        log.info("mailbox: serving %s (PostgreSQL)", p.MAILBOX_PROTOCOL)
        task_status.started(service)
        while True:
            await trio.sleep(EXPIRE_EVERY_S)
            try:
                gone = await service.expire()
            except StoreUnavailable as exc:
                log.warning("mailbox: could not delete expired envelopes: %s", exc)
                continue
            if gone:
                log.info("mailbox: %d expired envelope(s) deleted", gone)
