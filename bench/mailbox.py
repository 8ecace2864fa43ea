"""Mailbox deposit and fetch rates on the anchor's real PostgreSQL, each as a ratio against a baseline measured in
the same run.

    python bench/mailbox.py [--seconds S]        (needs `scripts/services up`; uses a scratch database)

Figures (one summary line each):
* deposit/s through :class:`anchor.mailbox.MailboxService` (checks, the recipient's envelopes read for the quota,
  INSERT), vs bare ``PostgresStore.mailbox_deposit`` INSERTs of the same envelopes;
* deposit/s into a full mailbox (256 envelopes from 256 keys; each deposit from a fresh key is refused: nothing
  stored is evicted), vs the service's deposit into an empty one;
* fetch rounds/s of one envelope each (challenge, proof made by the recipient, proof checked, list, ACK/DELETE), vs
  bare ``mailbox_list`` + ``mailbox_delete`` of one row;
* envelopes/s fetched in batches of 64 (one proof per batch), same baseline per envelope;
* deposit/s over BetaNet (a libp2p stream on loopback, one request at a time), vs the service called directly.

``run()`` is what ``bench/gateway.py`` calls (it returns the lines); ``measure()`` is the same inside trio.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anchor.mailbox import MailboxCore, MailboxLimits, MailboxService, PostgresMailboxStorage, envelope_digest
from anchor.services_settings import SETTINGS_FILE, load_settings
from anchor.stores.postgres import PostgresStore
from node.clock import Clock
from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.stream import FramedStream
from node.routing.courier import Envelope, decode_envelope_untrusted, encode_envelope
from node.transports.betanet.settings import BetanetSection
from node.transports.betanet.transport import BetanetTransport
from tools.services import DEFAULT_DIR

LOOPBACK = BetanetSection(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, dht=False, relay="off")
SEALED_BYTES = 232  # Noise_X around a private message of 120 characters (32 + 48 + 16 + payload)
BATCH = 64


async def timed(fn: Callable[[], Awaitable[int]], seconds: float) -> float:
    """Items per second: ``fn`` returns how many items one call handled."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += await fn()
    return n / (time.perf_counter() - start)


def envelope_maker(recipients: list[Identity], wall_ms: int) -> Callable[[], bytes]:
    """Fresh envelopes, round-robin over ``recipients``. The anchor never opens an envelope, so random bytes of a
    sealed message's size (a 120-character text sealed with Noise_X is ~230 bytes) cost it the same."""
    n = 0

    def make() -> bytes:
        nonlocal n
        n += 1
        r = recipients[n % len(recipients)]
        return encode_envelope(Envelope(r.peer_id, wall_ms + 3_600_000, 1, secrets.token_bytes(SEALED_BYTES)))

    return make


async def measure(seconds: float = 2.0) -> list[str]:
    settings = load_settings(DEFAULT_DIR / SETTINGS_FILE)
    db = "bench_mailbox_" + secrets.token_hex(4)
    admin = settings.postgres.dsn_for("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        return await _measure(settings.postgres.dsn_for(db), seconds)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def _measure(dsn: str, seconds: float) -> list[str]:
    clock = Clock()
    anchor, sender = Identity.generate(), Identity.generate()  # sender: the BetaNet client
    recipients = [Identity.generate() for _ in range(8)]
    fresh = envelope_maker(recipients, clock.wall_ms())
    limits = MailboxLimits(
        max_per_recipient=10_000_000,
        max_per_depositor=10_000_000,
        max_total=100_000_000,
        max_fetch=BATCH,
        deposits_per_peer_per_min=1e12,
    )  # no per-depositor rate limit or quota: the bench measures throughput
    lines = []
    async with PostgresStore(dsn) as store:
        service = MailboxService(
            MailboxCore(anchor.signing_public, limits), PostgresMailboxStorage(store), clock.wall_ms
        )

        # ---- deposits (the table is emptied before each phase)
        async def bare_insert() -> int:
            data = fresh()
            env = decode_envelope_untrusted(data)
            await store.mailbox_deposit(
                env.recipient_id, envelope_digest(env), data, env.expires_at_ms, clock.wall_ms()
            )
            return 1

        async def service_deposit() -> int:
            await service.deposit(fresh())
            return 1

        async def clear() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM mailbox")

        await clear()
        base = await timed(bare_insert, seconds)
        await clear()
        deposit = await timed(service_deposit, seconds)
        lines.append(
            f"mailbox deposit (service, PostgreSQL): {deposit:,.0f}/s vs bare INSERT {base:,.0f}/s"
            f" = {deposit / base:.2f}x"
        )

        # ---- the quota at its worst: the recipient already holds 256 envelopes from 256 keys, and every deposit
        # comes from a fresh key, so each one reads the 256, decides and is refused (anchor.mailbox_quota)
        quota = MailboxService(
            MailboxCore(anchor.signing_public, MailboxLimits(unverified_share=1.0, deposits_per_peer_per_min=1e12)),
            PostgresMailboxStorage(store),
            clock.wall_ms,
        )
        for_one = envelope_maker(recipients[:1], clock.wall_ms())
        await clear()
        for _ in range(quota.limits.max_per_recipient):
            await quota.deposit(for_one(), secrets.token_bytes(32))

        async def refused_deposit() -> int:
            try:
                await quota.deposit(for_one(), secrets.token_bytes(32))
            except p.MailboxError as exc:
                assert exc.code == p.E_FULL
            return 1

        full = await timed(refused_deposit, seconds)
        assert quota.core.counters.deposits_refused > 0 and quota.core.counters.evicted == 0
        lines.append(
            f"mailbox deposit into a full mailbox (256 held, each deposit refused): {full:,.0f}/s vs the service "
            f"into an empty one {deposit:,.0f}/s = {full / deposit:.2f}x"
        )

        # ---- fetch one envelope per round, and batches
        def refill(target: Identity, n: int) -> None:  # bulk, outside the measured part
            wall = clock.wall_ms()
            rows = []
            for _ in range(n):
                env = Envelope(target.peer_id, wall + 3_600_000, 1, secrets.token_bytes(SEALED_BYTES))
                rows.append((target.peer_id, envelope_digest(env), encode_envelope(env), env.expires_at_ms, wall))
            with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO mailbox (recipient, dedupe_id, envelope, expires_at_ms, deposited_at_ms)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    rows,
                )

        r = recipients[0]
        await clear()
        refill(r, 2000)

        async def bare_fetch() -> int:
            rows = await store.mailbox_list(r.peer_id, clock.wall_ms(), 1)
            await store.mailbox_delete(r.peer_id, [x.id for x in rows])
            return len(rows)

        async def service_fetch(batch: int) -> int:
            proof = p.make_proof(r, anchor.signing_public, service.challenge())
            grant, items = await service.fetch(proof, batch)
            await service.ack(grant.token, [i.id for i in items])
            return len(items)

        base_fetch = await timed(bare_fetch, seconds / 2)
        await clear()
        refill(r, 2000)
        one = await timed(lambda: service_fetch(1), seconds / 2)
        lines.append(
            f"mailbox fetch of 1 (challenge, proof, list, ack): {one:,.0f}/s vs bare list+delete {base_fetch:,.0f}/s"
            f" = {one / base_fetch:.2f}x"
        )
        await clear()
        refill(r, 6400)
        batched = await timed(lambda: service_fetch(BATCH), seconds / 2)
        lines.append(
            f"mailbox fetch in batches of {BATCH}: {batched:,.0f} envelopes/s vs bare list+delete of 1 "
            f"{base_fetch:,.0f}/s = {batched / base_fetch:.2f}x"
        )

        # ---- over BetaNet
        await clear()
        served = BetanetTransport(anchor, LOOPBACK)
        client = BetanetTransport(sender, LOOPBACK)
        async with trio.open_nursery() as nursery:
            links_a, _ = trio.open_memory_channel[object](64)
            links_b, _ = trio.open_memory_channel[object](64)
            served.add_stream_handler(p.MAILBOX_PROTOCOL, service.serve_stream)
            await nursery.start(served.run, links_a)
            await nursery.start(client.run, links_b)
            stream = await client.open_stream(served.listen_addresses()[0], p.MAILBOX_PROTOCOL)
            framed = FramedStream(stream, timeout_s=30)

            async def over_betanet() -> int:
                p.decode_deposited_untrusted(await framed.request(p.encode_deposit(fresh())))
                return 1

            net = await timed(over_betanet, seconds / 2)
            await clear()
            direct = await timed(service_deposit, seconds / 2)
            lines.append(
                f"mailbox deposit over BetaNet (one stream, loopback): {net:,.0f}/s vs the service called directly "
                f"{direct:,.0f}/s = {net / direct:.2f}x"
            )
            await framed.aclose()
            nursery.cancel_scope.cancel()
    return lines


def run(seconds: float = 2.0) -> list[str]:
    """The summary lines (prints nothing); call from outside trio. Inside trio, ``await measure(seconds)``."""
    return trio.run(measure, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per measured figure (default 2)")
    args = ap.parse_args()
    for line in run(args.seconds):
        print(line)


if __name__ == "__main__":
    main()
