"""Second security review of the routing core: forged handshake messages and the message-1 budget. The sender field
of a 0x10 packet is not authenticated, so a message "from P" with no key behind it must never end, replace or
starve P's genuine handshake (each test fails on the code before its fix)."""

from __future__ import annotations

import dataclasses
import os
import random

import nacl.signing

from node.crypto.session import XXHandshake
from node.identity import Identity
from node.routing.mesh import MeshCore
from node.wire import MessageType, Packet, decode_packet_untrusted, encode_packet
from tests.routing.test_hoparq import make_cores


def _ident(seed: int) -> Identity:
    rng = random.Random(seed)
    return Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))


def _core() -> MeshCore:
    [core] = make_cores(1)
    core.link_up("L", 1_200_000, 0.0)
    core.link_up("X", 1_200_000, 0.0)
    core.frames_to_send()
    return core


def _hs_frame(core: MeshCore, sender: bytes, payload: bytes, now: float) -> bytes:
    pkt = Packet(1, MessageType.NOISE_HANDSHAKE, 7, core.wall_ms(now), sender, core.peer_id, (), payload)
    return encode_packet(pkt)


def _handshakes_out(core: MeshCore, link: str | None = None) -> list[bytes]:
    out = []
    for lid, data in core.frames_to_send():
        pkt = decode_packet_untrusted(data, core.limits)
        if pkt.type == MessageType.NOISE_HANDSHAKE and (link is None or lid == link):
            out.append(pkt.payload)
    return out


def test_forged_msg2_does_not_end_our_handshake() -> None:
    core, p = _core(), _ident(8)
    core.delivery.start_handshake(p.peer_id, 1.0)
    [msg1] = _handshakes_out(core)[:1]
    resp = XXHandshake.responder_for(p.noise_private)
    resp.read_untrusted(msg1)
    msg2 = resp.write()
    core.receive_frame("X", _hs_frame(core, p.peer_id, os.urandom(96), 1.1), 1.1)  # forged: random bytes
    core.frames_to_send()
    core.receive_frame("L", _hs_frame(core, p.peer_id, msg2, 1.2), 1.2)
    assert _handshakes_out(core), "the genuine message 2 is answered with message 3"
    assert core.sessions.session(p.peer_id) is not None
    assert core.counters.handshake_failed == 1  # the forgery, counted


def test_forged_msg3_does_not_end_their_handshake() -> None:
    core, p = _core(), _ident(9)
    ini = XXHandshake.initiator_for(p.noise_private)
    core.receive_frame("L", _hs_frame(core, p.peer_id, ini.write(), 1.0), 1.0)
    [msg2] = _handshakes_out(core, "L")
    ini.read_untrusted(msg2)
    core.receive_frame("X", _hs_frame(core, p.peer_id, os.urandom(64), 1.1), 1.1)  # forged
    core.receive_frame("L", _hs_frame(core, p.peer_id, ini.write(), 1.2), 1.2)
    assert core.sessions.session(p.peer_id) is not None
    assert core.counters.handshake_failed == 1


def test_forged_msg1_does_not_replace_their_handshake() -> None:
    core, v = _core(), _ident(5)
    ini = XXHandshake.initiator_for(v.noise_private)
    core.receive_frame("L", _hs_frame(core, v.peer_id, ini.write(), 1.0), 1.0)
    [msg2] = _handshakes_out(core, "L")
    ini.read_untrusted(msg2)
    for i in range(3):  # forged message 1s "from V" between V's message 1 and message 3
        core.receive_frame("X", _hs_frame(core, v.peer_id, os.urandom(32), 1.2 + i / 10), 1.2 + i / 10)
    core.frames_to_send()
    core.receive_frame("L", _hs_frame(core, v.peer_id, ini.write(), 1.6), 1.6)
    assert core.sessions.session(v.peer_id) is not None
    assert core.counters.handshake_failed == 0
    assert core.sessions.bounded_sizes()["responder_handshakes"][0] == 0  # completing ended the other states


def test_a_restarted_peer_still_completes_its_latest_handshake() -> None:
    """Keeping the first responder state must not break a peer that genuinely restarted its handshake."""
    core, v = _core(), _ident(6)
    first = XXHandshake.initiator_for(v.noise_private)
    core.receive_frame("L", _hs_frame(core, v.peer_id, first.write(), 1.0), 1.0)
    core.frames_to_send()
    again = XXHandshake.initiator_for(v.noise_private)  # its first attempt was lost on its side: it starts over
    core.receive_frame("L", _hs_frame(core, v.peer_id, again.write(), 11.0), 11.0)
    [msg2] = _handshakes_out(core, "L")
    again.read_untrusted(msg2)
    core.receive_frame("L", _hs_frame(core, v.peer_id, again.write(), 11.5), 11.5)
    assert core.sessions.session(v.peer_id) is not None


def _v_tries(core: MeshCore, v: Identity, link: str, now: float) -> bool:
    """V sends a genuine message 1 on ``link``: whether it was answered."""
    msg1 = XXHandshake.initiator_for(v.noise_private).write()
    core.receive_frame(link, _hs_frame(core, v.peer_id, msg1, now), now)
    return bool(_handshakes_out(core, link))


def test_a_message1_flood_from_fresh_ids_on_one_link_leaves_other_links_served() -> None:
    core, v = _core(), _ident(5)
    answered = []
    for step in range(1200):  # 5 minutes at 4 message 1s a second from random sender IDs on link X
        now = 1.0 + step * 0.25
        core.receive_frame("X", _hs_frame(core, os.urandom(8), os.urandom(32), now), now)
        core.frames_to_send()
        if step % 40 == 20:  # V, unknown too, on link L every 10 s
            answered.append(_v_tries(core, v, "L", now))
    assert core.counters.handshake_refused > 900  # the flood itself is bounded
    assert all(answered) and len(answered) == 30


def test_forged_message1s_from_v_do_not_use_up_vs_budget() -> None:
    core, v = _core(), _ident(5)
    answered = []
    for step in range(150):  # forged message 1 "from V" on X every 4 s for 10 minutes; V tries on L
        now = 1.0 + step * 4
        core.receive_frame("X", _hs_frame(core, v.peer_id, os.urandom(32), now), now)
        core.frames_to_send()
        if step % 8 == 3:
            answered.append(_v_tries(core, v, "L", now + 0.1))
    assert all(answered) and len(answered) == 19


def test_announced_peers_are_served_while_unknown_senders_flood_their_link() -> None:
    from tests.routing.test_hostile_frames import _announce

    core, v = _core(), _ident(5)
    core.receive_frame("L", _announce(core, v, 0.5), 0.5)
    core.frames_to_send()
    answered = []
    for step in range(1200):  # the flood now shares V's link
        now = 1.0 + step * 0.25
        core.receive_frame("L", _hs_frame(core, os.urandom(8), os.urandom(32), now), now)
        core.frames_to_send()
        if step % 40 == 20:
            core.receive_frame("L", _announce(core, v, now - 0.01), now - 0.01)  # V keeps announcing
            core.frames_to_send()
            answered.append(_v_tries(core, v, "L", now))
    assert core.counters.handshake_refused > 900
    assert all(answered) and len(answered) == 30


def test_message2_answers_that_would_flood_are_within_the_flood_limits() -> None:
    """Review: message 2 to a never-announced sender flooded every link, outside the remote-flood limiter."""
    [core] = make_cores(1)
    attackers = [f"X{i}" for i in range(4)]
    for link in ["A", *attackers]:
        core.link_up(link, 1_200_000, 0.0)
    core.frames_to_send()
    answers_back = flooded = 0
    for step in range(480):  # 60 s: 8 message 1s a second from fresh IDs, spread over four links
        now = 1.0 + step / 8
        link = attackers[step % 4]
        pkt = Packet(1, MessageType.NOISE_HANDSHAKE, 5, core.wall_ms(now), os.urandom(8), core.peer_id, (), b"")
        core.receive_frame(link, encode_packet(dataclasses.replace(pkt, payload=os.urandom(32))), now)
        for lid, _ in core.frames_to_send():
            flooded += lid == "A"  # A sent nothing: only a flood reaches it
            answers_back += lid == link
    limiter = core.flood_limiter
    assert flooded <= limiter.global_burst + limiter.global_per_s * 60  # 20 + 2/s
    assert answers_back > flooded and core.counters.rate_limited > 0  # the rest went back the way they came


def _enc_frame(core: MeshCore, sender: bytes, payload: bytes, now: float) -> bytes:
    pkt = Packet(1, MessageType.NOISE_ENCRYPTED, 7, core.wall_ms(now), sender, core.peer_id, (), payload)
    return encode_packet(pkt)


def test_forged_ciphertext_does_not_end_their_half_done_handshake() -> None:
    """Ciphertext "from P" while we are P's responder once ended the handshake (as if P had finished it and lost our
    message 3 — the recovery path). It is unauthenticated: P's message 3 must still complete the handshake. (Too big
    to be held as an early ciphertext, and from a second link.)"""
    core, p = _core(), _ident(11)
    ini = XXHandshake.initiator_for(p.noise_private)
    core.receive_frame("L", _hs_frame(core, p.peer_id, ini.write(), 1.0), 1.0)
    [msg2] = _handshakes_out(core, "L")
    ini.read_untrusted(msg2)
    for i, size in enumerate((5000, 80, 5000)):  # forged: random bytes, too big to hold and small
        now = 1.1 + i / 10
        core.receive_frame("X", _enc_frame(core, p.peer_id, os.urandom(size), now), now)
    core.frames_to_send()
    core.receive_frame("L", _hs_frame(core, p.peer_id, ini.write(), 1.6), 1.6)
    theirs = ini.finish()
    assert core.sessions.decrypt_untrusted(p.peer_id, theirs.encrypt(b"hello")) == b"hello"
    assert core.counters.handshake_failed == 0


def test_forged_ciphertext_does_not_end_a_rehandshake_beside_a_session() -> None:
    """The same with a session already in place (P renews it): a forged frame that does not decrypt under the old
    session leaves the new handshake to complete."""
    core, p = _core(), _ident(12)
    for t in (1.0, 30.0):  # a first handshake, then P renews the session
        ini = XXHandshake.initiator_for(p.noise_private)
        core.receive_frame("L", _hs_frame(core, p.peer_id, ini.write(), t), t)
        [msg2] = _handshakes_out(core, "L")
        ini.read_untrusted(msg2)
        if t > 1.0:
            core.receive_frame("X", _enc_frame(core, p.peer_id, os.urandom(5000), t + 0.1), t + 0.1)
            core.frames_to_send()
        core.receive_frame("L", _hs_frame(core, p.peer_id, ini.write(), t + 0.2), t + 0.2)
        theirs = ini.finish()  # the handshake P just finished, not an older one
        assert core.sessions.session(p.peer_id) is not None
        assert core.sessions.decrypt_untrusted(p.peer_id, theirs.encrypt(b"%d" % t)) == b"%d" % t
