"""The mailbox quota policy under any mix of deposits (hypothesis): flooders with many free keys, honest unpinned
senders, pinned senders, envelopes of every size. After every deposit: the recipient's envelopes and bytes are within
bounds, unpinned depositors stay within their part, only :class:`QuotaFull` ever refuses, nothing stored is ever
evicted, and a pinned depositor is never locked out by unpinned ones. Anchor-wide: no flood of free keys locks a new
depositor out of a recipient that proved its key."""

from __future__ import annotations

import contextlib
import os

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from anchor.mailbox import MailboxCore, MailboxLimits, MailboxService, MemoryMailboxStorage
from anchor.mailbox_quota import Held, QuotaFull, QuotaPolicy, decide_deposit
from node.identity import Identity
from node.mailbox.protocol import MailboxError
from node.routing.courier import Envelope, encode_envelope
from tests.anchor.test_mailbox_core import Clock, sealed_for
from tests.anchor.test_mailbox_reserve import prove_by_mail

PINNED = [bytes([0xF0 + i]) * 32 for i in range(2)]
KEYS = [bytes([i]) * 32 for i in range(40)] + PINNED

deposit = st.tuples(st.sampled_from(KEYS), st.integers(min_value=100, max_value=4096))
policies = st.builds(
    QuotaPolicy,
    max_envelopes=st.integers(min_value=4, max_value=64),
    max_bytes=st.integers(min_value=8192, max_value=131_072),
    unverified_share=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    max_per_depositor=st.integers(min_value=1, max_value=32),
    trusted=st.just(frozenset(PINNED)),
)


def check_bounds(policy: QuotaPolicy, held: list[Held]) -> None:
    assert len(held) <= policy.max_envelopes
    assert sum(h.size_bytes for h in held) <= policy.max_bytes
    unpinned = [h for h in held if not policy.verified(h.depositor)]
    assert len(unpinned) <= max(1, int(policy.max_envelopes * policy.unverified_share))
    assert sum(h.size_bytes for h in unpinned) <= max(1, int(policy.max_bytes * policy.unverified_share))


@settings(max_examples=150, deadline=None)
@given(policy=policies, deposits=st.lists(deposit, min_size=1, max_size=300))
def test_any_sequence_of_deposits_keeps_the_bounds_and_the_fairness_rules(
    policy: QuotaPolicy, deposits: list[tuple[bytes, int]]
) -> None:
    held: list[Held] = []
    for t, (who, size) in enumerate(deposits):
        try:
            evict = decide_deposit(policy, held, who, size)
        except QuotaFull:
            continue
        assert evict == []  # mail answered DEPOSITED is never dropped for another deposit
        held = [*held, Held(t, who, size, t)]
        check_bounds(policy, held)


@settings(max_examples=60, deadline=None)
@given(policy=policies, flood=st.lists(deposit, min_size=50, max_size=300))
def test_after_any_flood_a_pinned_sender_still_gets_in(policy: QuotaPolicy, flood: list[tuple[bytes, int]]) -> None:
    held: list[Held] = []
    unpinned_flood = [(who, size) for who, size in flood if not policy.verified(who)]
    for t, (who, size) in enumerate(unpinned_flood):
        try:
            decide_deposit(policy, held, who, size)
        except QuotaFull:
            continue
        held = [*held, Held(t, who, size, t)]
    # A pinned depositor holding nothing gets a small envelope into the room kept for it, whatever the flood did.
    if policy.unverified_share < 1.0:
        assert decide_deposit(policy, held, PINNED[0], 100) == []


# ---------------------------------------------------------------- anchor-wide: free keys vs a proven recipient
flood_step = st.one_of(
    st.tuples(st.just("junk"), st.integers(0, 2**16)),  # a fresh key deposits for an invented recipient
    st.tuples(st.just("prove"), st.integers(0, 2**16)),  # a fresh recipient proves its key (takes a reserve)
    st.tuples(st.just("wait"), st.integers(1, 3_600)),  # seconds pass (the anchor recounts its total)
)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(flood_step, min_size=1, max_size=120),
    max_total=st.integers(1, 30),
    reserve=st.integers(1, 4),
    max_proven=st.integers(1, 8),
)
def test_no_flood_of_free_keys_locks_a_new_depositor_out_of_a_proven_recipient(
    steps: list[tuple[str, int]], max_total: int, reserve: int, max_proven: int
) -> None:
    """Whatever fresh keys deposit for invented recipients, and however many other recipients prove their keys, a
    new depositor's envelope for a recipient that proved its key first is taken while that recipient holds fewer
    than its reserve; and the anchor never holds more than max_total + reserve x max_proven envelopes."""
    anchor, recipient = (Identity.generate() for _ in range(2))
    limits = MailboxLimits(
        max_total=max_total,
        max_per_depositor_total=4,  # (the honest depositor's own envelopes fit: reserve <= 4)
        reserved_per_proven_recipient=reserve,
        max_proven_recipients=max_proven,
    )

    async def main() -> None:
        clock, storage = Clock(), MemoryMailboxStorage()
        service = MailboxService(MailboxCore(anchor.signing_public, limits), storage, clock)
        assert await prove_by_mail(service, recipient) == 1
        expiry = clock() + 86_400_000
        for kind, n in steps:
            if kind == "junk":
                env = encode_envelope(Envelope(n.to_bytes(8, "big"), expiry, 1, os.urandom(100)))
                with contextlib.suppress(MailboxError):
                    await service.deposit(env, os.urandom(32))
            elif kind == "prove":
                await prove_by_mail(service, Identity.generate())  # (with mail waiting, if it fits)
            else:
                clock.ms += n * 1000
            assert await storage.count(None, clock()) <= max_total + reserve * max_proven
        held = await storage.count(recipient.peer_id, clock())
        assert held == 0  # nobody in the flood wrote to it
        for i in range(reserve):  # (one envelope in a reserve per depositor)
            honest = Identity.generate()
            _, new = await service.deposit(sealed_for(honest, recipient, b"%d" % i, expiry), honest.signing_public)
            assert new

    trio.run(main)
