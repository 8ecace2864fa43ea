"""Courier copies: a message for a peer nobody can reach is sealed, carried by a neighbour that cannot read it,
and handed over when the carrier meets the recipient — after the sender itself has gone offline."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from node.crypto.noise import x25519_public
from node.errors import CryptoError
from node.routing.courier import CourierStore, Envelope, encode_envelope, open_untrusted, seal
from node.routing.mesh import MeshCore
from node.wire import MessageType, Packet, encode_packet
from tests.routing.harness import start_mesh
from tests.routing.test_hoparq import make_cores
from tests.routing.test_multihop import core, pid
from tests.routing.test_neighbours import SIM_TIMEOUT_S, inbox_texts


async def test_a_carrier_delivers_to_a_peer_that_was_offline_after_the_sender_left(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 3, seed=21, courier_after_s=30.0)
    mesh.net.tap = []
    ab, _ = mesh.connect(0, 1)
    bc, _ = mesh.connect(1, 2)
    a, b, c = mesh.nodes
    secret = "the meeting moved to thursday"
    with trio.fail_after(SIM_TIMEOUT_S * 2):
        await mesh.wait_until_known(0, 2)
        await bc.aclose()  # c goes offline
        c_at_a = core(mesh, 0).peers.get(pid(mesh, 2))
        assert c_at_a is not None
        await a.wait_until(lambda: not c_at_a.reachable(trio.current_time(), 60.0))
        message_id = a.send_private(c.identity.peer_id_hex, secret)
        # After courier_after_s, a seals the message and sprays half its copies to b, its only neighbour.
        await b.wait_until(lambda: core(mesh, 1).counters.courier_carried >= 1)
        assert core(mesh, 0).counters.courier_sealed == 1
        await ab.aclose()  # the sender leaves for good
        mesh.connect(1, 2)  # much later, c comes back — next to b only
        await c.wait_until(lambda: bool(inbox_texts(mesh, 2)))
    assert inbox_texts(mesh, 2) == [(secret, True)]
    assert c.inbox is not None and c.inbox.list()[0].id == message_id
    assert c.inbox.list()[0].sender == a.identity.peer_id_hex  # the sealed sender key is authenticated
    assert core(mesh, 2).counters.courier_opened >= 1
    # b carried it without being able to read it: the plaintext never crossed any link.
    assert not any(secret.encode() in f for _, _, f in mesh.net.tap)
    assert any(src == "n1" and dst == "n2" and f[1] == MessageType.COURIER_ENVELOPE for src, dst, f in mesh.net.tap)
    assert a.outgoing[message_id].state == "pending"  # no ack can reach a: it is gone


def test_envelopes_open_only_for_their_recipient_and_copies_halve() -> None:
    sender, recipient, other = os.urandom(32), os.urandom(32), os.urandom(32)
    rid = bytes(8)
    sealed = seal(
        b"hello",
        sender_static=sender,
        recipient_id=rid,
        recipient_static=x25519_public(recipient),
        expires_at_ms=10_000,
    )
    env = Envelope(rid, 10_000, 8, sealed)
    _, plaintext = open_untrusted(env, recipient)
    assert plaintext == b"hello"
    with pytest.raises(CryptoError):
        open_untrusted(env, other)
    with pytest.raises(CryptoError):  # a carrier that stretches the expiry breaks the seal
        open_untrusted(Envelope(rid, 99_999, 8, sealed), recipient)
    store = CourierStore(max_envelopes=2)
    assert store.add(env, now_ms=0)
    given = store.meet(b"carrier1", now_ms=1)
    assert [e.copies for e in given] == [4]
    assert store.meet(b"carrier1", now_ms=2) == []  # never twice to the same carrier
    assert [e.copies for e in store.meet(b"carrier2", now_ms=3)] == [2]
    assert [e.copies for e in store.meet(rid, now_ms=4)] == [2]  # the recipient gets what is left
    assert not store.add(env, now_ms=20_000)  # expired


def _env_frame(node: MeshCore, env: Envelope, now: float) -> bytes:
    pkt = Packet(1, MessageType.COURIER_ENVELOPE, 1, node.wall_ms(now), os.urandom(8), node.peer_id, (), b"")
    return encode_packet(dataclasses.replace(pkt, payload=encode_envelope(env)))


def _held(node: MeshCore, recipient: bytes) -> bool:
    return any(c.envelope.recipient_id == recipient for c in node.couriers)


def test_junk_envelopes_cannot_push_out_an_honest_one() -> None:
    """Review: far-future junk was never evicted and pushed honest envelopes out (nearest expiry went first)."""
    [node] = make_cores(1)
    for link in ("X", "H"):
        node.link_up(link, 1_200_000, 0.0)
    node.frames_to_send()
    now = 1.0
    century = node.wall_ms(now) + 100 * 365 * 86_400_000
    node.receive_frame("X", _env_frame(node, Envelope(os.urandom(8), century, 255, os.urandom(2048)), now), now)
    assert len(node.couriers) == 0 and node.counters.courier_refused == 1  # beyond courier_expiry_s: refused
    soon = node.wall_ms(now) + 23 * 3_600_000  # within the lifetime: carried, but the link shares the room
    for _ in range(node.couriers.max_envelopes):
        node.receive_frame("X", _env_frame(node, Envelope(os.urandom(8), soon, 255, os.urandom(2048)), now), now)
    assert len(node.couriers) == node.couriers.max_envelopes
    assert max(c.copies for c in node.couriers) == node.settings.courier_copies  # copies capped
    honest = os.urandom(8)
    node.receive_frame("H", _env_frame(node, Envelope(honest, soon - 3_600_000, 4, os.urandom(300)), now), now)
    for _ in range(50):
        node.receive_frame("X", _env_frame(node, Envelope(os.urandom(8), soon, 255, os.urandom(2048)), now), now)
    assert _held(node, honest) and len(node.couriers) == node.couriers.max_envelopes
