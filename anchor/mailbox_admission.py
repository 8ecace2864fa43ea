"""Whether the anchor takes a deposit, and under which quota (sans-IO: numbers in, a decision out).

:class:`MailboxLimits` holds every bound of the mailbox. The functions here decide, for one deposit, what
:meth:`anchor.mailbox.MailboxService.deposit` then applies atomically with the insert (the per-recipient split itself
is :func:`anchor.mailbox_quota.decide_deposit`):

* :func:`needs_reserve`: the anchor is full (``max_total``; for unverified depositors, their share of it when
  trusted depositors are configured), so the deposit can only go into a proven recipient's reserve;
* :func:`reserve_open`: that reserve takes it (the recipient proved its key here; a trusted depositor is always
  let through to the quota, an unverified one only while the recipient holds fewer than the reserve);
* :func:`reserve_policy` / :func:`deposit_policy`: the quota the insert is checked against;
* :func:`depositor_total_full` and :func:`keep_until_ms`: a free key's bound across recipients and its shorter keep.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from anchor.mailbox_quota import QuotaPolicy
from node.mailbox.settings import MailboxSection


@dataclass(frozen=True, slots=True)
class MailboxLimits:
    max_envelope_bytes: int = 4096  # courier envelopes are at most ~2 KB (node.routing.courier.MAX_SEALED_BYTES)
    max_per_recipient: int = 256
    max_bytes_per_recipient: int = 524_288  # envelope bytes kept for one recipient
    # The most envelopes one depositor (BetaNet key) may hold for one recipient; its share shrinks below this as
    # more depositors hold envelopes for that recipient (anchor.mailbox_quota).
    max_per_depositor: int = 32
    unverified_share: float = 0.75  # of a recipient's envelopes and bytes, what unpinned depositors may use together
    trusted_depositors: frozenset[bytes] = frozenset()  # pinned BetaNet keys (Ed25519): verified depositors
    max_total: int = 100_000
    # Fairness at the anchor-wide level (free keys filling max_total with junk for invented recipients): with
    # trusted depositors, unverified ones may fill only unverified_share of max_total; one unverified key holds at
    # most this many envelopes across all recipients; an unverified deposit is kept at most keep_unverified_s.
    max_per_depositor_total: int = 1000
    keep_unverified_s: float = 7 * 86_400.0
    # Room beyond max_total for recipients that proved their key here (a FETCH): free keys depositing junk for
    # invented recipients can fill max_total (nobody fetches junk for an invented recipient), but a recipient that
    # fetches keeps room for this many envelopes from anyone, so a new honest depositor is not locked out of it.
    # Proven recipients are remembered for proven_recipient_s after their last proof, at most max_proven_recipients
    # (when full, a newly proven recipient is not remembered: a flood of proofs never pushes out a known one), so
    # the anchor holds at most max_total + reserved_per_proven_recipient x max_proven_recipients envelopes (one per
    # depositor in a reserve). Proven = fetched mail that waited; new ones rate-limited (anchor.mailbox_quota).
    reserved_per_proven_recipient: int = 4
    # With trusted depositors configured, unverified (free) keys together may hold at most this share of a proven
    # recipient's envelopes while the anchor is full (floor, at least 1): 2 of the 4 by default, the rest is kept for
    # trusted depositors. One envelope per depositor in the reserve either way. With no trusted depositors
    # everyone is unverified and the whole reserve is open to anyone (so as many free keys as the reserve can fill
    # it until the recipient's next fetch: nothing DEPOSITED is ever evicted).
    reserved_unverified_share: float = 0.5
    max_proven_recipients: int = 4096
    proven_recipient_s: float = 30 * 86_400.0
    new_proven_per_hour: float = 64.0
    new_proven_per_key_per_hour: float = 1.0
    max_expiry_s: float = 30 * 86_400.0  # deposits expiring further out are refused
    challenge_ttl_s: float = 30.0
    grant_ttl_s: float = 60.0
    max_challenges: int = 4096  # outstanding; the oldest is forgotten beyond this
    max_grants: int = 4096
    max_fetch: int = 64  # envelopes per FETCH answer
    stream_timeout_s: float = 30.0  # per request (a silent peer is dropped after this)
    stream_deadline_s: float = 300.0  # whole stream: a peer trickling requests cannot hold one open forever
    max_streams_per_key: int = 4  # streams one BetaNet key may have open at once
    max_requests_per_stream: int = 1024
    deposits_per_peer_per_min: float = 120.0  # token bucket per depositor (its BetaNet key), burst of as many
    max_depositors: int = 4096  # depositors tracked; the least recent is forgotten (starts with a full bucket)

    @classmethod
    def from_config(cls, m: MailboxSection) -> MailboxLimits:
        return cls(
            max_envelope_bytes=m.max_envelope_bytes,
            max_per_recipient=m.max_envelopes_per_recipient,
            max_bytes_per_recipient=m.max_bytes_per_recipient,
            unverified_share=m.unverified_share,
            trusted_depositors=frozenset(bytes.fromhex(k) for k in m.trusted_depositors),
            max_total=m.max_envelopes_total,
            max_per_depositor_total=m.max_envelopes_per_depositor_total,
            keep_unverified_s=m.keep_unverified_s,
            max_expiry_s=m.max_expiry_s,
            challenge_ttl_s=m.challenge_ttl_s,
            stream_timeout_s=m.request_timeout_s,
            deposits_per_peer_per_min=m.deposits_per_peer_per_min,
        )

    @property
    def quota(self) -> QuotaPolicy:
        return QuotaPolicy(
            max_envelopes=self.max_per_recipient,
            max_bytes=self.max_bytes_per_recipient,
            # Without trusted depositors there is nobody to keep room for: unverified ones may use all of it.
            unverified_share=self.unverified_share if self.trusted_depositors else 1.0,
            max_per_depositor=self.max_per_depositor,
            trusted=self.trusted_depositors,
        )


def unverified_total_cap(limits: MailboxLimits) -> int:
    """How much of ``max_total`` unverified depositors may fill together: all of it when nobody is trusted."""
    if not limits.trusted_depositors:
        return limits.max_total
    return max(1, int(limits.max_total * limits.unverified_share))


def needs_reserve(limits: MailboxLimits, total: int, verified: bool) -> bool:
    """Whether the anchor, holding ``total`` envelopes, is full for this depositor: then only a proven recipient's
    reserve can take the deposit (free keys may have filled the anchor with junk for invented recipients)."""
    return total >= limits.max_total or (not verified and total >= unverified_total_cap(limits))


def reserve_open(limits: MailboxLimits, *, proven: bool, verified: bool, held_for_recipient: int) -> bool:
    """Whether a full anchor still takes a deposit for a recipient: only one that proved its key here (``proven``);
    a trusted depositor then goes on to the reserve policy (counted against the trusted envelopes held only), an
    unverified one only while the recipient holds fewer envelopes (``held_for_recipient``, any depositor's) than
    the reserve."""
    return proven and (verified or held_for_recipient < limits.reserved_per_proven_recipient)


def reserve_policy(limits: MailboxLimits, verified: bool) -> QuotaPolicy:
    """A deposit into a proven recipient's reserve: one envelope per depositor, at most the reserve in all, and
    (with trusted depositors) unverified keys together at most ``reserved_unverified_share`` of it (floor, at
    least 1); a trusted depositor is counted against the trusted envelopes held only, up to the rest (at least
    1), so junk free keys deposited for the recipient before the anchor filled up cannot take that room."""
    reserve = limits.reserved_per_proven_recipient
    free_part = max(1, int(reserve * limits.reserved_unverified_share))
    return dataclasses.replace(
        limits.quota,
        max_envelopes=reserve,
        max_per_depositor=1,
        unverified_share=limits.reserved_unverified_share if limits.trusted_depositors else 1.0,
        max_verified_envelopes=max(1, reserve - free_part) if verified and limits.trusted_depositors else None,
    )


def deposit_policy(limits: MailboxLimits, *, verified: bool, reserved: bool) -> QuotaPolicy:
    """The quota a deposit's insert is checked against: the reserve's, or the regular per-recipient one."""
    return reserve_policy(limits, verified) if reserved else limits.quota


def depositor_total_full(limits: MailboxLimits, held_by_depositor: int) -> bool:
    """Whether an unverified key already holds the most envelopes it may across all recipients (so it cannot take
    the anchor-wide room by spreading junk over invented recipients)."""
    return held_by_depositor >= limits.max_per_depositor_total


def keep_until_ms(limits: MailboxLimits, expires_at_ms: int, now_ms: int, verified: bool) -> int:
    """Until when the anchor keeps the envelope: its expiry, and for an unverified depositor at most
    ``keep_unverified_s`` from now."""
    if verified:
        return expires_at_ms
    return min(expires_at_ms, now_ms + int(limits.keep_unverified_s * 1000))
