"""Courier copies: a message for a peer nobody can reach is sealed, carried by a neighbour that cannot read it,
and handed over when the carrier meets the recipient — after the sender itself has gone offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from node.crypto.noise import x25519_public
from node.errors import CryptoError
from node.routing.courier import CourierStore, Envelope, open_untrusted, seal
from node.wire import MessageType
from tests.routing.harness import start_mesh
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
