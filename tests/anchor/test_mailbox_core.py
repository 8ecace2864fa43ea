"""The anchor's mailbox rules, in process: deposits are bounded and checked; a fetch needs a proof that answers a
fresh challenge of this anchor with the recipient's own keys; a grant deletes only its recipient's envelopes."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from anchor.mailbox import MailboxCore, MailboxLimits, MailboxService, MemoryMailboxStorage
from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.protocol import MailboxError, make_proof
from node.mailbox.stream import FramedStream
from node.routing.courier import Envelope, decode_envelope_untrusted, encode_envelope, open_untrusted, seal

NOW_MS = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = NOW_MS

    def __call__(self) -> int:
        return self.ms


def sealed_for(sender: Identity, recipient: Identity, text: bytes, expires_at_ms: int = NOW_MS + 3_600_000) -> bytes:
    sealed = seal(
        text,
        sender_static=sender.noise_private,
        recipient_id=recipient.peer_id,
        recipient_static=recipient.noise_public,
        expires_at_ms=expires_at_ms,
    )
    return encode_envelope(Envelope(recipient.peer_id, expires_at_ms, 1, sealed))


class TrioAdapter:  # trio's stream API under the names libp2p streams use
    def __init__(self, s: trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]) -> None:
        self.s = s

    async def read(self, n: int | None = None) -> bytes:
        return bytes(await self.s.receive_some(n))

    async def write(self, data: bytes) -> None:
        await self.s.send_all(data)

    async def close(self) -> None:
        await self.s.send_eof()


@pytest.fixture
def anchor() -> Identity:
    return Identity.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(anchor: Identity, clock: Clock) -> MailboxService:
    # unverified_share=1: one unpinned depositor may fill the 3 slots (shares: tests/anchor/test_mailbox_quotas.py)
    limits = MailboxLimits(
        max_per_recipient=3, unverified_share=1.0, max_envelope_bytes=4096, challenge_ttl_s=30, grant_ttl_s=60
    )
    return MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), clock)


async def test_the_recipient_fetches_its_envelopes_and_they_go_after_its_ack(
    service: MailboxService, anchor: Identity
) -> None:
    a, c = Identity.generate(), Identity.generate()
    env_id, new = await service.deposit(sealed_for(a, c, b"hello c"))
    assert new
    proof = make_proof(c, anchor.signing_public, service.challenge())
    grant, items = await service.fetch(proof, 10)
    assert [i.id for i in items] == [env_id]
    env = p.decode_envelopes_untrusted(p.encode_envelopes(grant.token, items))[1][0]
    sender, plaintext = open_untrusted(decode_envelope_untrusted(env.envelope), c.noise_private)
    assert (sender, plaintext) == (a.peer_id, b"hello c")
    assert await service.ack(grant.token, [env_id]) == 1
    again = make_proof(c, anchor.signing_public, service.challenge())
    assert (await service.fetch(again, 10))[1] == []


async def test_a_proof_with_someone_elses_keys_is_refused(service: MailboxService, anchor: Identity) -> None:
    a, c, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    await service.deposit(sealed_for(a, c, b"for c only"))
    # Mallory claims c's peer ID and Noise key but holds neither c's Noise private key nor its signing key.
    ch = service.challenge()
    forged = make_proof(mallory, anchor.signing_public, ch)
    forged = dataclasses.replace(forged, recipient_id=c.peer_id, noise_public=c.noise_public)
    with pytest.raises(MailboxError, match=r"signature|Noise key") as exc:
        await service.fetch(forged, 10)
    assert exc.value.code == p.E_AUTH
    # Re-signed with Mallory's own signing key over c's keys: the DH proof of c's Noise key still fails.
    ch = service.challenge()
    t = p.transcript(anchor.signing_public, ch, c.peer_id, c.noise_public, mallory.signing_public)
    mac = forged.mac
    sig = mallory.signing_key.sign(t + mac).signature
    resigned = p.Proof(c.peer_id, c.noise_public, mallory.signing_public, ch.nonce, mac, sig)
    with pytest.raises(MailboxError, match="proof of the Noise key"):
        await service.fetch(resigned, 10)
    # Mallory's own keys under c's peer ID: the ID does not match the key.
    ch = service.challenge()
    own = dataclasses.replace(make_proof(mallory, anchor.signing_public, ch), recipient_id=c.peer_id)
    with pytest.raises(MailboxError, match="peer ID"):
        await service.fetch(own, 10)
    assert service.core.counters.proofs_refused == 3
    assert service.core.counters.fetched == 0


async def test_a_replayed_challenge_is_refused(service: MailboxService, anchor: Identity) -> None:
    c = Identity.generate()
    proof = make_proof(c, anchor.signing_public, service.challenge())
    await service.fetch(proof, 10)
    with pytest.raises(MailboxError, match="already used"):
        await service.fetch(proof, 10)


async def test_a_wrong_answer_uses_the_challenge_up(service: MailboxService, anchor: Identity) -> None:
    c = Identity.generate()
    ch = service.challenge()
    good = make_proof(c, anchor.signing_public, ch)
    with pytest.raises(MailboxError):
        await service.fetch(dataclasses.replace(good, mac=bytes(32)), 10)
    with pytest.raises(MailboxError, match="already used"):
        await service.fetch(good, 10)


async def test_an_expired_challenge_is_refused(service: MailboxService, anchor: Identity, clock: Clock) -> None:
    c = Identity.generate()
    proof = make_proof(c, anchor.signing_public, service.challenge())
    clock.ms += 30_001
    with pytest.raises(MailboxError, match="expired"):
        await service.fetch(proof, 10)


async def test_an_invented_challenge_and_another_anchors_challenge_are_refused(
    service: MailboxService, anchor: Identity
) -> None:
    c = Identity.generate()
    invented = p.Challenge(bytes(32), bytes(range(32)), NOW_MS + 1000)
    with pytest.raises(MailboxError, match="unknown"):
        await service.fetch(make_proof(c, anchor.signing_public, invented), 10)
    other_anchor = Identity.generate()
    with pytest.raises(MailboxError, match="signature"):
        await service.fetch(make_proof(c, other_anchor.signing_public, service.challenge()), 10)


async def test_a_proof_must_use_the_key_the_connection_authenticated(service: MailboxService, anchor: Identity) -> None:
    c, other = Identity.generate(), Identity.generate()
    proof = make_proof(c, anchor.signing_public, service.challenge())
    with pytest.raises(MailboxError, match="connection"):
        await service.fetch(proof, 10, link_key=other.signing_public)
    proof = make_proof(c, anchor.signing_public, service.challenge())
    await service.fetch(proof, 10, link_key=c.signing_public)


async def test_a_recipient_never_sees_or_deletes_anothers_envelopes(service: MailboxService, anchor: Identity) -> None:
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    for_c, _ = await service.deposit(sealed_for(a, c, b"to c"))
    for_b, _ = await service.deposit(sealed_for(a, b, b"to b"))
    grant_b, items_b = await service.fetch(make_proof(b, anchor.signing_public, service.challenge()), 10)
    assert [i.id for i in items_b] == [for_b]
    assert await service.ack(grant_b.token, [for_c]) == 0  # b's grant cannot delete c's envelope
    _, items_c = await service.fetch(make_proof(c, anchor.signing_public, service.challenge()), 10)
    assert [i.id for i in items_c] == [for_c]
    with pytest.raises(MailboxError, match="grant"):
        await service.ack(bytes(16), [for_c])


async def test_an_expired_grant_cannot_delete(service: MailboxService, anchor: Identity, clock: Clock) -> None:
    a, c = Identity.generate(), Identity.generate()
    env_id, _ = await service.deposit(sealed_for(a, c, b"x"))
    grant, _ = await service.fetch(make_proof(c, anchor.signing_public, service.challenge()), 10)
    clock.ms += 60_001
    with pytest.raises(MailboxError, match="grant"):
        await service.ack(grant.token, [env_id])


async def test_deposits_are_bounded_checked_and_deduplicated(service: MailboxService, clock: Clock) -> None:
    a, c = Identity.generate(), Identity.generate()
    first = sealed_for(a, c, b"one")
    id1, new1 = await service.deposit(first)
    id2, new2 = await service.deposit(first)  # a retried deposit whose answer was lost
    assert (id2, new1, new2) == (id1, True, False)
    await service.deposit(sealed_for(a, c, b"two"))
    await service.deposit(sealed_for(a, c, b"three"))
    with pytest.raises(MailboxError, match="full") as full:
        await service.deposit(sealed_for(a, c, b"four"))
    assert full.value.code == p.E_FULL
    with pytest.raises(MailboxError, match="expired"):
        await service.deposit(sealed_for(a, c, b"old", expires_at_ms=NOW_MS - 1))
    with pytest.raises(MailboxError, match="expires more than"):
        await service.deposit(sealed_for(a, c, b"forever", expires_at_ms=NOW_MS + 31 * 86_400_000))
    with pytest.raises(MailboxError, match="not a sealed envelope") as bad:
        await service.deposit(b"\x00" * 40)
    assert bad.value.code == p.E_MALFORMED
    with pytest.raises(MailboxError, match="bytes"):
        await service.deposit(b"\x00" * 5000)
    clock.ms += 3_600_001  # everything expires: the store empties and takes deposits again
    assert await service.expire() == 3
    assert service.core.counters.deposits_refused == 5


async def test_the_betanet_framing_answers_requests_and_errors(service: MailboxService, anchor: Identity) -> None:
    a, c = Identity.generate(), Identity.generate()
    left, right = trio.testing.memory_stream_pair()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.serve_stream, TrioAdapter(right), c.signing_public)
        client = FramedStream(TrioAdapter(left), timeout_s=5)
        env_id, new = p.decode_deposited_untrusted(await client.request(p.encode_deposit(sealed_for(a, c, b"hi"))))
        assert new
        ch = p.decode_challenge_untrusted(await client.request(p.encode_challenge_request()))
        grant, items = p.decode_envelopes_untrusted(
            await client.request(p.encode_fetch(make_proof(c, anchor.signing_public, ch), 8))
        )
        assert [i.id for i in items] == [env_id]
        assert p.decode_acked_untrusted(await client.request(p.encode_ack(grant, [env_id]))) == 1
        with pytest.raises(MailboxError) as exc:
            p.decode_challenge_untrusted(await client.request(b"\x7f"))
        assert exc.value.code == p.E_MALFORMED
        await client.aclose()
    assert service.core.counters.malformed == 1


async def test_the_anchor_wide_bound_holds_between_recounts(anchor: Identity, clock: Clock) -> None:
    storage = MemoryMailboxStorage()
    service = MailboxService(MailboxCore(anchor.signing_public, MailboxLimits(max_total=2)), storage, clock)
    a = Identity.generate()
    await service.deposit(sealed_for(a, Identity.generate(), b"1"))
    await service.deposit(sealed_for(a, Identity.generate(), b"2"))
    with pytest.raises(MailboxError, match="this anchor's mailbox is full"):
        await service.deposit(sealed_for(a, Identity.generate(), b"3"))
    storage.rows.clear()  # deleted behind the service's back: seen at the next recount, a second later
    clock.ms += 1000
    await service.deposit(sealed_for(a, Identity.generate(), b"4"))


async def test_deposits_are_rate_limited_per_depositor(anchor: Identity, clock: Clock) -> None:
    limits = MailboxLimits(deposits_per_peer_per_min=2)
    service = MailboxService(MailboxCore(anchor.signing_public, limits), MemoryMailboxStorage(), clock)
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    await service.deposit(sealed_for(a, c, b"1"), a.signing_public)
    await service.deposit(sealed_for(a, c, b"2"), a.signing_public)
    with pytest.raises(MailboxError, match="too many deposits") as busy:
        await service.deposit(sealed_for(a, c, b"3"), a.signing_public)
    assert busy.value.code == p.E_BUSY and p.E_BUSY in p.TRANSIENT
    await service.deposit(sealed_for(b, c, b"from b"), b.signing_public)  # another depositor has its own rate
    clock.ms += 30_000  # one token back
    await service.deposit(sealed_for(a, c, b"3"), a.signing_public)


async def test_one_stream_cannot_hoard_challenges(service: MailboxService, anchor: Identity) -> None:
    left, right = trio.testing.memory_stream_pair()
    c = Identity.generate()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.serve_stream, TrioAdapter(right), c.signing_public)
        client = FramedStream(TrioAdapter(left), timeout_s=5)
        held = [p.decode_challenge_untrusted(await client.request(p.encode_challenge_request())) for _ in range(4)]
        with pytest.raises(MailboxError, match="busy") as busy:
            p.decode_challenge_untrusted(await client.request(p.encode_challenge_request()))
        assert busy.value.code == p.E_BUSY
        # Answering one frees a slot on this stream.
        p.decode_envelopes_untrusted(
            await client.request(p.encode_fetch(make_proof(c, anchor.signing_public, held[0]), 8))
        )
        p.decode_challenge_untrusted(await client.request(p.encode_challenge_request()))
        await client.aclose()
