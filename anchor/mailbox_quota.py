"""Who may keep how much in one recipient's mailbox, when depositor identities are free (sans-IO).

A BetaNet key costs nothing to make, so a quota per depositor key alone lets one attacker with a handful of keys fill
a recipient's mailbox for the envelopes' whole lifetime (up to 30 days). The policy here makes such a flood cost the
flooder its own share, never the recipient's mail from senders the anchor knows:

* **Two classes of depositor.** *Verified*: a BetaNet link key the operator pinned (``mailbox.trusted_depositors``:
  the peers' Ed25519 signing keys, as ``village id --json`` shows them). *Unverified*: every other key (the link
  is authenticated, but the key is free), and deposits without a link key (all of those count as one depositor).
* **Bounds per recipient**: at most ``max_envelopes`` envelopes and ``max_bytes`` bytes, of which unverified
  depositors together may use ``unverified_share`` (the rest stays free for verified ones).
* **Fair split with a shrinking cap**: within its class, a depositor may hold at most
  ``min(max_per_depositor, capacity // n)`` envelopes and ``byte capacity // n`` bytes, where ``n`` is the number of
  distinct depositors of that class holding envelopes for the recipient (itself included). Its first envelope is
  always within its share, so a new sender is never refused by the per-depositor cap.
* **No eviction**: an envelope the anchor answered ``DEPOSITED`` for stays until the recipient acknowledges it or
  it expires (the sender's node dropped its copy on that answer). A deposit that does not fit is refused
  (``E_FULL``; the sender's node keeps the envelope and retries later). Mail that was waiting before a flood
  survives it; a flood of free keys fills at most the unverified part, never the room kept for verified depositors.

So ``k`` free keys hold at most ``k`` of ``n`` shares of the unverified part, never the verified part, and never take
an envelope already stored from anybody.

Anchor-wide (``mailbox.max_envelopes_total``), free keys depositing junk for invented recipients can fill the total:
nobody fetches that junk, so it stays until it expires. A recipient that proves its key to the anchor by fetching
mail that waited for it is remembered (:class:`ProvenRecipients`, new entries rate-limited) and keeps a small
reserve beyond the total for deposits from anyone, at most one envelope per depositor, so a flood of fresh keys
cannot lock a new honest depositor out of an anchor's regular recipients (junk sent to them goes at their next
fetch). The reserve is shared fairly by class like the rest: one envelope per depositor, and with trusted
depositors configured, free keys together hold at most ``reserved_unverified_share`` of it (2 of 4 by default), so a
flood of fresh keys leaves the rest of a proven recipient's reserve to its trusted depositors: a trusted deposit into
the reserve is counted against the trusted envelopes the recipient holds only (``max_verified_envelopes``), so junk
that free keys put there before the anchor filled up cannot take it either. With no trusted
depositors every key is free: as many free keys as the reserve holds, aimed at one recipient, can still use it up
until that fetch (no identity is costly to make, and mail answered DEPOSITED is never evicted).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from node.errors import NodeError


class QuotaFull(NodeError):
    """A deposit was refused: ``which`` ("recipient" or "depositor") quota of ``limit`` envelopes is reached, or
    (``which`` = "envelope") the envelope is larger than the ``limit`` bytes its depositor's class may ever hold."""

    def __init__(self, which: str, limit: int) -> None:
        super().__init__(f"mailbox quota per {which} ({limit}) reached")
        self.which = which
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Held:
    """One unexpired envelope a recipient holds, as the quota sees it."""

    id: int
    depositor: bytes
    size_bytes: int
    deposited_at_ms: int


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    max_envelopes: int = 256  # per recipient
    max_bytes: int = 524_288  # per recipient: 256 courier envelopes of ~2 KB
    unverified_share: float = 0.75  # of both, what unverified depositors may use together
    max_per_depositor: int = 32  # the ceiling of one depositor's share (envelopes)
    trusted: frozenset[bytes] = frozenset()  # verified depositors' link keys
    # A proven recipient's reserve (anchor full): a verified depositor is counted against the verified envelopes the
    # recipient holds only, up to this many, so free keys' envelopes (however they got there) never use up the
    # room kept for verified ones. None: against all the envelopes held, up to max_envelopes.
    max_verified_envelopes: int | None = None

    def verified(self, depositor: bytes) -> bool:
        return depositor in self.trusted


def decide_deposit(policy: QuotaPolicy, held: Sequence[Held], depositor: bytes, size_bytes: int) -> list[int]:
    """Admit a new envelope of ``size_bytes`` from ``depositor`` or raise :class:`QuotaFull`. ``held``: the
    recipient's unexpired envelopes. Returns the IDs to evict for it, which is always none: mail the anchor answered
    DEPOSITED for is never dropped to make room (the storage interface keeps the list)."""
    verified = policy.verified(depositor)
    same_class = [h for h in held if policy.verified(h.depositor) == verified]
    mine = [h for h in same_class if h.depositor == depositor]
    if verified:
        cap_n, cap_b = policy.max_envelopes, policy.max_bytes
    else:
        cap_n = max(1, int(policy.max_envelopes * policy.unverified_share))
        cap_b = max(1, int(policy.max_bytes * policy.unverified_share))
    n = len({h.depositor for h in same_class} | {depositor})
    share_n = min(policy.max_per_depositor, max(1, cap_n // n))
    if size_bytes > cap_b:  # would never fit, however long the sender retried
        raise QuotaFull("envelope", cap_b)
    if mine and (len(mine) + 1 > share_n or _bytes(mine) + size_bytes > cap_b // n):
        raise QuotaFull("depositor", share_n)
    if verified and policy.max_verified_envelopes is not None:
        if len(same_class) + 1 > policy.max_verified_envelopes or _bytes(held) + size_bytes > policy.max_bytes:
            raise QuotaFull("recipient", policy.max_verified_envelopes)
    elif len(held) + 1 > policy.max_envelopes or _bytes(held) + size_bytes > policy.max_bytes:
        raise QuotaFull("recipient", policy.max_envelopes)
    if not verified:
        unverified = [h for h in held if not policy.verified(h.depositor)]
        if len(unverified) + 1 > cap_n or _bytes(unverified) + size_bytes > cap_b:
            raise QuotaFull("recipient", policy.max_envelopes)
    return []


def _bytes(items: Sequence[Held]) -> int:
    return sum(h.size_bytes for h in items)


class ProvenRecipients:
    """Recipients that proved their key to this anchor by fetching mail that waited for them, each for ``keep_ms``
    after its last proof; at most ``max_recipients``. When full, a newly proven recipient is not remembered: a flood
    of proofs from free keys never pushes out a recipient that is already known (it refreshes its entry at every
    fetch). New entries are rate-limited, in total (``new_per_hour``, bursts of ``max(4, max_recipients // 16)``) and
    per link key when there is one (``new_per_key_per_hour``, bursts of 4; the table of keys is bounded), so free
    recipient keys cannot fill the table in one go and hold it for ``keep_ms``."""

    def __init__(
        self, max_recipients: int, keep_ms: int, *, new_per_hour: float = 64.0, new_per_key_per_hour: float = 1.0
    ) -> None:
        self.max_recipients = max_recipients
        self.keep_ms = keep_ms
        self._last: OrderedDict[bytes, int] = OrderedDict()  # recipient -> its last proof (ms), oldest first
        self._global = _Bucket(new_per_hour, max(4.0, max_recipients // 16))
        self._per_key: OrderedDict[bytes, _Bucket] = OrderedDict()  # link key -> its bucket, least recent first
        self._new_per_key_per_hour = new_per_key_per_hour

    def __len__(self) -> int:
        return len(self._last)

    def note(self, recipient_id: bytes, now_ms: int, link_key: bytes = b"") -> bool:
        """``recipient_id`` proved its key now (over a link authenticated as ``link_key``; b"": none). False if it
        could not be remembered (full of live entries, or over the rate of new entries)."""
        while self._last and next(iter(self._last.values())) + self.keep_ms <= now_ms:
            self._last.popitem(last=False)
        if recipient_id not in self._last:
            if len(self._last) >= self.max_recipients:
                return False
            bucket = None
            if link_key:  # (the gateway's fetches have none: its clients are authenticated by it, and rate-limited)
                bucket = self._per_key.pop(link_key, None) or _Bucket(self._new_per_key_per_hour, 4.0)
                self._per_key[link_key] = bucket
                while len(self._per_key) > self.max_recipients:
                    self._per_key.popitem(last=False)
            if not ((bucket is None or bucket.can(now_ms)) and self._global.can(now_ms)):
                return False
            if bucket is not None:
                bucket.take(now_ms)
            self._global.take(now_ms)
        self._last.pop(recipient_id, None)
        self._last[recipient_id] = now_ms
        return True

    def knows(self, recipient_id: bytes, now_ms: int) -> bool:
        at = self._last.get(recipient_id)
        return at is not None and at + self.keep_ms > now_ms


class _Bucket:
    """A token bucket refilled at ``per_hour``, holding at most ``burst`` (starts full)."""

    __slots__ = ("_at_ms", "_burst", "_per_ms", "_tokens")

    def __init__(self, per_hour: float, burst: float) -> None:
        self._per_ms = per_hour / 3_600_000
        self._burst = burst
        self._tokens = burst
        self._at_ms: int | None = None

    def can(self, now_ms: int) -> bool:
        if self._at_ms is not None:
            self._tokens = min(self._burst, self._tokens + max(0, now_ms - self._at_ms) * self._per_ms)
        self._at_ms = now_ms
        return self._tokens >= 1.0 - 1e-9  # (a whole token after exactly 1 / per_hour hours)

    def take(self, now_ms: int) -> None:
        self.can(now_ms)
        self._tokens -= 1.0
