"""Mailbox flooding (security reviews): depositor keys are free, so neither one depositor nor many fresh keys can
fill a recipient's mailbox and deny it service (fair shares that shrink as depositors grow, a byte bound, room kept
for pinned depositors, and never an eviction: mail answered DEPOSITED stays); the per-recipient bound holds under
concurrent deposits (decision and insert are atomic in PostgreSQL); and the node's client keeps an envelope the
anchor refused as full and retries it."""

from __future__ import annotations

import contextlib
import os

import pytest
import trio
import trio.testing

from anchor.mailbox import (
    MailboxCore,
    MailboxLimits,
    MailboxService,
    MailboxStorage,
    MemoryMailboxStorage,
    PostgresMailboxStorage,
)
from anchor.mailbox_quota import Held, QuotaFull, QuotaPolicy, decide_deposit
from anchor.stores.postgres import PostgresStore
from node.errors import ConfigError
from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.client import MailboxClient
from node.mailbox.protocol import MailboxError, make_proof
from node.mailbox.settings import MailboxSection
from node.mailbox.stream import FramedStream
from node.routing.courier import Envelope, decode_envelope_untrusted, encode_envelope, open_untrusted
from node.settings import config_from_mapping
from node.transports.betanet.transport import BetanetTransport
from tests.anchor.test_mailbox_core import Clock, TrioAdapter, sealed_for
from tests.anchor.test_mailbox_reserve import fill_with_junk, prove_by_mail
from tests.transports.test_betanet import LOOPBACK


async def test_one_depositor_cannot_fill_a_recipients_mailbox() -> None:
    anchor, a, b, c = (Identity.generate() for _ in range(4))
    limits = MailboxLimits(max_per_recipient=5, max_per_depositor=2)
    service = MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), Clock())
    first = sealed_for(a, c, b"a0")
    await service.deposit(first, a.signing_public)
    await service.deposit(sealed_for(a, c, b"a1"), a.signing_public)
    with pytest.raises(MailboxError, match="this depositor's share") as full:
        await service.deposit(sealed_for(a, c, b"a2"), a.signing_public)
    assert full.value.code == p.E_FULL
    await service.deposit(sealed_for(a, Identity.generate(), b"elsewhere"), a.signing_public)  # another recipient
    await service.deposit(sealed_for(b, c, b"b0"), b.signing_public)  # c still receives from others
    assert (await service.deposit(first, a.signing_public))[1] is False  # a retried deposit is no new envelope
    assert service.core.counters.deposits_refused == 1


async def test_concurrent_deposits_never_overshoot_the_recipient_bound(pg_dsn: str) -> None:
    anchor, c = Identity.generate(), Identity.generate()
    depositors = [Identity.generate() for _ in range(12)]
    async with PostgresStore(pg_dsn, max_connections=6) as store:
        limits = MailboxLimits(  # 3 of 4 for unpinned depositors (room kept for a pinned one)
            max_per_recipient=4,
            deposits_per_peer_per_min=1000,
            trusted_depositors=frozenset({Identity.generate().signing_public}),
        )
        service = MailboxService(MailboxCore(anchor.signing_public, limits), PostgresMailboxStorage(store), Clock())
        await service.deposit(sealed_for(depositors[0], Identity.generate(), b"warm"))  # migrations run once
        outcomes: list[str] = []

        async def deposit(who: Identity) -> None:
            try:
                await service.deposit(sealed_for(who, c, who.peer_id), who.signing_public)
                outcomes.append("stored")
            except MailboxError as exc:
                outcomes.append(p.ERROR_NAMES[exc.code])

        async with trio.open_nursery() as nursery:
            for who in depositors:
                nursery.start_soon(deposit, who)
        # Twelve depositors with one envelope each: the first three fill the unpinned part (3 of 4), the others are
        # refused (they retry); nothing stored is evicted.
        assert sorted(outcomes) == ["full"] * 9 + ["stored"] * 3
        assert await store.mailbox_count(c.peer_id, Clock()()) == 3
        assert service.core.counters.evicted == 0


async def test_the_client_keeps_an_envelope_refused_as_full_and_deposits_the_others() -> None:
    anchor, me, c, d, friend = (Identity.generate() for _ in range(5))
    limits = MailboxLimits(max_per_recipient=1, trusted_depositors=frozenset({friend.signing_public}))
    storage = MemoryMailboxStorage()
    service = MailboxService(MailboxCore(anchor.signing_public, limits), storage, Clock())
    # c's mailbox is full, with a pinned depositor's envelope that an unpinned one cannot evict.
    await service.deposit(sealed_for(friend, c, b"already there"), friend.signing_public)
    addr = f"/ip4/127.0.0.1/tcp/4001/p2p/{BetanetTransport(anchor, LOOPBACK).peer_id}"
    client = MailboxClient(me, MailboxSection(anchors=(addr,)), BetanetTransport(me, LOOPBACK), lambda _: True)
    target = client.anchors[0]
    for_c, for_d = sealed_for(me, c, b"waits"), sealed_for(me, d, b"goes")
    client.on_sealed(for_c)
    client.on_sealed(for_d)
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.serve_stream, TrioAdapter(right), me.signing_public)
        framed = FramedStream(TrioAdapter(left), timeout_s=5)
        assert await client._deposit_all(target, framed) == 1
        assert list(target.pending) == [for_c]  # kept for a retry, not dropped
        assert (client.counters.deposited, client.counters.deposits_refused) == (1, 0)
        assert client.counters.deposits_deferred == 1
        # c fetches its envelope, so the retry goes through.
        storage.rows.clear()
        assert await client._deposit_all(target, framed) == 0
        assert not target.pending and client.counters.deposited == 2
        await framed.aclose()


# ---------------------------------------------------------------- free identities (issue 13)
@pytest.mark.parametrize("storage_kind", ["memory", "postgres"])
async def test_a_flood_of_free_keys_never_drops_mail_already_deposited(
    storage_kind: str, request: pytest.FixtureRequest
) -> None:
    """Security review: the eviction policy deleted mail the anchor had answered DEPOSITED for (the sender's node
    then drops its copy), so 200 fresh keys cut down a friend's waiting mail and every honest newcomer's envelope
    went on the next flooder's deposit. Now: mail that was waiting before a flood survives it, every envelope
    answered DEPOSITED is fetched, the flood holds the unpinned part only, and a pinned depositor still gets in."""
    anchor, mallory, c, friend, pinned, honest = (Identity.generate() for _ in range(6))
    limits = MailboxLimits(trusted_depositors=frozenset({pinned.signing_public}))  # the defaults otherwise
    async with contextlib.AsyncExitStack() as stack:
        if storage_kind == "postgres":
            store = await stack.enter_async_context(PostgresStore(request.getfixturevalue("pg_dsn")))
            storage: MailboxStorage = PostgresMailboxStorage(store)
        else:
            storage = MemoryMailboxStorage()
        clock = Clock()
        service = MailboxService(MailboxCore(anchor.signing_public, limits), storage, clock)
        answered: set[bytes] = set()  # texts of every envelope the anchor answered DEPOSITED for
        for i in range(10):  # an (unpinned) friend's mail, waiting before the flood
            clock.ms += 1000
            await service.deposit(sealed_for(friend, c, b"friend %d" % i), friend.signing_public)
            answered.add(b"friend %d" % i)
        refused = 0
        for i in range(200):  # 200 fresh keys, one envelope each, interleaved with honest newcomers
            clock.ms += 10
            try:
                await service.deposit(sealed_for(mallory, c, b"spam %d" % i), os.urandom(32))
            except MailboxError as exc:
                assert exc.code == p.E_FULL
                refused += 1
            if i % 20 == 0:
                h = Identity.generate()
                try:
                    await service.deposit(sealed_for(h, c, b"honest %d" % i), h.signing_public)
                    answered.add(b"honest %d" % i)
                except MailboxError as exc:
                    assert exc.code == p.E_FULL  # refused, so its node keeps it and retries
        assert refused > 0 and service.core.counters.evicted == 0
        assert await storage.count(c.peer_id, clock()) == 192  # 3/4 of 256: the unpinned part
        # The pinned depositor still gets its mail in (the room kept for it); an unpinned newcomer waits.
        for i in range(limits.max_per_depositor):
            await service.deposit(sealed_for(pinned, c, b"p%d" % i), pinned.signing_public)
            answered.add(b"p%d" % i)
        with pytest.raises(MailboxError) as full:
            await service.deposit(sealed_for(honest, c, b"hi c"), honest.signing_public)
        assert full.value.code == p.E_FULL
        # c fetches: every envelope it was told was deposited is there.
        got: list[bytes] = []
        while True:
            grant, items = await service.fetch(make_proof(c, anchor.signing_public, service.challenge()), 64)
            if not items:
                break
            got += [open_untrusted(decode_envelope_untrusted(i.envelope), c.noise_private)[1] for i in items]
            await service.ack(grant.token, [i.id for i in items])
        assert answered <= set(got)
        assert {b"friend %d" % i for i in range(10)} <= set(got)


@pytest.mark.parametrize("storage_kind", ["memory", "postgres"])
async def test_a_copy_with_a_shorter_expiry_does_not_preempt_the_senders_deposit(
    storage_kind: str, request: pytest.FixtureRequest
) -> None:
    """Security review: dedupe ignored the expiry, so a courier holding a copy deposited it first with a 61-second
    expiry; the sender's own deposit was then a "duplicate" (dropped from its queue) and the mail vanished a minute
    later (and the short copy cannot even be opened: the expiry is bound into the Noise prologue)."""
    anchor, alice, bob = (Identity.generate() for _ in range(3))
    async with contextlib.AsyncExitStack() as stack:
        if storage_kind == "postgres":
            store = await stack.enter_async_context(PostgresStore(request.getfixturevalue("pg_dsn")))
            storage: MailboxStorage = PostgresMailboxStorage(store)
        else:
            storage = MemoryMailboxStorage()
        clock = Clock()
        service = MailboxService(MailboxCore(anchor.signing_public, MailboxLimits()), storage, clock)
        honest = sealed_for(alice, bob, b"meet at 6", clock() + 7 * 86_400_000)
        env = decode_envelope_untrusted(honest)
        forged = encode_envelope(Envelope(env.recipient_id, clock() + 61_000, 1, env.sealed))
        assert (await service.deposit(forged, os.urandom(32)))[1] is True
        _, new = await service.deposit(honest, alice.signing_public)
        assert new  # its own envelope, not the courier's copy
        assert (await service.deposit(honest, alice.signing_public))[1] is False  # a retry still dedupes
        clock.ms += 62_000
        _, items = await service.fetch(make_proof(bob, anchor.signing_public, service.challenge()), 64)
        assert [open_untrusted(decode_envelope_untrusted(i.envelope), bob.noise_private)[1] for i in items] == [
            b"meet at 6"
        ]


@pytest.mark.parametrize("storage_kind", ["memory", "postgres"])
async def test_free_keys_cannot_take_the_anchor_wide_room(storage_kind: str, request: pytest.FixtureRequest) -> None:
    """Security review: max_envelopes_total was a plain refusal, so fresh keys depositing junk for invented
    recipients filled it and every honest deposit for every recipient was refused for up to 30 days. Now one key
    holds a bounded number across recipients, unverified keys together leave the trusted part free, and their
    envelopes are kept a shorter time."""
    anchor, a, b, friend = (Identity.generate() for _ in range(4))
    limits = MailboxLimits(
        max_total=40,
        max_per_depositor_total=10,
        unverified_share=0.75,
        trusted_depositors=frozenset({friend.signing_public}),
    )
    async with contextlib.AsyncExitStack() as stack:
        if storage_kind == "postgres":
            store = await stack.enter_async_context(PostgresStore(request.getfixturevalue("pg_dsn")))
            storage: MailboxStorage = PostgresMailboxStorage(store)
        else:
            storage = MemoryMailboxStorage()
        clock = Clock()
        service = MailboxService(MailboxCore(anchor.signing_public, limits), storage, clock)
        expiry = clock() + 30 * 86_400_000 - 60_000

        def junk() -> bytes:  # for an invented recipient, junk "sealed" bytes
            return encode_envelope(Envelope(os.urandom(8), expiry, 1, os.urandom(200)))

        key = os.urandom(32)
        for _ in range(10):
            await service.deposit(junk(), key)
        with pytest.raises(MailboxError, match="this depositor holds 10") as one_key:
            await service.deposit(junk(), key)
        assert one_key.value.code == p.E_FULL
        stored = 10
        while True:  # more fresh keys: together they fill the unverified part (30 of 40), no more
            k = os.urandom(32)
            clock.ms += 1000  # the anchor recounts its total at most once a second
            try:
                for _ in range(10):
                    await service.deposit(junk(), k)
                    stored += 1
            except MailboxError as exc:
                assert exc.code == p.E_FULL and "anchor's mailbox is full" in str(exc)
                break
        assert 30 <= stored <= 30 + 10  # the anchor's count is refreshed once a second: it may lag one key's 10
        clock.ms += 1000
        with pytest.raises(MailboxError, match="anchor's mailbox is full"):
            await service.deposit(sealed_for(a, b, b"hi"), a.signing_public)
        # The trusted friend still deposits (the part kept for it).
        _, new = await service.deposit(sealed_for(friend, b, b"from a friend", expiry), friend.signing_public)
        assert new
        # Unverified envelopes are kept at most keep_unverified_s (7 days), the friend's until its own expiry.
        clock.ms += int(limits.keep_unverified_s * 1000)
        assert await storage.count(None, clock()) == 1
        assert await storage.count_by_depositor(key, clock()) == 0


async def test_shares_shrink_as_depositors_grow_and_nothing_is_evicted() -> None:
    policy = QuotaPolicy(max_envelopes=40, max_bytes=1 << 20, unverified_share=0.75, max_per_depositor=32)

    def held(spec: list[tuple[bytes, int]]) -> list[Held]:
        return [Held(i, who, 100, t) for i, (who, t) in enumerate(spec)]

    a, b, x = b"a" * 32, b"b" * 32, b"x" * 32
    # Alone, a may hold 30 (the unpinned part); with a second depositor each may hold 15, with three 10.
    assert decide_deposit(policy, held([(a, t) for t in range(29)]), a, 100) == []
    with pytest.raises(QuotaFull, match="depositor"):
        decide_deposit(policy, held([(a, t) for t in range(30)]), a, 100)
    two = held([(a, t) for t in range(14)] + [(b, 100)])
    assert decide_deposit(policy, two, a, 100) == []
    with pytest.raises(QuotaFull, match=r"depositor \(15\)"):
        decide_deposit(policy, held([(a, t) for t in range(15)] + [(b, 100)]), a, 100)
    with pytest.raises(QuotaFull, match=r"depositor \(10\)"):
        decide_deposit(policy, held([(a, t) for t in range(10)] + [(b, 100), (x, 101)]), a, 100)
    # The unpinned part is full (a 20, b 10): newcomer x is refused, not given a's room.
    full = held([(a, t) for t in range(20)] + [(b, 100 + t) for t in range(10)])
    with pytest.raises(QuotaFull, match="recipient"):
        decide_deposit(policy, full, x, 100)


async def test_pinned_depositors_have_room_kept_and_bytes_are_bounded() -> None:
    friend, a, b = b"f" * 32, b"a" * 32, b"b" * 32
    policy = QuotaPolicy(
        max_envelopes=8, max_bytes=8000, unverified_share=0.5, max_per_depositor=8, trusted=frozenset({friend})
    )
    # The unpinned part (4) is full: a newcomer is refused, the friend still gets in (the room kept for it).
    unpinned_full = [Held(i, who, 1000, i) for i, who in enumerate([a, a, b, b])]
    with pytest.raises(QuotaFull, match="recipient"):
        decide_deposit(policy, unpinned_full, b"c" * 32, 1000)
    assert decide_deposit(policy, unpinned_full, friend, 1000) == []
    # Full: the friend is refused too (nothing is evicted for it).
    with pytest.raises(QuotaFull, match="recipient"):
        decide_deposit(policy, [*unpinned_full, *(Held(4 + i, friend, 1000, 4 + i) for i in range(4))], friend, 1000)
    # The unpinned part (half of 8000 bytes) bounds their bytes too; an envelope larger than it never fits (so the
    # service answers E_REFUSED, not E_FULL that the sender would retry forever).
    with pytest.raises(QuotaFull, match="envelope") as never:
        decide_deposit(policy, [], b"c" * 32, 4001)
    assert never.value.which == "envelope"
    assert decide_deposit(policy, [], b"c" * 32, 4000) == []


async def test_without_trusted_depositors_the_whole_mailbox_is_usable_and_too_large_is_refused() -> None:
    anchor, a, c = (Identity.generate() for _ in range(3))
    limits = MailboxLimits(max_per_recipient=4, max_per_depositor=4)  # nobody pinned: no room kept for anybody
    service = MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), Clock())
    for i in range(4):
        await service.deposit(sealed_for(a, c, b"%d" % i), a.signing_public)  # all 4, not 3
    # An envelope larger than a recipient's byte bound is refused for good (E_REFUSED), not E_FULL.
    small = MailboxLimits(max_bytes_per_recipient=300)
    tiny = MailboxService(MailboxCore(anchor.signing_public, small), MemoryMailboxStorage(), Clock())
    with pytest.raises(MailboxError) as refused:
        await tiny.deposit(sealed_for(a, c, b"x" * 200), a.signing_public)
    assert refused.value.code == p.E_REFUSED


def test_the_config_refuses_a_byte_bound_no_envelope_fits() -> None:
    bounds = {"max_bytes_per_recipient": 4096, "max_envelope_bytes": 4096}
    with pytest.raises(ConfigError, match=r"mailbox\.max_bytes_per_recipient"):
        config_from_mapping({"mailbox": {**bounds, "trusted_depositors": ["ab" * 32]}})  # 3/4 of 4096 < 4096
    config_from_mapping({"mailbox": bounds})  # nobody pinned: all 4096 bytes


def test_trusted_depositors_are_read_from_the_config() -> None:
    key = Identity.generate().signing_public
    cfg = config_from_mapping({"mailbox": {"trusted_depositors": [key.hex()], "max_bytes_per_recipient": 65536}})
    limits = MailboxLimits.from_config(cfg.section(MailboxSection))
    assert limits.quota.verified(key) and limits.max_bytes_per_recipient == 65536
    with pytest.raises(ConfigError, match=r"mailbox\.trusted_depositors"):
        config_from_mapping({"mailbox": {"trusted_depositors": ["12D3KooWnot-hex"]}})


async def test_a_flood_of_free_keys_does_not_lock_a_new_depositor_out_of_a_proven_recipient() -> None:
    """With no trusted depositors (the default), fresh keys depositing junk for invented recipients filled
    max_envelopes_total and every new unverified sender was refused until the junk expired (up to 7 days). A
    recipient that fetched from the anchor (proved its key) now keeps a reserve beyond the total, for anyone."""
    anchor, a, c, d, e = (Identity.generate() for _ in range(5))
    limits = MailboxLimits(max_total=20, max_per_depositor_total=5, reserved_per_proven_recipient=2)
    clock = Clock()
    service = MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), clock)
    assert await prove_by_mail(service, c) == 1  # c fetches mail waiting for it: proven
    expiry = clock() + 86_400_000
    assert await fill_with_junk(service, clock, expiry) >= limits.max_total
    with pytest.raises(MailboxError, match="anchor's mailbox is full"):  # d never fetched here: no reserve
        await service.deposit(sealed_for(a, d, b"hi d"), a.signing_public)
    for i, who in enumerate((a, d)):  # new depositors still reach c (its reserve: one each), and c gets the mail
        _, new = await service.deposit(sealed_for(who, c, b"hi c %d" % i), who.signing_public)
        assert new
    with pytest.raises(MailboxError, match="anchor's mailbox is full"):  # the reserve is bounded
        await service.deposit(sealed_for(e, c, b"one too many"), e.signing_public)
    assert service.core.counters.reserved == 2
    _, items = await service.fetch(make_proof(c, anchor.signing_public, service.challenge()), 10)
    texts = sorted(open_untrusted(decode_envelope_untrusted(i.envelope), c.noise_private)[1] for i in items)
    assert texts == [b"hi c 0", b"hi c 1"]
