"""The mailbox quota policy under any mix of deposits (hypothesis): flooders with many free keys, honest unpinned
senders, pinned senders, envelopes of every size. After every deposit: the recipient's envelopes and bytes are within
bounds, unpinned depositors stay within their part, only :class:`QuotaFull` ever refuses, evictions only hit
depositors holding more than the one depositing (unpinned) or unpinned ones first (pinned), and a pinned depositor
and a new unpinned sender are never locked out."""

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
        counts = {d: sum(1 for h in held if h.depositor == d) for d in {h.depositor for h in held}}
        try:
            evict = decide_deposit(policy, held, who, size)
        except QuotaFull:
            continue
        gone = [h for h in held if h.id in evict]
        assert len(gone) == len(evict) == len(set(evict))
        for victim in gone:
            if policy.verified(who):
                assert not policy.verified(victim.depositor) or counts[victim.depositor] > counts.get(who, 0)
            else:  # an unpinned deposit only takes from an unpinned depositor holding more than it does
                assert not policy.verified(victim.depositor) and counts[victim.depositor] > counts.get(who, 0)
        held = [h for h in held if h.id not in evict] + [Held(t, who, size, t)]
        check_bounds(policy, held)


@settings(max_examples=60, deadline=None)
@given(policy=policies, flood=st.lists(deposit, min_size=50, max_size=300))
def test_after_any_flood_a_new_sender_and_a_pinned_one_still_get_in(
    policy: QuotaPolicy, flood: list[tuple[bytes, int]]
) -> None:
    held: list[Held] = []
    unpinned_flood = [(who, size) for who, size in flood if not policy.verified(who)]
    for t, (who, size) in enumerate(unpinned_flood):
        try:
            evict = decide_deposit(policy, held, who, size)
        except QuotaFull:
            continue
        held = [h for h in held if h.id not in evict] + [Held(t, who, size, t)]
    # A pinned depositor holding nothing gets a small envelope in whatever the flood did.
    assert isinstance(decide_deposit(policy, held, PINNED[0], 100), list)
    # So does a fresh unpinned sender: every flooder holds more than it (nothing), so it may take their room.
    assert isinstance(decide_deposit(policy, held, b"\xee" * 32, 100), list)
