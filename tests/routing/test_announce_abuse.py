"""What a neighbour or a remote party cannot do to the announce thinning and hop acks: starve nodes by lying about
its neighbours, stretch the relay interval without bound, make us announce more often by reconnecting, make us
hold memory, or make a single-link node resend forever; and what phones keep getting."""

from __future__ import annotations

import os
import random

import nacl.signing

from node.identity import Identity
from node.routing.mesh import MeshCore
from node.wire import Announce, MessageType, Packet, encode_announce, encode_packet, sign_packet
from tests.routing.test_hoparq import Wire, line_of, make_cores


def test_a_neighbour_lying_about_its_neighbours_cannot_starve_a_node() -> None:
    # O - M - R - Y: M claims Y as its neighbour. R must still pass O's announces on to Y (a neighbourship counts
    # for pruning only when both ends name each other).
    cores = make_cores(4)
    o, m, _r, y = cores
    real = m.presence.direct_neighbours
    m.presence.direct_neighbours = lambda: tuple(dict.fromkeys((*real(), y.peer_id)))  # type: ignore[method-assign]
    wire = Wire(cores)
    wire.connect(0, 1)
    wire.connect(1, 2)
    wire.connect(2, 3)
    wire.run_until(300.0)
    assert y.peers.get(o.peer_id) is not None


def test_made_up_identities_stretch_the_relay_interval_only_to_its_cap() -> None:
    [core] = make_cores(1)
    core.link_up("L", 512, 0.0)
    core.frames_to_send()
    rng = random.Random(5)
    for i in range(1000):
        ident = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
        ann = Announce(f"s{i}", ident.noise_public, ident.signing_public, (), None, None)
        pkt = Packet(1, MessageType.ANNOUNCE, 5, core.wall_ms(2.0), ident.peer_id, None, (), encode_announce(ann))
        core.receive_frame("L", encode_packet(sign_packet(pkt, ident.signing_key)), 2.0)
    assert len(core.peers) == 1000
    assert core.announce_relay_interval_s() == core.settings.announce_relay_max_interval_s == 300.0
    assert core.far_expiry_s() == 750.0


def _announces_to_an_unrelated_neighbour(reconnect_every_s: float | None) -> int:
    cores = make_cores(4)
    wire = Wire(cores)
    wire.connect(0, 1)
    wire.connect(0, 2)
    wire.run_until(40.0)
    t0 = wire.now
    while reconnect_every_s and wire.now < t0 + 120:
        link = wire.connect(0, 3)  # a central connects, then drops the link
        wire.run_until(wire.now + 0.5)
        for i in (0, 3):
            cores[i].link_down(link, wire.now)
            wire._drain(i)
        wire.run_until(wire.now + reconnect_every_s - 0.5)
    wire.run_until(t0 + 120)
    sent = wire.of_type(MessageType.ANNOUNCE, src=0, dst=1, since=t0)
    return len([s for s in sent if s.pkt.sender_id == cores[0].peer_id])


def test_a_neighbour_reconnecting_every_few_seconds_does_not_make_us_announce_more() -> None:
    quiet = _announces_to_an_unrelated_neighbour(None)
    assert _announces_to_an_unrelated_neighbour(3.0) <= quiet + 2


def test_a_failed_handshake_leaves_no_held_ciphertext_and_big_ones_are_never_held() -> None:
    [core] = make_cores(1)
    core.link_up("L", 1_200_000, 0.0)
    core.frames_to_send()
    now = 1.0

    def frame(msg_type: int, sender: bytes, payload: bytes) -> bytes:
        return encode_packet(Packet(2, msg_type, 7, core.wall_ms(now), sender, core.peer_id, (), payload))

    for _ in range(20):
        stranger = os.urandom(8)
        core.receive_frame("L", frame(MessageType.NOISE_HANDSHAKE, stranger, os.urandom(32)), now)  # message 1
        core.receive_frame("L", frame(MessageType.NOISE_ENCRYPTED, stranger, os.urandom(100)), now)  # held early
        core.receive_frame("L", frame(MessageType.NOISE_ENCRYPTED, stranger, os.urandom(100_000)), now)  # too big
        assert [len(p.payload) for p, _ in core.delivery.early[stranger]] == [100]
        core.receive_frame("L", frame(MessageType.NOISE_HANDSHAKE, stranger, os.urandom(64)), now)  # bogus msg 3
        # A message 3 that does not read may be forged (the sender field is not authenticated): what waits for a
        # handshake stays while one is under way (until its deadline), and goes with the last of them.
        assert (stranger in core.delivery.early) == core.sessions.handshaking(stranger)
    assert core.counters.handshake_failed == 20
    while (t := core.get_timer()) is not None and t <= now + 60:
        core.handle_timer(t)
        core.frames_to_send()
    assert not core.delivery.early and core.sessions.bounded_sizes()["responder_handshakes"][0] == 0


def test_the_duplicate_index_holds_digests_not_frames() -> None:
    [core] = make_cores(1)
    core.link_up("L", 1_200_000, 0.0)
    core.frames_to_send()
    for _ in range(20):  # unknown broadcast types are relayed unjudged, so accepted and remembered
        pkt = Packet(2, 0x30, 3, core.wall_ms(1.0), os.urandom(8), None, (), os.urandom(200_000))
        core.receive_frame("L", encode_packet(pkt), 1.0)
    assert len(core._raw_seen) == 20 and sum(len(k) for k in core._raw_seen) == 20 * 16


def test_a_single_link_node_does_not_fail_over_onto_the_same_link_forever() -> None:
    def encrypted_frames(**mesh: object) -> tuple[int, int]:
        cores = make_cores(2, **mesh)  # type: ignore[arg-type]
        wire, _ = line_of(cores)
        wire.send_private(0, 1, "first")
        wire.run_until(wire.now + 10)
        wire.drop = lambda s: s.src == 0 and s.pkt.type == MessageType.NOISE_ENCRYPTED  # the link eats them
        t0 = wire.now
        mid = wire.send_private(0, 1, "second")
        wire.run_until(t0 + 300)
        p = cores[0].pending.get(mid)
        assert p is not None
        return len(wire.of_type(MessageType.NOISE_ENCRYPTED, src=0, since=t0)), p.attempts

    with_acks, attempts = encrypted_frames()
    without, attempts_without = encrypted_frames(hop_retries=0)
    assert attempts == attempts_without  # the end-to-end schedule is the same ...
    assert with_acks <= (1 + 5) * without  # ... each send resent at most hop_retries (5) times, no failover loop


def test_a_phone_next_to_us_hears_every_announce_we_hear() -> None:
    # Node 1 has three neighbours: node 0 (whose announces it hears directly), node 2 (AIVillage) and node 3, a
    # BitChat phone (its announce lacks our capability bits). Node 1 thins what it relays to node 2 but passes
    # every announce of node 0 on to the phone, as BitChat relays. (A phone further away, behind AIVillage nodes,
    # hears a far peer once per relay interval: what reaches us is all we can pass on.)
    cores = make_cores(4, announce_relay_min_interval_s=120.0)
    phone = cores[3]
    phone_announce = phone.presence.announce_packet

    def as_phone(now: float) -> Packet:
        pkt = phone_announce(now)
        ann = Announce("phone", phone.identity.noise_public, phone.identity.signing_public, (), None, None)
        return sign_packet(
            Packet(1, MessageType.ANNOUNCE, pkt.ttl, pkt.timestamp_ms, pkt.sender_id, None, (), encode_announce(ann)),
            phone.identity.signing_key,
        )

    phone.presence.announce_packet = as_phone  # type: ignore[method-assign]
    wire = Wire(cores)
    wire.connect(0, 1)
    wire.connect(1, 2)
    wire.connect(1, 3)
    wire.run_until(40.0)
    t0 = wire.now
    wire.run_until(t0 + 300)
    origin = cores[0].peer_id

    def relayed_to(node: int) -> int:
        sent = wire.of_type(MessageType.ANNOUNCE, src=1, dst=node, since=t0)
        return len([s for s in sent if s.pkt.sender_id == origin])

    assert relayed_to(3) >= 12  # node 0 announces every ~15 s: nearly all of them reach the phone
    assert relayed_to(2) <= 4  # one per 120 s to the AIVillage neighbour
    assert isinstance(cores[1], MeshCore) and cores[1].counters.announce_relay_suppressed >= 8
