"""Mailbox stream abuse (security review): only a FETCH naming a challenge issued on the stream frees a challenge
slot, a link key has a bounded number of streams, and a stream has an overall deadline."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from anchor.mailbox import CHALLENGES_PER_STREAM, MailboxCore, MailboxLimits, MailboxService, MemoryMailboxStorage
from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.protocol import Challenge, MailboxError, make_proof
from node.mailbox.stream import FramedStream, StreamClosed
from tests.anchor.test_mailbox_core import Clock, TrioAdapter


def make_service(anchor: Identity, **limits: float) -> MailboxService:
    return MailboxService(
        MailboxCore(anchor.signing_public, MailboxLimits(**limits)),  # type: ignore[arg-type]
        MemoryMailboxStorage(),
        Clock(),
    )


async def open_stream(nursery: trio.Nursery, service: MailboxService, key: bytes) -> FramedStream:
    left, right = trio.testing.memory_stream_pair()
    nursery.start_soon(service.serve_stream, TrioAdapter(right), key)
    return FramedStream(TrioAdapter(left), timeout_s=5)


async def challenge(client: FramedStream) -> Challenge:
    return p.decode_challenge_untrusted(await client.request(p.encode_challenge_request()))


async def test_only_a_fetch_naming_an_issued_challenge_frees_a_slot(nursery: trio.Nursery) -> None:
    anchor, c = Identity.generate(), Identity.generate()
    service = make_service(anchor)
    client = await open_stream(nursery, service, c.signing_public)
    held = [await challenge(client) for _ in range(CHALLENGES_PER_STREAM)]
    invented = Challenge(b"\x07" * p.NONCE_BYTES, held[0].ephemeral_public, held[0].expires_at_ms)
    for junk in (bytes([p.FETCH]), p.encode_fetch(make_proof(c, anchor.signing_public, invented), 8)):
        with pytest.raises(MailboxError):  # malformed, or a proof for a challenge never issued
            p.decode_envelopes_untrusted(await client.request(junk))
        with pytest.raises(MailboxError, match="busy"):
            await challenge(client)
    # A real answer frees one slot, once.
    p.decode_envelopes_untrusted(await client.request(p.encode_fetch(make_proof(c, anchor.signing_public, held[1]), 8)))
    await challenge(client)
    with pytest.raises(MailboxError, match="busy"):
        await challenge(client)
    await client.aclose()


async def test_a_link_key_has_at_most_four_streams(nursery: trio.Nursery) -> None:
    anchor, c, d = Identity.generate(), Identity.generate(), Identity.generate()
    service = make_service(anchor)
    streams = [await open_stream(nursery, service, c.signing_public) for _ in range(4)]
    for s in streams:
        await challenge(s)  # each is being served
    fifth = await open_stream(nursery, service, c.signing_public)
    with pytest.raises(MailboxError, match="too many mailbox streams"):
        await challenge(fifth)
    other = await open_stream(nursery, service, d.signing_public)  # another peer is not affected
    await challenge(other)
    await streams[0].aclose()
    await other.aclose()


async def test_a_stream_trickling_requests_ends_at_its_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    anchor, c = Identity.generate(), Identity.generate()
    service = make_service(anchor, stream_timeout_s=30.0, stream_deadline_s=300.0)
    client = await open_stream(nursery, service, c.signing_public)
    start = trio.current_time()
    with pytest.raises(StreamClosed):
        while True:  # a malformed deposit every 20 s: never idle for the 30 s per-request timeout
            with pytest.raises(MailboxError, match="malformed"):
                p.decode_deposited_untrusted(await client.request(bytes([p.DEPOSIT])))
            await trio.sleep(20)
    assert 300 <= trio.current_time() - start < 330
