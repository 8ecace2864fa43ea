"""The node's mailbox client against an anchor's mailbox over real BetaNet on loopback (in one process; the
anchor keeps envelopes in memory here, PostgreSQL in tests/anchor): fetched envelopes land in the inbox, and an
acknowledgement lost in a crash-like failure re-delivers without a second inbox entry."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import trio
from libp2p.abc import INetStream

from anchor.mailbox import MailboxCore, MailboxService, MemoryMailboxStorage
from node.clock import Clock
from node.daemon import build_node
from node.errors import ConfigError
from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.client import MailboxClient
from node.mailbox.plugin import mailbox_client
from node.mailbox.settings import MailboxSection
from node.node import Node
from node.routing.courier import Envelope, encode_envelope, seal
from node.settings import Config, NodeSection
from node.transports.betanet.transport import BetanetTransport
from node.wire import NoisePayloadType, encode_noise_payload, encode_private_message
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport


def envelope_for(sender: Identity, recipient: Identity, message_id: str, text: str, wall_ms: int) -> bytes:
    expires = wall_ms + 3_600_000
    plaintext = encode_noise_payload(NoisePayloadType.PRIVATE_MESSAGE, encode_private_message(message_id, text))
    sealed = seal(
        plaintext,
        sender_static=sender.noise_private,
        recipient_id=recipient.peer_id,
        recipient_static=recipient.noise_public,
        expires_at_ms=expires,
    )
    return encode_envelope(Envelope(recipient.peer_id, expires, 1, sealed))


class LosesFirstAck(MailboxService):
    """Closes the stream instead of answering the first ACK: the client stored the message and then lost the
    anchor (as if it crashed before the ACK reached it)."""

    acks_lost = 0

    async def answer(self, body: bytes, link_key: bytes | None) -> bytes:
        if body[:1] == bytes([p.ACK]) and self.acks_lost == 0:
            self.acks_lost += 1
            raise trio.BrokenResourceError("simulated loss before the ACK")
        return await super().answer(body, link_key)


async def serve_anchor(
    nursery: trio.Nursery, service_cls: type[MailboxService] = MailboxService
) -> tuple[str, MailboxService]:
    anchor_ident = Identity.generate()
    clock = Clock()
    service = service_cls(MailboxCore(anchor_ident.signing_public), MemoryMailboxStorage(), clock.wall_ms)
    transport, _links = await start_transport(nursery, anchor_ident)

    async def on_stream(stream: INetStream, key: bytes | None) -> None:
        try:
            await service.serve_stream(stream, key)
        except trio.BrokenResourceError:
            await stream.close()

    transport.add_stream_handler(p.MAILBOX_PROTOCOL, on_stream)
    return transport.listen_addresses()[0], service


def node_using(anchor_addr: str, ident: Identity) -> Node:
    d = Path(tempfile.mkdtemp(prefix="vlg-mbx-", dir="/tmp"))
    cfg = Config(
        data_dir=d,
        node=NodeSection(nickname="c"),
        betanet=LOOPBACK,
        mailbox=MailboxSection(anchors=(anchor_addr,)),
    )
    return build_node(cfg, ident, transports=[BetanetTransport(ident, LOOPBACK)], clock=Clock(), control=False)


async def test_fetched_envelopes_land_once_even_when_the_ack_is_lost(nursery: trio.Nursery) -> None:
    anchor_addr, service = await serve_anchor(nursery, LosesFirstAck)
    a, c = Identity.generate(), Identity.generate()
    wall = Clock().wall_ms()
    await service.deposit(envelope_for(a, c, "MSG-1", "see you at the river", wall))
    await service.deposit(envelope_for(a, Identity.generate(), "MSG-2", "not for c", wall))
    node = node_using(anchor_addr, c)
    await nursery.start(node.run)
    mailbox = mailbox_client(node)
    assert mailbox is not None and node.inbox is not None
    with trio.fail_after(WAIT_S):
        await mailbox.wait_counters(lambda k: k.acked >= 1)
    counters = mailbox.counters
    assert isinstance(service, LosesFirstAck) and service.acks_lost == 1
    assert (counters.fetched, counters.delivered, counters.exchange_failures) == (2, 2, 1)  # fetched twice
    msgs = node.inbox.list()
    assert [(m.id, m.sender, m.text, m.private) for m in msgs] == [
        ("MSG-1", a.peer_id_hex, "see you at the river", True)
    ]
    assert await service.storage.count(c.peer_id, wall) == 0
    assert await service.storage.count(None, wall) == 1  # the other recipient's envelope stays
    node.request_stop()


async def test_an_unopenable_envelope_is_acknowledged_and_dropped(nursery: trio.Nursery) -> None:
    anchor_addr, service = await serve_anchor(nursery)
    a, c, impostor = Identity.generate(), Identity.generate(), Identity.generate()
    wall = Clock().wall_ms()
    good = envelope_for(a, c, "MSG-3", "the real one", wall)
    # Addressed to c but sealed to another key: c cannot open it, and keeping it would only fetch it forever.
    bad = envelope_for(a, impostor, "MSG-4", "garbage for c", wall)
    bad = encode_envelope(Envelope(c.peer_id, wall + 3_600_000, 1, bad[17:]))
    await service.deposit(bad)
    await service.deposit(good)
    node = node_using(anchor_addr, c)
    await nursery.start(node.run)
    mailbox = mailbox_client(node)
    assert mailbox is not None and node.inbox is not None and node.core is not None
    with trio.fail_after(WAIT_S):
        await mailbox.wait_counters(lambda k: k.acked >= 2)
    assert mailbox.counters.delivered == 1
    assert node.core.counters.courier_refused == 1
    assert [m.text for m in node.inbox.list()] == ["the real one"]
    node.request_stop()


async def test_an_anchor_address_without_a_peer_id_is_refused_by_the_config() -> None:
    ident = Identity.generate()
    with pytest.raises(
        ConfigError, match=r"mailbox\.anchors: '/ip4/127.0.0.1/tcp/4001' is not a multiaddr ending in /p2p/"
    ):
        node_using("/ip4/127.0.0.1/tcp/4001", ident)


async def test_a_link_to_the_anchor_coming_up_fetches_again(nursery: trio.Nursery) -> None:
    anchor_addr, service = await serve_anchor(nursery)
    a, c = Identity.generate(), Identity.generate()
    node = node_using(anchor_addr, c)
    await nursery.start(node.run)
    mailbox = mailbox_client(node)
    assert mailbox is not None and node.inbox is not None
    with trio.fail_after(WAIT_S):
        await mailbox.wait_counters(lambda k: k.fetches >= 1)  # the fetch at start: nothing there yet
    await service.deposit(envelope_for(a, c, "MSG-5", "arrived while you were connected", Clock().wall_ms()))
    with trio.fail_after(WAIT_S):
        await node.connect(anchor_addr)  # a mesh link to the anchor comes up (as a bootstrap redial would)
        await mailbox.wait_counters(lambda k: k.acked >= 1)
    assert mailbox.counters.fetches == 2
    assert [m.text for m in node.inbox.list()] == ["arrived while you were connected"]
    node.request_stop()


async def test_the_deposit_queue_is_bounded_and_link_ups_are_matched_by_peer_id() -> None:
    anchor = Identity.generate()
    addr = f"/ip4/127.0.0.1/tcp/4001/p2p/{BetanetTransport(anchor, LOOPBACK).peer_id}"
    me = Identity.generate()
    settings = MailboxSection(anchors=(addr,), max_pending_deposits=2)
    client = MailboxClient(me, settings, BetanetTransport(me, LOOPBACK), lambda _: True)
    target = client.anchors[0]
    assert target.anchor_key == anchor.signing_public  # the proof will name the anchor's own key
    for envelope in (b"first", b"second", b"third"):
        client.on_sealed(envelope)
    assert list(target.pending) == [b"second", b"third"] and client.counters.deposits_dropped == 1
    target.fetch_due = False
    client.on_link_up("/ip4/10.0.0.9/tcp/4001/p2p/12D3KooWSomeoneElse")
    assert not target.fetch_due
    client.on_link_up(f"/ip4/10.0.0.9/tcp/4001/p2p/{target.peer_id}")
    assert target.fetch_due and target.wake.is_set()
