"""The mailbox quota policy under any mix of deposits (hypothesis): flooders with many free keys, honest unpinned
senders, pinned senders, envelopes of every size. After every deposit: the recipient's envelopes and bytes are within
bounds, unpinned depositors stay within their part, only :class:`QuotaFull` ever refuses, nothing stored is ever
evicted, and a pinned depositor is never locked out by unpinned ones."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anchor.mailbox_quota import Held, QuotaFull, QuotaPolicy, decide_deposit

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
