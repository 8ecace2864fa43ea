"""Mailbox flooding (security reviews): depositor keys are free, so neither one depositor nor many fresh keys can
fill a recipient's mailbox and deny it service (fair shares that shrink as depositors grow, a byte bound, room kept
for pinned depositors, eviction of the newest envelope of whoever holds the most); the per-recipient bound holds
under concurrent deposits (decision, eviction and insert are atomic in PostgreSQL); and the node's client keeps an
envelope the anchor refused as full and retries it."""

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
from node.config import MailboxSection, config_from_mapping
from node.errors import ConfigError
from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.client import MailboxClient
from node.mailbox.protocol import MailboxError, make_proof
from node.mailbox.stream import FramedStream
from node.routing.courier import decode_envelope_untrusted, open_untrusted
from node.transports.betanet.transport import BetanetTransport
from tests.anchor.test_mailbox_core import Clock, TrioAdapter, sealed_for
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
        limits = MailboxLimits(max_per_recipient=4, deposits_per_peer_per_min=1000)  # 3 for unpinned depositors
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
        # Twelve depositors with one envelope each: every newcomer holds less than someone already in, so it takes
        # that one's place; the mailbox never holds more than the unpinned part (3 of 4).
        assert outcomes == ["stored"] * 12
        assert await store.mailbox_count(c.peer_id, Clock()()) == 3
        assert service.core.counters.evicted == 9


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
async def flood(service: MailboxService, sender: Identity, c: Identity, keys: list[bytes], tag: bytes) -> int:
    """Each key deposits envelopes for ``c`` until the anchor refuses it; how many were stored."""
    stored = 0
    for n, key in enumerate(keys):
        for i in range(64):
            try:
                await service.deposit(sealed_for(sender, c, tag + b"%d/%d" % (n, i)), key)
            except MailboxError as exc:
                assert exc.code == p.E_FULL
                break
            stored += 1
    return stored


@pytest.mark.parametrize("storage_kind", ["memory", "postgres"])
async def test_free_keys_cannot_deny_a_recipient_its_mail(storage_kind: str, request: pytest.FixtureRequest) -> None:
    """On the code before this policy, 8 fresh keys x 32 envelopes filled c's 256 slots for 30 days and every
    other sender was refused. Now: the flood holds the unpinned part only, a pinned depositor still deposits all
    it may, and a new honest (unpinned) sender still gets in, by evicting the flooders' newest envelopes."""
    anchor, mallory, c, friend, honest = (Identity.generate() for _ in range(5))
    limits = MailboxLimits(trusted_depositors=frozenset({friend.signing_public}))  # the defaults otherwise
    async with contextlib.AsyncExitStack() as stack:
        if storage_kind == "postgres":
            store = await stack.enter_async_context(PostgresStore(request.getfixturevalue("pg_dsn")))
            storage: MailboxStorage = PostgresMailboxStorage(store)
        else:
            storage = MemoryMailboxStorage()
        clock = Clock()
        service = MailboxService(MailboxCore(anchor.signing_public, limits), storage, clock)
        keys = [os.urandom(32) for _ in range(8)]
        await flood(service, mallory, c, keys, b"m")
        assert await storage.count(c.peer_id, clock()) == 192  # 3/4 of 256: the unpinned part
        more_keys = [os.urandom(32) for _ in range(8)]
        clock.ms += 1
        await flood(service, mallory, c, more_keys, b"n")  # more keys only shrink each key's share
        assert await storage.count(c.peer_id, clock()) == 192
        # The pinned friend deposits its full share (32) although 192 + 32 < 256 would have fitted anyway; then
        # fills the rest of the mailbox, evicting unpinned envelopes, up to its ceiling.
        for i in range(limits.max_per_depositor):
            await service.deposit(sealed_for(friend, c, b"f%d" % i), friend.signing_public)
        assert await storage.count(c.peer_id, clock()) == 224
        # An honest sender with a fresh key is never locked out: it takes the place of a flooder's newest one.
        evicted_before = service.core.counters.evicted
        clock.ms += 1
        _, new = await service.deposit(sealed_for(honest, c, b"hi c"), honest.signing_public)
        assert new and service.core.counters.evicted == evicted_before + 1
        # c fetches: its friend's 32 and the honest message are there.
        got: list[bytes] = []
        while True:
            grant, items = await service.fetch(make_proof(c, anchor.signing_public, service.challenge()), 64)
            if not items:
                break
            got += [open_untrusted(decode_envelope_untrusted(i.envelope), c.noise_private)[1] for i in items]
            await service.ack(grant.token, [i.id for i in items])
        assert {b"f%d" % i for i in range(32)} | {b"hi c"} <= set(got)
        assert len(got) == 224


async def test_shares_shrink_as_depositors_grow_and_the_newest_goes_first() -> None:
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
    # The unpinned part is full (a 20, b 10): newcomer x evicts a's newest envelope (a holds the most).
    full = held([(a, t) for t in range(20)] + [(b, 100 + t) for t in range(10)])
    assert decide_deposit(policy, full, x, 100) == [19]
    # b (10) holds less than a (20): it takes a's newest too; a is over its share (15): refused.
    assert decide_deposit(policy, full, b, 100) == [19]
    with pytest.raises(QuotaFull, match="depositor"):
        decide_deposit(policy, full, a, 100)
    # 30 depositors with one each: a 31st still gets in, in place of the newest of them.
    many = held([(bytes([n]) * 32, n) for n in range(30)])
    assert decide_deposit(policy, many, x, 100) == [29]


async def test_pinned_depositors_evict_unpinned_ones_and_bytes_are_bounded() -> None:
    friend, a, b = b"f" * 32, b"a" * 32, b"b" * 32
    policy = QuotaPolicy(
        max_envelopes=8, max_bytes=8000, unverified_share=0.5, max_per_depositor=8, trusted=frozenset({friend})
    )
    spec = [(a, 0), (a, 5), (b, 1), (b, 2), (friend, 3), (friend, 4), (friend, 6), (friend, 7)]
    full = [Held(i, who, 1000, t) for i, (who, t) in enumerate(spec)]
    # The mailbox holds 8 envelopes, 8000 bytes: the friend's deposit evicts the newest of the richest unpinned
    # depositor (a and b hold 2 each: a's envelope at t=5 is the newest of the two).
    assert decide_deposit(policy, full, friend, 1000) == [1]
    # A 2500-byte deposit needs three envelopes' room: a's newest, b's newest, then (a and b tied again at one
    # each) b's, the newer of the two left.
    assert decide_deposit(policy, full, friend, 2500) == [1, 3, 2]
    # A newcomer takes the newest of the richest unpinned (a's), never a pinned one's room.
    assert decide_deposit(policy, full, b"c" * 32, 1000) == [1]
    pinned_only = [Held(i, friend, 1000, i) for i in range(8)]
    with pytest.raises(QuotaFull, match="recipient"):
        decide_deposit(policy, pinned_only, b"c" * 32, 1000)
    # The unpinned part (half of 8000 bytes) bounds their bytes too.
    with pytest.raises(QuotaFull, match="recipient"):
        decide_deposit(policy, [], b"c" * 32, 4001)
    assert decide_deposit(policy, [], b"c" * 32, 4000) == []


def test_trusted_depositors_are_read_from_the_config() -> None:
    key = Identity.generate().signing_public
    cfg = config_from_mapping({"mailbox": {"trusted_depositors": [key.hex()], "max_bytes_per_recipient": 65536}})
    limits = MailboxLimits.from_config(cfg.mailbox)
    assert limits.quota.verified(key) and limits.max_bytes_per_recipient == 65536
    with pytest.raises(ConfigError, match=r"mailbox\.trusted_depositors"):
        config_from_mapping({"mailbox": {"trusted_depositors": ["12D3KooWnot-hex"]}})
