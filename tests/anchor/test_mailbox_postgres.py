"""The mailbox over the anchor's real PostgreSQL (a fresh database per test): deposit, fetch with a proof, ack
deletes, a retried deposit is stored once, expiry deletes, and the database never holds a message's text."""

from __future__ import annotations

import json
from collections.abc import Callable

import psycopg
import pytest
import trio

from anchor.mailbox import MailboxCore, MailboxLimits, MailboxService, PostgresMailboxStorage
from anchor.stores.postgres import PostgresStore
from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.protocol import MailboxError, make_proof
from node.routing.courier import Envelope, encode_envelope
from node.wire import NoisePayloadType, encode_noise_payload, encode_private_message
from tests.anchor.mailbox_db import find_text_anywhere
from tests.anchor.test_mailbox_core import NOW_MS, Clock, sealed_for
from tools.services import Services


async def test_deposit_fetch_ack_and_no_plaintext_in_the_database(pg_dsn: str) -> None:
    anchor, a, c = Identity.generate(), Identity.generate(), Identity.generate()
    clock = Clock()
    texts = [f"secret number {i}: the vault code is 4{i}17" for i in range(3)]
    async with PostgresStore(pg_dsn) as store:
        service = MailboxService(
            MailboxCore(anchor.signing_public, MailboxLimits(max_per_recipient=10)),
            PostgresMailboxStorage(store),
            clock,
        )
        ids = []
        for i, text in enumerate(texts):
            payload = encode_noise_payload(NoisePayloadType.PRIVATE_MESSAGE, encode_private_message(f"ID-{i}", text))
            ids.append((await service.deposit(sealed_for(a, c, payload)))[0])
        first = sealed_for(a, c, b"retried")
        again = await service.deposit(first), await service.deposit(first)
        assert again[0][0] == again[1][0] and (again[0][1], again[1][1]) == (True, False)

        with psycopg.connect(pg_dsn) as conn:
            for text in texts:
                assert find_text_anywhere(conn, text) == []
        # The scan does find text that is there: a "sealed" part that is plain text (the anchor cannot tell).
        leak = "this one was never sealed at all"
        plain = encode_envelope(Envelope(c.peer_id, NOW_MS + 60_000, 1, leak.encode().ljust(100, b".")))
        await service.deposit(plain)
        with psycopg.connect(pg_dsn) as conn:
            assert find_text_anywhere(conn, leak) == ["public.mailbox.envelope"]

        grant, items = await service.fetch(make_proof(c, anchor.signing_public, service.challenge()), 64)
        assert [i.id for i in items][:3] == ids
        other = Identity.generate()
        other_grant, _ = await service.fetch(make_proof(other, anchor.signing_public, service.challenge()), 64)
        assert await service.ack(other_grant.token, [i.id for i in items]) == 0  # deletes nothing of c's
        with pytest.raises(MailboxError, match="grant"):
            await service.ack(b"\x00" * 16, [i.id for i in items])
        assert await service.ack(grant.token, [i.id for i in items]) == len(items)
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute("SELECT count(*) FROM mailbox").fetchone()
            assert row is not None and row[0] == 0

        await service.deposit(sealed_for(a, c, b"short-lived", expires_at_ms=NOW_MS + 1000))
        clock.ms += 1000
        assert await service.expire() == 1


@pytest.mark.slow  # starts, stops and restarts a private PostgreSQL (~12 s)
async def test_a_store_outage_is_a_transient_answer_and_the_mailbox_recovers(
    private_services: Callable[..., Services],
) -> None:
    """PostgreSQL stops under a running mailbox: a deposit over the protocol gets ERROR "down" (which a client
    keeps and retries), not a crash; once the server is back the same service stores again."""
    svc = private_services("postgres")
    pg = json.loads(svc.settings_path.read_text())["postgres"]
    dsn = f"postgresql://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['dbname']}"
    anchor, a, c = Identity.generate(), Identity.generate(), Identity.generate()
    async with PostgresStore(dsn, timeout_s=1.0) as store:
        service = MailboxService(MailboxCore(anchor.signing_public), PostgresMailboxStorage(store), Clock())
        assert p.decode_deposited_untrusted(await service.answer(p.encode_deposit(sealed_for(a, c, b"1")), None))[1]
        await trio.to_thread.run_sync(svc.down, ("postgres",))
        answer = await service.answer(p.encode_deposit(sealed_for(a, c, b"2")), None)
        with pytest.raises(MailboxError) as down:
            p.decode_deposited_untrusted(answer)
        assert down.value.code == p.E_UNAVAILABLE and down.value.code in p.TRANSIENT
        await trio.to_thread.run_sync(svc.up, ("postgres",))
        assert p.decode_deposited_untrusted(await service.answer(p.encode_deposit(sealed_for(a, c, b"2")), None))[1]
