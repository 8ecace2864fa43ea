"""Mailbox flooding (security review): one depositor cannot fill a recipient's mailbox, the per-recipient bound
holds under concurrent deposits (count and insert are atomic in PostgreSQL), and the node's client keeps an
envelope the anchor refused as full and retries it."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from anchor.mailbox import MailboxCore, MailboxLimits, MailboxService, MemoryMailboxStorage, PostgresMailboxStorage
from anchor.stores.postgres import PostgresStore
from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.client import MailboxClient
from node.mailbox.protocol import MailboxError
from node.mailbox.settings import MailboxSection
from node.mailbox.stream import FramedStream
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
        limits = MailboxLimits(max_per_recipient=4, deposits_per_peer_per_min=1000)
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
        assert sorted(outcomes) == ["full"] * 8 + ["stored"] * 4
        assert await store.mailbox_count(c.peer_id, Clock()()) == 4


async def test_the_client_keeps_an_envelope_refused_as_full_and_deposits_the_others() -> None:
    anchor, me, c, d = (Identity.generate() for _ in range(4))
    limits = MailboxLimits(max_per_recipient=1)
    storage = MemoryMailboxStorage()
    service = MailboxService(MailboxCore(anchor.signing_public, limits), storage, Clock())
    await service.deposit(sealed_for(me, c, b"already there"))  # c's mailbox is full
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
