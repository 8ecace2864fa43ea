"""A proven recipient's reserve beyond a full anchor (review of the adversary work): free keys can neither use up
one recipient's reserve with one key, nor fill the table of proven recipients with throwaway recipients."""

from __future__ import annotations

import contextlib
import os

import pytest

from anchor.mailbox import MailboxCore, MailboxLimits, MailboxService, MemoryMailboxStorage
from anchor.mailbox_quota import ProvenRecipients
from node.identity import Identity
from node.mailbox.protocol import MailboxError, make_proof
from node.routing.courier import Envelope, encode_envelope
from tests.anchor.test_mailbox_core import Clock, sealed_for


async def prove_by_mail(service: MailboxService, recipient: Identity, link_key: bytes | None = None) -> int:
    """``recipient`` gets one envelope from a fresh sender, fetches it (a proof with mail waiting) and acks it.
    Returns how many envelopes the fetch gave."""
    sender = Identity.generate()
    with contextlib.suppress(MailboxError):
        await service.deposit(sealed_for(sender, recipient, b"hello"), sender.signing_public)
    proof = make_proof(recipient, service.core.anchor_key, service.challenge())
    grant, items = await service.fetch(proof, 10, link_key)
    await service.ack(grant.token, [i.id for i in items])
    return len(items)


async def fill_with_junk(service: MailboxService, clock: Clock, expiry: int) -> int:
    """Fresh keys deposit 5 envelopes each for invented recipients until the anchor is full; how many it stored."""
    stored = 0
    for _ in range(10):
        key = os.urandom(32)
        clock.ms += 1000  # (the anchor recounts its total at most once a second)
        with contextlib.suppress(MailboxError):
            for _ in range(5):
                await service.deposit(encode_envelope(Envelope(os.urandom(8), expiry, 1, os.urandom(200))), key)
                stored += 1
    clock.ms += 1000
    return stored


async def test_one_free_key_cannot_use_up_a_proven_recipients_reserve() -> None:
    """A throwaway key's junk for C took C's whole reserve (every envelope for C counted, whoever sent it), and C's
    honest correspondent was refused. Now one depositor holds at most one envelope in a recipient's reserve."""
    anchor, a, c = (Identity.generate() for _ in range(3))
    limits = MailboxLimits(max_total=20, max_per_depositor_total=5, reserved_per_proven_recipient=2)
    clock = Clock()
    service = MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), clock)
    assert await prove_by_mail(service, c) == 1
    expiry = clock() + 86_400_000
    await fill_with_junk(service, clock, expiry)
    junk_key = os.urandom(32)
    await service.deposit(encode_envelope(Envelope(c.peer_id, expiry, 1, os.urandom(200))), junk_key)
    with pytest.raises(MailboxError, match="full"):  # its second junk envelope for C: not into the reserve
        await service.deposit(encode_envelope(Envelope(c.peer_id, expiry, 1, os.urandom(200))), junk_key)
    _, new = await service.deposit(sealed_for(a, c, b"hi c"), a.signing_public)
    assert new
    with pytest.raises(MailboxError, match="full"):  # the reserve stays bounded
        await service.deposit(sealed_for(Identity.generate(), c, b"one too many"), os.urandom(32))
    assert service.core.counters.reserved == 2


async def test_throwaway_recipients_cannot_fill_the_table_of_proven_recipients() -> None:
    """4,096 fetches by throwaway recipients filled the proven table for 30 days, and an honest recipient proving
    itself afterwards got no reserve. Now only a fetch with mail waiting proves a recipient, and new proven
    recipients are rate-limited per link key and in total."""
    anchor, a, e = (Identity.generate() for _ in range(3))
    limits = MailboxLimits(
        max_total=20, max_per_depositor_total=5, reserved_per_proven_recipient=2, max_proven_recipients=8
    )
    clock = Clock()
    service = MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), clock)
    for _ in range(8):  # throwaway recipients fetch (nothing waits for them)
        throwaway = Identity.generate()
        await service.fetch(make_proof(throwaway, anchor.signing_public, service.challenge()), 10)
    assert len(service.core.proven) == 0
    for _ in range(8):  # ... and with junk waiting for each (each fetching over its own free link key)
        clock.ms += 1000
        throwaway = Identity.generate()
        await service.deposit(
            encode_envelope(Envelope(throwaway.peer_id, clock() + 3_600_000, 1, os.urandom(200))), os.urandom(32)
        )
        proof = make_proof(throwaway, anchor.signing_public, service.challenge())
        _, items = await service.fetch(proof, 10, throwaway.signing_public)
        assert items
    assert len(service.core.proven) == 4  # the burst of new proven recipients; then 64 an hour
    clock.ms += 120_000
    assert await prove_by_mail(service, e) == 1  # the honest recipient proves itself afterwards
    assert service.core.proven.knows(e.peer_id, clock())
    expiry = clock() + 86_400_000
    await fill_with_junk(service, clock, expiry)
    _, new = await service.deposit(sealed_for(a, e, b"hi e"), a.signing_public)
    assert new


def test_new_proven_recipients_are_rate_limited_per_link_key_and_in_total() -> None:
    table = ProvenRecipients(1000, 86_400_000, new_per_hour=10.0, new_per_key_per_hour=1.0)
    key = b"k" * 32
    assert [table.note(os.urandom(8), 0, key) for _ in range(6)] == [True] * 4 + [False] * 2  # burst of 4 per key
    assert table.note(os.urandom(8), 3_600_000, key)  # one an hour after that
    known = os.urandom(8)
    others = [table.note(os.urandom(8) if i else known, 3_600_000, os.urandom(32)) for i in range(200)]
    assert sum(others) < 200 and others[0]  # the global burst (max(4, 1000 // 16) = 62) runs out
    assert table.note(known, 3_600_001, key)  # refreshing a known recipient is never limited
    assert len(table) <= 4 + 1 + 62 + 1


async def test_free_keys_hold_at_most_their_share_of_a_proven_recipients_reserve() -> None:
    """Review leftover: as many fresh keys as the reserve (4) took all of a proven recipient's reserve, and its
    trusted correspondent was refused while the anchor was full. Now, with trusted depositors set, free keys
    together hold at most ``reserved_unverified_share`` of it (2 of 4) and the rest stays open to trusted ones."""
    anchor, c, t = (Identity.generate() for _ in range(3))
    limits = MailboxLimits(
        max_total=20,
        max_per_depositor_total=5,
        reserved_per_proven_recipient=4,
        trusted_depositors=frozenset({t.signing_public}),
    )
    clock = Clock()
    service = MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), clock)
    assert await prove_by_mail(service, c) == 1
    expiry = clock() + 86_400_000
    assert await fill_with_junk(service, clock, expiry) == 15  # free keys: 3/4 of the total
    for _ in range(5):  # the trusted sender's own traffic for others fills the rest of the total
        clock.ms += 1000
        await service.deposit(encode_envelope(Envelope(os.urandom(8), expiry, 1, os.urandom(200))), t.signing_public)
    clock.ms += 1000
    with pytest.raises(MailboxError, match="anchor's mailbox is full"):
        await service.deposit(sealed_for(t, Identity.generate(), b"x"), t.signing_public)  # not proven: no reserve
    free = [Identity.generate() for _ in range(3)]
    for who in free[:2]:
        _, new = await service.deposit(sealed_for(who, c, b"junk"), who.signing_public)
        assert new
    with pytest.raises(MailboxError, match="full"):  # a third free key: the free share of c's reserve is used up
        await service.deposit(sealed_for(free[2], c, b"junk"), free[2].signing_public)
    _, new = await service.deposit(sealed_for(t, c, b"hi c"), t.signing_public)  # the trusted sender still gets in
    assert new and service.core.counters.reserved == 3


async def test_junk_deposited_before_the_anchor_filled_up_does_not_take_the_trusted_part_of_the_reserve() -> None:
    """Review (cleanup_agents 1): one free key put 4 junk envelopes for proven c through the normal path while the
    anchor was not full; free keys then filled the anchor; the reserve counted every envelope c held, so the
    trusted depositor's mail for c was refused E_FULL. Now a trusted deposit counts trusted envelopes only."""
    anchor, c, t, t2 = (Identity.generate() for _ in range(4))
    limits = MailboxLimits(
        max_total=20,
        max_per_depositor_total=5,
        reserved_per_proven_recipient=4,
        trusted_depositors=frozenset({t.signing_public, t2.signing_public}),
    )
    clock = Clock()
    service = MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), clock)
    assert await prove_by_mail(service, c) == 1
    expiry = clock() + 86_400_000
    k = Identity.generate()
    for i in range(4):
        clock.ms += 1000
        _, new = await service.deposit(sealed_for(k, c, b"junk%d" % i), k.signing_public)
        assert new
    assert await service.storage.count(c.peer_id, clock()) == 4
    assert await fill_with_junk(service, clock, expiry) == 11  # free keys: 15 of the 20 in all
    for _ in range(5):  # the trusted sender's own traffic for others fills the rest of the total
        clock.ms += 1000
        await service.deposit(encode_envelope(Envelope(os.urandom(8), expiry, 1, os.urandom(200))), t.signing_public)
    clock.ms += 1000
    assert await service.storage.count(None, clock()) == 20
    late = Identity.generate()  # a free key gets no more of c's reserve: the junk already holds the free part
    with pytest.raises(MailboxError, match="full"):
        await service.deposit(sealed_for(late, c, b"more junk"), late.signing_public)
    for who in (t, t2):  # the trusted part of the reserve (4 - 2) is still theirs
        _, new = await service.deposit(sealed_for(who, c, b"hi c"), who.signing_public)
        assert new
    assert service.core.counters.reserved == 2
    with pytest.raises(MailboxError, match="full"):  # and no more than that
        await service.deposit(sealed_for(t, c, b"again"), t.signing_public)
