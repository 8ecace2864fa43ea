"""Our node against a BitChat peer scripted from BITCHAT.md (tests/transports/ble/bitchat_peer.py: its own packet
packing, TLVs, fragments and signatures; Noise from `noiseprotocol`) over Bumble virtual radios: announce both
ways, Noise XX handshake, private message with delivery ack, the node's private message with delivered + read
receipts, public messages, fragments both ways, and leave.

The codec's own vectors from BITCHAT.md §6 are checked in tests/wire/test_vectors.py (not repeated here)."""

from __future__ import annotations

import random
from pathlib import Path

import nacl.signing
import trio

from node.identity import Identity
from node.node import Node
from node.routing.mesh import MeshCore
from node.settings import Config, NodeSection
from node.transports.ble.bumble_adapter import BumbleAdapter, open_bumble_world
from node.transports.ble.core import BleSettings
from node.transports.ble.transport import BleTransport
from tests.transports.ble.bitchat_peer import (
    ANNOUNCE,
    DELIVERED,
    MESSAGE,
    PRIVATE_MESSAGE,
    READ_RECEIPT,
    ScriptedBitChatPeer,
    parse,
    tlvs,
    verifier_preimage,
)

TIMEOUT_S = 60.0  # real time; passing runs take a few seconds


def texts(node: Node) -> list[tuple[str, bool, str]]:
    assert node.inbox is not None
    return [(m.text, m.private, m.sender) for m in node.inbox.list(limit=100)]


async def test_scripted_bitchat_peer_talks_to_our_node(tmp_path: Path) -> None:
    cfg = Config(data_dir=tmp_path / "node", node=NodeSection(nickname="pi"))
    cfg.data_dir.mkdir()
    rng = random.Random(5)
    ident = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    async with open_bumble_world() as world, trio.open_nursery() as nursery:
        peer = ScriptedBitChatPeer(world, nickname="alice-phone")
        # The peer's radio starts first: in a virtual world the lower address dials, as the phone should here.
        await nursery.start(peer.adapter_first)
        node = Node(cfg, ident, transports=[BleTransport(BumbleAdapter(world), BleSettings())], control=False, rng=rng)
        await nursery.start(node.run)
        with trio.fail_after(TIMEOUT_S):
            await peer.connected.wait()
            node_id = ident.peer_id

            # Announce: the peer's is accepted (the node knows it), the node's verifies under the spec's rules.
            await peer.send_frame(peer.announce())
            theirs = await peer.next_of(ANNOUNCE, sender=node_id)
            fields = peer.check_announce(theirs)
            assert fields[1] == b"pi" and theirs.ttl == 7
            await node.wait_until(lambda: node.core is not None and node.core.peers.get(peer.peer_id) is not None)

            # Noise XX with the peer as initiator; then a private message and the node's delivery ack.
            await peer.handshake(node_id)
            await peer.send_encrypted(PRIVATE_MESSAGE, peer.private_message("msg-1", "hello from a phone"))
            ptype, data = await peer.receive_encrypted()
            assert (ptype, data) == (DELIVERED, b"msg-1")
            await node.wait_until(lambda: ("hello from a phone", True, peer.peer_id.hex()) in texts(node))

            # The node's private message: the peer decrypts it and answers delivered + read receipts.
            mid = node.send_private(peer.peer_id.hex(), "hello phone, this is the pi")
            ptype, data = await peer.receive_encrypted()
            assert ptype == PRIVATE_MESSAGE
            fields = tlvs(data)
            assert fields[0].decode() == mid and fields[1].decode() == "hello phone, this is the pi"
            await peer.send_encrypted(DELIVERED, mid.encode())
            await peer.send_encrypted(READ_RECEIPT, mid.encode())
            await node.wait_until(lambda: node.outgoing[mid].state == "delivered")

            # Public messages, short and fragmented (over one 512-byte GATT value), in both directions.
            await peer.send_frame(peer.public_message("public hello"))
            long_text = " ".join(f"word{i}" for i in range(600))  # ~4.9 KB: fragments on the way in
            await peer.send_frame(peer.public_message(long_text))
            await node.wait_until(lambda: ("public hello", False, peer.peer_id.hex()) in texts(node))
            await node.wait_until(lambda: (long_text, False, peer.peer_id.hex()) in texts(node))
            assert core_of(node).counters.fragments_reassembled >= 1
            letters = random.Random(9)
            big_reply = "".join(letters.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(5000))  # ~3 KB deflated
            node.broadcast(big_reply)
            msg = await peer.next_of(MESSAGE, sender=node_id)  # reassembled by the peer from the node's fragments
            assert msg.payload.decode() == big_reply
            assert peer.fragments_received > 1
            assert msg.signature is not None
            nacl.signing.VerifyKey(theirs_key(theirs)).verify(verifier_preimage(msg), msg.signature)

            # Leave: the node believes the signed leave and forgets the peer's session.
            await peer.send_frame(peer.leave())
            core = node.core
            assert core is not None
            await node.wait_until(lambda: (info := core.peers.get(peer.peer_id)) is not None and info.left)
            assert core.sessions.session(peer.peer_id) is None
        node.request_stop()
        nursery.cancel_scope.cancel()


def core_of(node: Node) -> MeshCore:
    assert node.core is not None
    return node.core


def theirs_key(announce_frame: object) -> bytes:
    assert hasattr(announce_frame, "payload")
    return tlvs(announce_frame.payload)[3]


def test_the_peer_codec_reads_a_frame_it_wrote() -> None:
    """A guard for the test helper itself: pack/parse agree on every field, and padding is ignored."""
    from tests.transports.ble.bitchat_peer import pack, pkcs7_pad

    f = pkcs7_pad(pack(0x11, b"A" * 8, b"xyz", ts_ms=5, recipient=b"B" * 8))
    p = parse(f)
    assert (p.type, p.ts_ms, p.sender, p.recipient, p.payload, p.ttl) == (0x11, 5, b"A" * 8, b"B" * 8, b"xyz", 7)
    assert len(f) == 256


async def test_node_relays_between_two_bitchat_peers_as_the_spec_says(tmp_path: Path) -> None:
    """Two scripted phones connected to our node only: what one sends reaches the other through our node with
    the received bytes untouched but for the TTL byte, decremented (BITCHAT.md §5); a TTL-1 packet stops here."""
    cfg = Config(data_dir=tmp_path / "node", node=NodeSection(nickname="relay-pi"))
    cfg.data_dir.mkdir()
    rng = random.Random(6)
    ident = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    async with open_bumble_world() as world, trio.open_nursery() as nursery:
        alice = ScriptedBitChatPeer(world, nickname="alice")
        bob = ScriptedBitChatPeer(world, nickname="bob")
        await nursery.start(alice.adapter_first)
        await nursery.start(bob.adapter_first)
        node = Node(cfg, ident, transports=[BleTransport(BumbleAdapter(world), BleSettings())], control=False, rng=rng)
        await nursery.start(node.run)
        with trio.fail_after(TIMEOUT_S):
            await alice.connected.wait()
            await bob.connected.wait()
            announce = alice.announce()
            await alice.send_frame(announce)
            relayed = await bob.next_of(ANNOUNCE, sender=alice.peer_id)
            assert relayed.ttl == 6
            assert relayed.signed_part[:2] + relayed.signed_part[3:] == announce[:2] + announce[3:-64]
            hello = alice.public_message("hello bob, via the pi")
            await alice.send_frame(hello)
            msg = await bob.next_of(MESSAGE, sender=alice.peer_id)
            assert msg.ttl == 6 and msg.payload == b"hello bob, via the pi"
            assert msg.signature == hello[-64:]
            # TTL 1: processed by the node, not relayed; the next frame bob sees from alice is the TTL-7 one.
            last_hop = bytearray(alice.public_message("only for the pi"))
            last_hop[2] = 1
            await alice.send_frame(bytes(last_hop))
            await node.wait_until(lambda: ("only for the pi", False, alice.peer_id.hex()) in texts(node))
            await alice.send_frame(alice.public_message("for everyone"))
            assert (await bob.next_of(MESSAGE, sender=alice.peer_id)).payload == b"for everyone"
        node.request_stop()
        nursery.cancel_scope.cancel()


async def test_node_initiates_xx_with_a_bitchat_peer(tmp_path: Path) -> None:
    """The node has a message for a phone it has no session with: it starts XX (the phone answers with
    noiseprotocol as responder), then sends the message encrypted; the phone's delivered ack settles it."""
    cfg = Config(data_dir=tmp_path / "node", node=NodeSection(nickname="pi"))
    cfg.data_dir.mkdir()
    rng = random.Random(7)
    ident = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    async with open_bumble_world() as world, trio.open_nursery() as nursery:
        peer = ScriptedBitChatPeer(world, nickname="bob-phone")
        await nursery.start(peer.adapter_first)
        node = Node(cfg, ident, transports=[BleTransport(BumbleAdapter(world), BleSettings())], control=False, rng=rng)
        await nursery.start(node.run)
        with trio.fail_after(TIMEOUT_S):
            await peer.connected.wait()
            await peer.send_frame(peer.announce())
            await node.wait_until(lambda: core_of(node).peers.get(peer.peer_id) is not None)
            mid = node.send_private(peer.peer_id.hex(), "you have mail")
            await peer.answer_handshake(ident.peer_id)
            ptype, data = await peer.receive_encrypted()
            assert ptype == PRIVATE_MESSAGE and tlvs(data)[1] == b"you have mail"
            await peer.send_encrypted(DELIVERED, mid.encode())
            await node.wait_until(lambda: node.outgoing[mid].state == "delivered")
        node.request_stop()
        nursery.cancel_scope.cancel()
