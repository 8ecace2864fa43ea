"""Identity pins (node.routing.pins): a peer ID -> signing key binding proven by a Noise handshake survives a flood
of fresh identities, and an announce claiming the peer with another signing key is refused and counted."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import nacl.signing
import pytest
import trio
import trio.testing

from node.clock import Clock
from node.control.methods import build_registry
from node.control.rpc import NoParams
from node.crypto.session import XXHandshake
from node.identity import Identity
from node.node import Node
from node.pinfile import PinFile
from node.routing.mesh import MeshCore
from node.routing.pins import (
    NEW_PINS_BURST,
    NEW_PINS_PER_LINK_BURST,
    NEW_PINS_PER_LINK_PER_MIN,
    NEW_PINS_PER_MIN,
    PIN_RATE_LINKS,
    Pin,
    PinChange,
    PinStore,
    decode_peer_state_signing_key_untrusted,
    encode_peer_state,
)
from node.transports.betanet.link import rate_key_of
from node.wire import (
    Announce,
    MessageType,
    NoisePayloadType,
    Packet,
    decode_packet_untrusted,
    encode_announce,
    encode_noise_payload,
    encode_packet,
    sign_packet,
)
from tests.routing.harness import EPOCH_MS, start_mesh
from tests.routing.test_hoparq import Wire, make_cores


def _claim(now_ms: int, peer_id: bytes, noise_key: bytes, signer: nacl.signing.SigningKey, ttl: int = 5) -> bytes:
    ann = Announce("v", noise_key, bytes(signer.verify_key), (), None, None)
    pkt = Packet(1, MessageType.ANNOUNCE, ttl, now_ms, peer_id, None, (), encode_announce(ann))
    return encode_packet(sign_packet(pkt, signer))


def test_a_peer_proven_by_a_handshake_cannot_be_hijacked_after_a_flood_of_identities() -> None:
    c, v = make_cores(2)
    wire = Wire([c, v])
    wire.connect(0, 1)
    wire.run_until(10.0)
    wire.send_private(1, 0, "hello")  # a handshake: v proves its Noise key and tells c its signing key
    wire.run_until(15.0)
    assert c.pins.get(v.peer_id) == Pin(v.peer_id, v.identity.noise_public, v.identity.signing_public)
    assert v.pins.get(c.peer_id) is not None and c.counters.pins_added == 1
    now = wire.now
    c.link_up("X", 1_200_000, now)  # the attacker's link
    rng = random.Random(9)
    for i in range(1000):  # fresh identities push v out of the LRU peer table
        ident = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
        c.receive_frame("X", _claim(c.wall_ms(now) + i, ident.peer_id, ident.noise_public, ident.signing_key), now)
    assert c.peers.get(v.peer_id) is None
    attacker = nacl.signing.SigningKey(rng.randbytes(32))
    c.receive_frame("X", _claim(c.wall_ms(now) + 2000, v.peer_id, v.identity.noise_public, attacker), now)
    assert c.peers.get(v.peer_id) is None and c.counters.pin_conflict == 1  # refused and counted
    genuine = _claim(c.wall_ms(now) + 3000, v.peer_id, v.identity.noise_public, v.identity.signing_key)
    c.receive_frame("X", genuine, now)
    info = c.peers.get(v.peer_id)
    assert info is not None and info.signing_public_key == v.identity.signing_public  # v's own announces count


def test_an_unproven_binding_is_replaced_by_the_proven_one() -> None:
    c, v = make_cores(2)
    attacker = nacl.signing.SigningKey(random.Random(3).randbytes(32))
    c.link_up("X", 1_200_000, 0.0)
    c.receive_frame("X", _claim(c.wall_ms(0.5), v.peer_id, v.identity.noise_public, attacker), 0.5)  # first sight
    info = c.peers.get(v.peer_id)
    assert info is not None and info.signing_public_key == bytes(attacker.verify_key)
    c.link_down("X", 0.5)
    c.frames_to_send()
    wire = Wire([c, v])
    wire.now = 1.0
    wire.connect(0, 1)
    wire.run_until(10.0)
    v.send_private(c.peer_id, "it's really me", wire.now)  # v knows c; c's table holds the liar's binding
    wire._drain(1)
    wire.run_until(20.0)
    assert c.pins.get(v.peer_id) is not None
    assert info.signing_public_key == v.identity.signing_public  # the proof replaced the unproven binding
    assert [ev.text for _, ev in wire.received] == ["it's really me"]


def test_pins_are_accepted_at_construction_reported_and_bounded() -> None:
    pins = PinStore(2, [Pin(b"a" * 8, b"n" * 32, b"s" * 32)])
    assert pins.take_changes() == []  # what the node gave us is not a change
    assert pins.confirm(Pin(b"a" * 8, b"n" * 32, b"x" * 32)) == "conflict"
    assert pins.confirm(Pin(b"b" * 8, b"n" * 32, b"s" * 32)) == "new"
    assert pins.confirm(Pin(b"c" * 8, b"n" * 32, b"s" * 32)) == "full"  # never evicts a pin for a new one
    assert len(pins) == 2 and pins.get(b"a" * 8) is not None and pins.get(b"c" * 8) is None
    assert [(ch.peer_id, ch.pin is None) for ch in pins.take_changes()] == [(b"b" * 8, False)]
    assert pins.forget(b"b" * 8) and not pins.forget(b"b" * 8)
    assert pins.confirm(Pin(b"c" * 8, b"n" * 32, b"s" * 32)) == "new"  # the user made room


def _pin(i: int) -> Pin:
    return Pin(i.to_bytes(8, "big"), b"n" * 32, b"s" * 32)


def test_new_pins_are_rate_limited() -> None:
    pins = PinStore(10_000)
    made = [pins.confirm(_pin(i), i * 0.5, f"L{i % 8}") for i in range(300)]  # proofs spread over 8 links
    refill = NEW_PINS_PER_MIN * 299 * 0.5 / 60  # over 150 s: a burst, then 6 a minute
    assert NEW_PINS_BURST + refill - 1 <= made.count("new") <= NEW_PINS_BURST + refill
    assert set(made) == {"new", "later"}


def test_one_link_cannot_use_up_the_pin_budget_of_the_others() -> None:
    """Throwaway keys completing handshakes over one link got every new pin the node would make (the budget was
    global only): now that link gets its own share, and a peer on another link is still pinned."""
    pins = PinStore(10_000)
    flood = [pins.confirm(_pin(i), i * 0.5, "X") for i in range(300)]  # 150 s of proofs from one link
    per_link = NEW_PINS_PER_LINK_BURST + NEW_PINS_PER_LINK_PER_MIN * 299 * 0.5 / 60
    assert per_link - 1 <= flood.count("new") <= per_link < NEW_PINS_BURST / 2
    honest = [pins.confirm(_pin(10_000 + i), 150.0 + i, f"L{i}") for i in range(20)]  # 20 peers on their own links
    assert honest == ["new"] * 20
    assert pins.bounded_sizes()["pin_rate_links"] == (21, PIN_RATE_LINKS)


def test_peer_state_round_trips_and_is_bitchat_shaped() -> None:
    body = encode_peer_state(b"k" * 32, (1 << 33) | 1)
    assert body[:3] == bytes([1, 1, 5]) and body[3:8] == ((1 << 33) | 1).to_bytes(5, "little")
    assert body[8:10] == bytes([2, 32]) and decode_peer_state_signing_key_untrusted(body) == b"k" * 32


async def test_a_node_keeps_its_pins_across_a_restart(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_loop_thread: list[bool] = []  # pin writes (an fsync each batch) never run on the event loop's thread
    apply = PinFile.apply

    def recording_apply(self: PinFile, changes: list[PinChange]) -> None:
        on_loop_thread.append(threading.current_thread() is threading.main_thread())
        apply(self, changes)

    monkeypatch.setattr(PinFile, "apply", recording_apply)
    # Pin writes run on worker threads, which the autojump clock cannot see: jump only after 20 ms of real idleness,
    # so a write in progress is not mistaken for a quiet mesh (that skipped whole timeouts under load).
    autojump_clock.autojump_threshold = 0.02
    mesh = await start_mesh(nursery, tmp_path, 2)
    mesh.connect(0, 1)
    a, b = mesh.nodes
    with trio.fail_after(600):
        await mesh.wait_until_known(0, 1)
        first = a.send_private(b.identity.peer_id_hex, "pin me")
        await a.wait_until(lambda: a.outgoing[first].state == "delivered")
        assert b.core is not None
        await b.wait_until(lambda: b.core is not None and b.core.pins.get(a.identity.peer_id) is not None)
        b.request_stop()
        await a.wait_until(lambda: not a.links)
        await b.stopped.wait()  # (its last pin writes done: a restart before that raced them and lost the pin)
        b2 = Node(
            b.config,
            b.identity,
            transports=[mesh.net.transport("n1-again")],
            clock=Clock(epoch_offset_ms=EPOCH_MS),
            control=False,
        )
        await nursery.start(b2.run)
    assert b2.core is not None
    assert b2.core.pins.get(a.identity.peer_id) == Pin(
        a.identity.peer_id, a.identity.noise_public, a.identity.signing_public
    )
    # The user sees the pin and resets it (`village peers --pins`, `village peers forget ID`): gone from disk too.
    reg = build_registry(b2)

    async def notify(_method: str, _params: object) -> None:
        return None

    listed = await reg.methods["peers.pins"].handler(NoParams(), notify)
    assert [p["peer_id"] for p in listed] == [a.identity.peer_id_hex]
    forget = reg.methods["peers.forget"]
    result = await forget.handler(forget.params(peer=a.identity.peer_id_hex), notify)
    assert result == {"peer_id": a.identity.peer_id_hex, "forgotten": True}
    assert b2.core.pins.get(a.identity.peer_id) is None and b2.pin_file.load() == ()
    assert on_loop_thread and not any(on_loop_thread)


def _frame(core: MeshCore, sender: bytes, t: int, payload: bytes, now: float) -> bytes:
    return encode_packet(Packet(1, t, 7, core.wall_ms(now), sender, core.peer_id, (), payload))


def _handshake_and_pin(core: MeshCore, ident: Identity, signing_pub: bytes, now: float, link: str) -> None:
    """``ident`` completes a Noise handshake with ``core`` over ``link`` and tells it ``signing_pub`` (0x21)."""
    hs = XXHandshake.initiator_for(ident.noise_private)
    core.receive_frame(link, _frame(core, ident.peer_id, MessageType.NOISE_HANDSHAKE, hs.write(), now), now)
    out = [decode_packet_untrusted(d, core.limits) for _, d in core.frames_to_send()]
    msg2 = next(p.payload for p in out if p.type == MessageType.NOISE_HANDSHAKE)
    hs.read_untrusted(msg2)
    core.receive_frame(link, _frame(core, ident.peer_id, MessageType.NOISE_HANDSHAKE, hs.write(), now), now)
    session = hs.finish()
    body = encode_noise_payload(NoisePayloadType.AUTHENTICATED_PEER_STATE, encode_peer_state(signing_pub, 0))
    core.receive_frame(link, _frame(core, ident.peer_id, MessageType.NOISE_ENCRYPTED, session.encrypt(body), now), now)
    core.frames_to_send()


def _new(rng: random.Random) -> Identity:
    return Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))


def test_throwaway_keys_that_complete_handshakes_do_not_evict_an_honest_pin() -> None:
    """Review: each throwaway Noise key that completes XX and sends 0x21 got a durable pin, and past max_pins the
    least recently confirmed (an honest one) was forgotten, reopening the hijack."""
    [core] = make_cores(1, max_pins=50)
    attack_links = [f"X{i}" for i in range(6)]  # (spread over links: one link alone gets its share of new pins)
    for link in ["L", *attack_links]:
        core.link_up(link, 1_200_000, 0.0)
    core.frames_to_send()
    rng = random.Random(7)
    v = _new(rng)
    _handshake_and_pin(core, v, v.signing_public, 1.0, "L")
    assert core.pins.get(v.peer_id) is not None
    now = 1.0
    for i in range(60):
        now += 10.0
        _handshake_and_pin(core, _new(rng), rng.randbytes(32), now, attack_links[i % 6])
    assert core.pins.get(v.peer_id) is not None and len(core.pins) == 50
    assert core.counters.pins_refused == 11
    assert not any(ch.pin is None for ch in core.pins.take_changes())  # nothing deleted on disk
    attacker = nacl.signing.SigningKey(rng.randbytes(32))
    core.receive_frame("X0", _claim(core.wall_ms(now + 1), v.peer_id, v.noise_public, attacker), now + 1)
    info = core.peers.get(v.peer_id)
    assert info is None or info.signing_public_key == v.signing_public  # the hijack stays closed


def test_throwaway_keys_on_one_link_leave_new_pins_for_peers_on_other_links() -> None:
    """Pins were rate-limited only globally: throwaway keys proving themselves over one link (one every 2 s, within
    the handshake budget) took the whole budget, and an honest peer's handshake on another link right after was not
    pinned (``later``) while the flood went on."""
    [core] = make_cores(1)
    for link in ("L", "X"):
        core.link_up(link, 1_200_000, 0.0)
    core.frames_to_send()
    rng = random.Random(8)
    v = _new(rng)
    for i in range(100):
        _handshake_and_pin(core, _new(rng), rng.randbytes(32), 1.0 + 2 * i, "X")
        if i == 90:  # the honest peer, while the flood goes on
            _handshake_and_pin(core, v, v.signing_public, 2.0 + 2 * i, "L")
    assert len(core.pins) <= 1 + NEW_PINS_PER_LINK_BURST + NEW_PINS_PER_LINK_PER_MIN * 200 / 60  # X's share, and v
    assert core.pins.get(v.peer_id) == Pin(v.peer_id, v.noise_public, v.signing_public)


def test_reconnecting_does_not_renew_a_sources_pin_budget() -> None:
    """Link ids are per connection (``betanet:{n}{dir}``, ``ble:{conn}``), and the per-link pin budget was keyed by
    them: an attacker reconnecting got a fresh budget each time. It is keyed by the link's ``rate_key`` now (the
    remote's address or prefix), which a reconnect keeps."""
    [core] = make_cores(1)
    core.link_up("L", 1_200_000, 0.0)
    core.frames_to_send()
    rng = random.Random(9)
    v = _new(rng)
    for i in range(100):
        link = f"betanet:{i // 10}in"  # a new connection every 10 keys, from the same /64
        if i % 10 == 0:
            if i:
                core.link_down(f"betanet:{i // 10 - 1}in", 1.0 + 2 * i)
            core.link_up(link, 1_200_000, 1.0 + 2 * i, rate_key=rate_key_of(f"/ip6/2001:db8:1:2::{i}/udp/1/quic-v1"))
            core.frames_to_send()
        _handshake_and_pin(core, _new(rng), rng.randbytes(32), 1.0 + 2 * i, link)
    _handshake_and_pin(core, v, v.signing_public, 300.0, "L")
    assert len(core.pins) <= 1 + NEW_PINS_PER_LINK_BURST + NEW_PINS_PER_LINK_PER_MIN * 300 / 60  # one source's share
    assert core.pins.get(v.peer_id) == Pin(v.peer_id, v.noise_public, v.signing_public)


def test_a_betanet_links_rate_key_is_its_remotes_address_or_prefix() -> None:
    assert rate_key_of("/ip4/198.51.100.7/tcp/4001/p2p/12D3KooWA") == "betanet:198.51.100.7"
    assert rate_key_of("/ip6/2001:db8:1:2::9/udp/4001/quic-v1/p2p/12D3KooWA") == "betanet:2001:db8:1:2::/64"
    assert rate_key_of("/ip6/::ffff:198.51.100.7/tcp/1/p2p/12D3KooWA") == "betanet:198.51.100.7"
    assert rate_key_of("/p2p/12D3KooWR/p2p-circuit/p2p/12D3KooWA") == "betanet:/p2p/12D3KooWR"  # its relay
    assert rate_key_of("/p2p/12D3KooWA") is None  # no address: the link id


def test_a_binding_taken_over_while_a_session_lives_is_answered_from_the_sessions_proof() -> None:
    """A binding challenge returned whenever a session with the peer existed: with A unpinned (no room for its pin)
    and a session with A alive, an attacker's first-sight announce of A's ID with its own signing key held, and A's
    genuine announces were refused until the session idled out (3,600 s). The signing key A told us inside the
    session is the proof: it replaces the liar's binding at A's next announce."""
    [core] = make_cores(1, max_pins=1)
    for link in ("L", "X"):
        core.link_up(link, 1_200_000, 0.0)
    core.frames_to_send()
    rng = random.Random(12)
    other, a = _new(rng), _new(rng)
    _handshake_and_pin(core, other, other.signing_public, 1.0, "L")  # takes the only pin
    _handshake_and_pin(core, a, a.signing_public, 2.0, "L")  # a session with A; A's pin refused (full)
    assert core.pins.get(a.peer_id) is None and core.delivery.sessions.session(a.peer_id) is not None
    attacker = nacl.signing.SigningKey(rng.randbytes(32))
    core.receive_frame("X", _claim(core.wall_ms(3.0), a.peer_id, a.noise_public, attacker, ttl=7), 3.0)
    info = core.peers.get(a.peer_id)
    assert info is not None and info.signing_public_key == bytes(attacker.verify_key)  # taken over
    core.receive_frame("L", _claim(core.wall_ms(4.0), a.peer_id, a.noise_public, a.signing_key, ttl=7), 4.0)
    info = core.peers.get(a.peer_id)
    assert info is not None and info.signing_public_key == a.signing_public
    assert core.counters.pin_replaced_unproven == 1
    core.receive_frame("L", _claim(core.wall_ms(5.0), a.peer_id, a.noise_public, a.signing_key, ttl=7), 5.0)
    assert core.counters.key_mismatch == 1  # A's announces are taken again
