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
* **Eviction when full**: a deposit that does not fit takes room from a *richer* depositor: an unverified deposit
  from the unverified depositor that holds the most (strictly more than the new one's depositor); a verified deposit
  from unverified depositors first (the richest), then from a richer verified depositor. The evicted envelope is
  that depositor's **newest** (mail that was waiting before a flood began survives it). A deposit with nobody
  richer to take from is refused (``E_FULL``; the sender's node keeps the envelope and retries later).

So ``k`` free keys hold at most ``k`` of ``n`` shares of the unverified part, never the verified part, and every
further honest sender can always get one envelope in while anyone holds more than it does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.errors import NodeError


class QuotaFull(NodeError):
    """A deposit was refused: ``which`` ("recipient" or "depositor") quota of ``limit`` envelopes is reached."""

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

    def verified(self, depositor: bytes) -> bool:
        return depositor in self.trusted


def decide_deposit(policy: QuotaPolicy, held: Sequence[Held], depositor: bytes, size_bytes: int) -> list[int]:
    """The IDs of the envelopes to evict so that a new one of ``size_bytes`` from ``depositor`` fits (usually
    none), or :class:`QuotaFull`. ``held``: the recipient's unexpired envelopes."""
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
    if mine and (len(mine) + 1 > share_n or sum(h.size_bytes for h in mine) + size_bytes > cap_b // n):
        raise QuotaFull("depositor", share_n)
    if size_bytes > cap_b:
        raise QuotaFull("recipient", policy.max_envelopes)
    unverified = [h for h in held if not policy.verified(h.depositor)]
    remaining = list(held)
    evicted: list[int] = []

    def fits() -> bool:
        total_ok = len(remaining) + 1 <= policy.max_envelopes and _bytes(remaining) + size_bytes <= policy.max_bytes
        if verified:
            return total_ok
        return total_ok and len(unverified) + 1 <= cap_n and _bytes(unverified) + size_bytes <= cap_b

    def richer_than_me(pool: list[Held]) -> Held | None:
        """The newest envelope of the depositor in ``pool`` holding the most, if it holds more than we do."""
        mine_now = sum(1 for h in pool if h.depositor == depositor)
        return _newest_of_richest(pool, lambda count: count > mine_now)

    while not fits():
        victim: Held | None
        if verified:
            # Unverified mail goes first (richest first), then verified depositors holding more than this one.
            victim = _newest_of_richest(unverified, lambda _count: True) or richer_than_me(
                [h for h in remaining if policy.verified(h.depositor)]
            )
        else:
            victim = richer_than_me(unverified)
        if victim is None:
            raise QuotaFull("recipient", policy.max_envelopes)
        evicted.append(victim.id)
        remaining = [h for h in remaining if h.id != victim.id]
        unverified = [h for h in unverified if h.id != victim.id]
    return evicted


def _bytes(items: Sequence[Held]) -> int:
    return sum(h.size_bytes for h in items)


def _newest_of_richest(pool: Sequence[Held], eligible: Callable[[int], bool]) -> Held | None:
    """The newest envelope of the depositor holding the most in ``pool`` (ties: the one whose newest envelope is the
    newest), if ``eligible(its count)``."""
    counts: dict[bytes, int] = {}
    newest: dict[bytes, Held] = {}
    for h in pool:
        counts[h.depositor] = counts.get(h.depositor, 0) + 1
        best = newest.get(h.depositor)
        if best is None or (h.deposited_at_ms, h.id) > (best.deposited_at_ms, best.id):
            newest[h.depositor] = h
    if not counts:
        return None
    top = max(counts, key=lambda d: (counts[d], newest[d].deposited_at_ms, newest[d].id))
    return newest[top] if eligible(counts[top]) else None
