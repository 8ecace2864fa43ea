"""Frames that used to crash or exhaust the core (issue 13), each driven through MeshCore's public API: the core
must drop and count them, and never let an exception escape ``receive_frame`` / ``handle_timer``."""

from __future__ import annotations

import os
import random

import nacl.signing

from node.identity import Identity
from node.routing.courier import CourierStore, Envelope, encode_envelope, seal
from node.routing.mesh import MeshCore
from node.wire import (
    Announce,
    FragmentPayload,
    MessageType,
    NoisePayloadType,
    Packet,
    Ping,
    encode_announce,
    encode_fragment,
    encode_noise_payload,
    encode_packet,
    encode_ping,
    encode_private_message,
    sign_packet,
)
from tests.routing.test_hoparq import make_cores


def _core(mtu: int = 1_200_000) -> MeshCore:
    [core] = make_cores(1)
    core.link_up("L", mtu, 0.0)
    core.frames_to_send()
    return core


def _ident(rng: random.Random) -> Identity:
    return Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))


def _announce(core: MeshCore, ident: Identity, now: float, ttl: int = 5) -> bytes:
    ann = Announce("x", ident.noise_public, ident.signing_public, (), None, None)
    pkt = Packet(1, MessageType.ANNOUNCE, ttl, core.wall_ms(now), ident.peer_id, None, (), encode_announce(ann))
    return encode_packet(sign_packet(pkt, ident.signing_key))


def _drive(core: MeshCore, until: float) -> None:
    while (t := core.get_timer()) is not None and t <= until:
        core.handle_timer(t)
        core.frames_to_send()


def test_nested_fragments_are_dropped_not_recursed_into() -> None:
    core = _core()
    sender = os.urandom(8)
    now = 1.0
    frame = encode_packet(Packet(1, MessageType.MESSAGE, 7, core.wall_ms(now), sender, None, (), b"hi"))
    for level in range(600):  # each level claims to carry a MESSAGE but carries the fragment below it
        frag = FragmentPayload(os.urandom(8), 0, 1, MessageType.MESSAGE, frame)
        pkt = Packet(1, MessageType.FRAGMENT, 7, core.wall_ms(now) + level + 1, sender, None, (), encode_fragment(frag))
        frame = encode_packet(pkt)
    core.receive_frame("L", frame, now)
    honest = FragmentPayload(os.urandom(8), 0, 1, MessageType.FRAGMENT, frame)  # says so: refused at once
    core.receive_frame(
        "L", encode_packet(Packet(1, 0x20, 7, core.wall_ms(now), sender, None, (), encode_fragment(honest))), now
    )
    assert core.counters.nested_fragment == 2
    assert core.counters.contained_bugs == 0


def test_courier_copies_saturate_at_one_byte() -> None:
    store = CourierStore(8)
    env = Envelope(os.urandom(8), 10_000, 255, os.urandom(200))
    assert store.add(env, 0) and store.add(env, 0)
    [held] = list(store)
    assert held.copies == 255
    for got in store.meet(os.urandom(8), 0):
        encode_envelope(got)  # used to raise struct.error (510 copies in one byte)


def test_courier_envelopes_with_255_copies_twice_do_not_crash_the_next_encounter() -> None:
    core = _core()
    now = 1.0
    env = encode_envelope(Envelope(os.urandom(8), core.wall_ms(now) + 60_000, 255, os.urandom(200)))
    neighbour = _ident(random.Random(3))
    for i in range(2):
        pkt = Packet(
            1, MessageType.COURIER_ENVELOPE, 1, core.wall_ms(now) + i, neighbour.peer_id, core.peer_id, (), env
        )
        core.receive_frame("L", encode_packet(pkt), now)
    core.receive_frame("L", _announce(core, neighbour, now, ttl=7), now)  # a direct neighbour: hands it copies
    assert core.counters.courier_handed >= 1 and core.counters.contained_bugs == 0


def test_a_huge_ping_gets_no_pong_and_no_crash() -> None:
    core = _core()
    now = 1.0
    payload = encode_ping(Ping(os.urandom(8), 7)) + os.urandom(70_000)  # incompressible, > 64 KiB
    pkt = Packet(2, MessageType.PING, 7, core.wall_ms(now), os.urandom(8), core.peer_id, (), payload)
    core.receive_frame("L", encode_packet(pkt), now)
    assert core.frames_to_send() == []
    assert core.counters.ping_refused == 1 and core.counters.contained_bugs == 0


def test_relaying_onto_a_tiny_mtu_link_that_needs_too_many_fragments_is_dropped_and_counted() -> None:
    [core] = make_cores(1)
    core.link_up("big", 1_200_000, 0.0)
    core.link_up("tiny", 64, 0.0)
    core.frames_to_send()
    now = 1.0
    pkt = Packet(2, 0x30, 5, core.wall_ms(now), os.urandom(8), None, (), os.urandom(40_000))  # unknown type: relayed
    core.receive_frame("big", encode_packet(pkt), now)
    _drive(core, now + 5)  # the relay leaves on its timer: used to raise EncodeError in handle_timer
    assert core.counters.unencodable >= 1 and core.counters.contained_bugs == 0


def test_received_public_messages_over_the_send_limit_are_dropped_and_not_relayed() -> None:
    [core] = make_cores(1, max_public_text_chars=1000)
    core.link_up("a", 1_200_000, 0.0)
    core.link_up("b", 1_200_000, 0.0)
    core.frames_to_send()
    now = 1.0
    sender = _ident(random.Random(4))
    core.receive_frame("a", _announce(core, sender, now), now)
    _drive(core, now + 1)
    core.frames_to_send()
    while core.next_event() is not None:
        pass
    text = b"A" * 200_000  # compresses to ~200 B on the wire; inflates to 200 KB (< [wire] max_message_payload_bytes)
    pkt = sign_packet(
        Packet(2, MessageType.MESSAGE, 5, core.wall_ms(now), sender.peer_id, None, (), text), sender.signing_key
    )
    frame = encode_packet(pkt)
    assert len(frame) < 5000
    core.receive_frame("a", frame, now)
    _drive(core, now + 5)
    assert core.next_event() is None  # never shown (nor stored by the node)
    assert not [f for _, f in core.frames_to_send() if len(f) > 2000]  # nor relayed
    assert core.counters.oversize == 1


def test_a_bug_hit_by_one_frame_is_contained_and_counted() -> None:
    core = _core()
    now = 1.0

    def boom(*_: object) -> None:
        raise KeyError("a bug")

    core.paths.on_announce = boom  # type: ignore[method-assign,assignment]
    assert core.receive_frame("L", _announce(core, _ident(random.Random(5)), now), now) is True  # no exception
    assert core.counters.contained_bugs == 1 and core.containment.by_cause == {"bug:KeyError": 1}
    core.relays.pop_due = boom  # type: ignore[method-assign,assignment]
    core.handle_timer(100.0)  # no exception; the other timer tasks still ran (the announce went out)
    assert core.counters.contained_bugs == 2
    assert any(f for _, f in core.frames_to_send())


def test_ciphertexts_from_throwaway_senders_start_a_bounded_number_of_floods() -> None:
    core = _core()
    now = 1.0
    for _ in range(500):  # each from a new identity, no session: each used to start a flooded handshake
        pkt = Packet(
            1, MessageType.NOISE_ENCRYPTED, 7, core.wall_ms(now), os.urandom(8), core.peer_id, (), os.urandom(64)
        )
        core.receive_frame("L", encode_packet(pkt), now)
    handshakes = [f for _, f in core.frames_to_send() if f[1] == MessageType.NOISE_HANDSHAKE]
    assert len(handshakes) <= 20  # the global burst
    assert core.counters.rate_limited >= 480


def test_courier_envelopes_from_throwaway_keys_start_a_bounded_number_of_floods() -> None:
    """Issue 13 (exhaustion): a courier envelope sealed to us by a throwaway key is opened and delivered, and its
    delivery ack needs a session, so each used to start a flooded handshake; acks for senders without a session
    share the remote-flood budget (the messages still arrive)."""
    core = _core()
    now = 1.0
    expires = core.wall_ms(now) + 3_600_000
    for i in range(300):
        plaintext = encode_noise_payload(NoisePayloadType.PRIVATE_MESSAGE, encode_private_message(f"m{i}", "hi"))
        sealed = seal(
            plaintext,
            sender_static=os.urandom(32),  # a new identity for each envelope
            recipient_id=core.peer_id,
            recipient_static=core.identity.noise_public,
            expires_at_ms=expires,
        )
        payload = encode_envelope(Envelope(core.peer_id, expires, 1, sealed))
        pkt = Packet(1, MessageType.COURIER_ENVELOPE, 1, core.wall_ms(now), os.urandom(8), core.peer_id, (), payload)
        core.receive_frame("L", encode_packet(pkt), now)
    handshakes = [f for _, f in core.frames_to_send() if f[1] == MessageType.NOISE_HANDSHAKE]
    assert core.counters.courier_opened == 300  # delivered, not dropped
    assert len(handshakes) <= 20  # the global burst of remote-triggered floods
    assert core.counters.rate_limited >= 280 and core.counters.contained_bugs == 0


def test_far_pings_from_one_origin_get_a_bounded_number_of_pongs() -> None:
    core = _core()
    origin = os.urandom(8)
    pongs = 0
    for i in range(100):
        now = 1.0 + i * 0.1
        pkt = Packet(
            1, MessageType.PING, 3, core.wall_ms(now), origin, core.peer_id, (), encode_ping(Ping(os.urandom(8), 7))
        )
        core.receive_frame("L", encode_packet(pkt), now)
        pongs += sum(1 for _, f in core.frames_to_send() if f[1] == MessageType.PONG)
    assert pongs <= 5  # burst 3 + 0.1/s over 10 s
    assert core.counters.contained_bugs == 0


def _signed(core: MeshCore, ident: Identity, msg_type: int, now: float, payload: bytes = b"") -> bytes:
    pkt = Packet(1, msg_type, 7, core.wall_ms(now), ident.peer_id, None, (), payload)
    return encode_packet(sign_packet(pkt, ident.signing_key))


def test_an_old_leave_replayed_after_the_dedupe_cache_is_flooded_is_refused() -> None:
    core = _core()
    peer = _ident(random.Random(6))
    core.receive_frame("L", _announce(core, peer, 1.0), 1.0)
    leave = _signed(core, peer, MessageType.LEAVE, 2.0)
    core.receive_frame("L", leave, 2.0)
    info = core.peers.get(peer.peer_id)
    assert info is not None and info.left
    core.receive_frame("L", _announce(core, peer, 10.0), 10.0)  # it came back
    assert not info.left
    for _ in range(1100):  # flood the 1,000-entry dedupe cache with junk it remembers
        junk = Packet(1, 0x30, 3, core.wall_ms(11.0), os.urandom(8), None, (), os.urandom(16))
        core.receive_frame("L", encode_packet(junk), 11.0)
    assert core.receive_frame("L", leave, 20.0)  # within the 120 s clock window, no longer in the dedupe cache
    assert not info.left and core.counters.leave_replayed == 1
    old_announce = _announce(core, peer, 1.5)  # and an announce from before its leave does not resurrect it
    core.receive_frame("L", _signed(core, peer, MessageType.LEAVE, 30.0), 30.0)
    assert info.left
    core.receive_frame("L", old_announce, 31.0)
    assert info.left and core.counters.leave_replayed == 2


def test_one_peer_cannot_evict_anothers_reassembly_nor_hold_more_than_its_bytes() -> None:
    core = _core()
    s = core.settings
    now = 1.0
    victim, attacker = os.urandom(8), os.urandom(8)

    def fragment(sender: bytes, fid: bytes, index: int, total: int, chunk: bytes) -> bytes:
        frag = FragmentPayload(fid, index, total, MessageType.MESSAGE, chunk)
        return encode_packet(Packet(1, 0x20, 7, core.wall_ms(now), sender, None, (), encode_fragment(frag)))

    whole = encode_packet(Packet(1, 0x30, 7, core.wall_ms(now), victim, None, (), b"the victim's frame"))
    core.receive_frame("L", fragment(victim, b"V" * 8, 0, 2, whole[:10]), now)
    for i in range(300):  # more sets than the global bound (128), each with a chunk of 60 KB
        core.receive_frame("L", fragment(attacker, i.to_bytes(8, "big"), 0, 2, os.urandom(60_000)), now)
    sizes = core.bounded_sizes()
    assert sizes["reassembly_bytes"][0] <= s.fragment_max_bytes_per_peer + 100
    assert core.reassembler.peer_count() == 2  # the attacker's own sets went, the victim's stayed
    core.receive_frame("L", fragment(victim, b"V" * 8, 1, 2, whole[10:]), now)
    assert core.counters.fragments_reassembled == 1


def test_a_mixed_flood_from_many_identities_stays_within_every_bound() -> None:
    core = _core()
    rng = random.Random(12)
    now = 1.0
    for i in range(1200):
        now += 0.01
        sender = os.urandom(8)
        kind = i % 6
        if kind == 0:
            core.receive_frame("L", _announce(core, _ident(rng), now), now)
        elif kind == 1:
            pkt = Packet(1, 0x10, 7, core.wall_ms(now), sender, core.peer_id, (), os.urandom(32))  # message 1
            core.receive_frame("L", encode_packet(pkt), now)
        elif kind == 2:
            frag = FragmentPayload(os.urandom(8), 0, 3, MessageType.MESSAGE, os.urandom(2000))
            pkt = Packet(1, 0x20, 7, core.wall_ms(now), sender, None, (), encode_fragment(frag))
            core.receive_frame("L", encode_packet(pkt), now)
        elif kind == 3:
            env = encode_envelope(Envelope(os.urandom(8), core.wall_ms(now) + 10**9, 9, os.urandom(300)))
            pkt = Packet(1, MessageType.COURIER_ENVELOPE, 1, core.wall_ms(now), sender, core.peer_id, (), env)
            core.receive_frame("L", encode_packet(pkt), now)
        elif kind == 4:
            pkt = Packet(1, 0x11, 7, core.wall_ms(now), sender, core.peer_id, (), os.urandom(80))
            core.receive_frame("L", encode_packet(pkt), now)
        else:
            pkt = Packet(1, 0x30, 3, core.wall_ms(now), sender, None, (), os.urandom(500))
            core.receive_frame("L", encode_packet(pkt), now)
        if i % 100 == 0:
            _drive(core, now)
            core.frames_to_send()
            for name, (size, bound) in core.bounded_sizes().items():
                assert 0 <= size <= bound, f"{name}: {size} > {bound}"
    assert core.counters.contained_bugs == 0 and core.counters.contained_errors == 0
