"""The mailbox's admission decision, tested directly (anchor.mailbox_admission: pure functions over MailboxLimits):
when the anchor counts as full, when a proven recipient's reserve takes a deposit, the reserve's quota, a free key's
bound across recipients and how long its mail is kept. The service-level behaviour is in test_mailbox_reserve.py,
test_mailbox_quotas.py and test_mailbox_quota_props.py."""

from __future__ import annotations

import pytest

from anchor import mailbox_admission as admission
from anchor.mailbox_admission import MailboxLimits
from anchor.mailbox_quota import Held, QuotaFull, decide_deposit

TRUSTED = b"T" * 32
FREE = [bytes([i]) * 32 for i in range(1, 9)]


def limits(**kw: object) -> MailboxLimits:
    return MailboxLimits(**kw)  # type: ignore[arg-type]


def test_the_anchor_is_full_at_max_total_and_for_free_keys_at_their_share_when_someone_is_trusted() -> None:
    nobody_trusted = limits(max_total=100, unverified_share=0.75)
    assert admission.unverified_total_cap(nobody_trusted) == 100  # everyone is unverified: the whole total
    assert not admission.needs_reserve(nobody_trusted, 99, verified=False)
    assert admission.needs_reserve(nobody_trusted, 100, verified=False)
    some_trusted = limits(max_total=100, unverified_share=0.75, trusted_depositors=frozenset({TRUSTED}))
    assert admission.unverified_total_cap(some_trusted) == 75
    assert admission.needs_reserve(some_trusted, 75, verified=False)
    assert not admission.needs_reserve(some_trusted, 75, verified=True)  # the trusted part is still open
    assert admission.needs_reserve(some_trusted, 100, verified=True)
    assert admission.unverified_total_cap(limits(max_total=1, unverified_share=0.1, trusted_depositors={TRUSTED})) == 1


def test_only_a_proven_recipients_reserve_takes_a_deposit_and_free_keys_only_below_the_reserve() -> None:
    lim = limits(reserved_per_proven_recipient=4)
    for verified in (False, True):
        assert not admission.reserve_open(lim, proven=False, verified=verified, held_for_recipient=0)
    assert admission.reserve_open(lim, proven=True, verified=False, held_for_recipient=3)
    assert not admission.reserve_open(lim, proven=True, verified=False, held_for_recipient=4)
    # A trusted depositor is not stopped by what free keys hold: its reserve quota counts trusted envelopes only.
    assert admission.reserve_open(lim, proven=True, verified=True, held_for_recipient=4)


def test_the_reserve_policy_is_one_envelope_per_depositor_and_keeps_the_trusted_part() -> None:
    open_reserve = admission.reserve_policy(limits(reserved_per_proven_recipient=4), verified=False)
    assert (open_reserve.max_envelopes, open_reserve.max_per_depositor, open_reserve.unverified_share) == (4, 1, 1.0)
    assert open_reserve.max_verified_envelopes is None
    trusted = limits(reserved_per_proven_recipient=4, reserved_unverified_share=0.5, trusted_depositors={TRUSTED})
    free = admission.reserve_policy(trusted, verified=False)
    mine = admission.reserve_policy(trusted, verified=True)
    assert free.unverified_share == 0.5 and free.max_verified_envelopes is None
    assert mine.max_verified_envelopes == 2  # the half free keys cannot take
    # Applied by the quota: free keys fill their half, one each; the trusted depositor still gets in after them.
    held: list[Held] = []
    for i, key in enumerate(FREE[:2]):
        assert decide_deposit(free, held, key, 100) == []
        held.append(Held(i, key, 100, i))
    with pytest.raises(QuotaFull):
        decide_deposit(free, held, FREE[2], 100)
    with pytest.raises(QuotaFull):  # one envelope per depositor in the reserve
        decide_deposit(free, held[:1], FREE[0], 100)
    assert decide_deposit(mine, [*held, Held(9, FREE[3], 100, 9)], TRUSTED, 100) == []  # 3 free held: not counted
    tiny = admission.reserve_policy(
        limits(reserved_per_proven_recipient=1, reserved_unverified_share=0.5, trusted_depositors={TRUSTED}), True
    )
    assert tiny.max_verified_envelopes == 1  # at least one, however small the reserve


def test_deposit_policy_picks_the_reserve_or_the_regular_quota() -> None:
    lim = limits(max_per_recipient=50, reserved_per_proven_recipient=3)
    assert admission.deposit_policy(lim, verified=False, reserved=False) == lim.quota
    assert admission.deposit_policy(lim, verified=False, reserved=True).max_envelopes == 3
    assert lim.quota.unverified_share == 1.0  # nobody trusted: free keys may use the whole mailbox
    trusted = limits(unverified_share=0.75, trusted_depositors={TRUSTED})
    assert trusted.quota.unverified_share == 0.75 and trusted.quota.trusted == {TRUSTED}


def test_a_free_key_is_bounded_across_recipients_and_its_mail_kept_shorter() -> None:
    lim = limits(max_per_depositor_total=5, keep_unverified_s=60.0)
    assert not admission.depositor_total_full(lim, 4)
    assert admission.depositor_total_full(lim, 5)
    now, expires = 1_000_000, 1_000_000 + 3_600_000
    assert admission.keep_until_ms(lim, expires, now, verified=True) == expires
    assert admission.keep_until_ms(lim, expires, now, verified=False) == now + 60_000
    assert admission.keep_until_ms(lim, now + 1_000, now, verified=False) == now + 1_000  # never past its expiry
