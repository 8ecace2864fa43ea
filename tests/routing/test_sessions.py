"""SessionManager: XX between two managers, the previous-session fallback, abandoning a stuck responder."""

from __future__ import annotations

import os

import pytest

from node.crypto.errors import DecryptError, HandshakeError
from node.crypto.session import XXHandshake
from node.identity import Identity
from node.routing.sessions import Msg1Tier, SessionLimits, SessionManager


def pair() -> tuple[SessionManager, SessionManager, Identity, Identity]:
    ia, ib = Identity.generate(), Identity.generate()
    a = SessionManager(static_private=ia.noise_private, local_peer_id=ia.peer_id, timeout_s=10)
    b = SessionManager(static_private=ib.noise_private, local_peer_id=ib.peer_id, timeout_s=10)
    return a, b, ia, ib


def handshake(init: SessionManager, resp: SessionManager, ii: Identity, ir: Identity, now: float = 0.0) -> None:
    msg1 = init.initiate(ir.peer_id, now)
    assert msg1 is not None
    step2 = resp.on_message_untrusted(ii.peer_id, msg1, now, None)
    step3 = init.on_message_untrusted(ir.peer_id, step2.reply or b"", now, ir.noise_public)
    assert step3.established and step3.reply is not None
    assert resp.on_message_untrusted(ii.peer_id, step3.reply, now, ii.noise_public).established


def test_frames_under_the_replaced_session_still_open() -> None:
    a, b, ia, ib = pair()
    handshake(a, b, ia, ib)
    old = b.session(ia.peer_id)
    assert old is not None
    in_flight = old.encrypt(b"ack sent just before the re-handshake")  # nonce 0 of the old session
    handshake(a, b, ia, ib, now=1.0)  # both sides switch to a new session
    new = b.session(ia.peer_id)
    assert new is not None and new is not old
    assert a.decrypt_untrusted(ib.peer_id, new.encrypt(b"new keys")) == b"new keys"  # nonce 0 of the new one
    # The old frame's nonce (0) was already seen by the new session: it still opens, via the old session.
    assert a.decrypt_untrusted(ib.peer_id, in_flight) == b"ack sent just before the re-handshake"
    stranger_a, stranger_b, sa, sb = pair()
    handshake(stranger_a, stranger_b, sa, sb)
    theirs = stranger_b.session(sa.peer_id)
    assert theirs is not None
    foreign = [theirs.encrypt(b"not for you") for _ in range(5)][-1]  # nonce 4: unseen by either session
    with pytest.raises(DecryptError):
        a.decrypt_untrusted(ib.peer_id, foreign)


def test_no_session_is_a_handshake_error() -> None:
    a, _, _, ib = pair()
    with pytest.raises(HandshakeError):
        a.decrypt_untrusted(ib.peer_id, bytes(40))


def test_a_recovery_handshake_starts_beside_a_responder_handshake_and_either_completes() -> None:
    """Ciphertext we cannot open while we are a's responder starts a handshake as initiator beside the half-done
    one (the frame may be forged, so that one is kept): a's message 3 still completes it, and so does the new one."""
    for finish_old in (True, False):
        a, b, ia, ib = pair()
        msg1 = a.initiate(ib.peer_id, 0.0)
        assert msg1 is not None
        msg2 = b.on_message_untrusted(ia.peer_id, msg1, 0.0, None).reply
        assert b.responding(ia.peer_id) and b.initiate(ia.peer_id, 0.1) is None  # not an ordinary second one
        recovery = b.initiate(ia.peer_id, 0.1, beside_responder=True)
        assert recovery is not None and b.initiating(ia.peer_id) and b.responding(ia.peer_id)
        assert b.initiate(ia.peer_id, 0.2, beside_responder=True) is None  # one at a time
        step3 = a.on_message_untrusted(ib.peer_id, msg2 or b"", 0.3, ib.noise_public)
        if finish_old:  # a's message 3 arrives after all
            assert b.on_message_untrusted(ia.peer_id, step3.reply or b"", 0.4, ia.noise_public).established
        else:  # it was lost: a answers the recovery (it holds a session, and yields to a message 1 as responder)
            answer = a.on_message_untrusted(ib.peer_id, recovery, 0.4, ib.noise_public).reply
            step = b.on_message_untrusted(ia.peer_id, answer or b"", 0.5, ia.noise_public)
            assert step.established
            assert a.on_message_untrusted(ib.peer_id, step.reply or b"", 0.6, ib.noise_public).established
        assert not b.handshaking(ia.peer_id)  # whichever completed ended the other
        frame = a.session(ib.peer_id).encrypt(b"hi")  # type: ignore[union-attr]
        assert b.decrypt_untrusted(ia.peer_id, frame) == b"hi"


def _ordered_pair() -> tuple[SessionManager, SessionManager, Identity, Identity, SessionLimits]:
    """(high, low, ...): ``high`` has the higher peer-ID hex, so it yields in a crossed initiation."""
    ia, ib = Identity.generate(), Identity.generate()
    if ia.peer_id.hex() < ib.peer_id.hex():
        ia, ib = ib, ia
    lim = SessionLimits(max_responders=4, per_peer_per_min=10, per_min=30, max_sessions=3, idle_s=100.0)
    a = SessionManager(static_private=ia.noise_private, local_peer_id=ia.peer_id, timeout_s=10, limits=lim)
    b = SessionManager(static_private=ib.noise_private, local_peer_id=ib.peer_id, timeout_s=10, limits=lim)
    return a, b, ia, ib, lim


def test_a_forged_message_1_does_not_replace_our_handshake_in_flight() -> None:
    a, b, ia, ib, _ = _ordered_pair()
    msg1 = a.initiate(ib.peer_id, 0.0)
    assert msg1 is not None
    forged = XXHandshake.initiator_for(os.urandom(32)).write()  # "from b", by anyone who knows b's peer ID
    a.on_message_untrusted(ib.peer_id, forged, 0.1, None)  # a (the higher ID) would yield to a genuine one
    step2 = b.on_message_untrusted(ia.peer_id, msg1, 0.2, None)
    step3 = a.on_message_untrusted(ib.peer_id, step2.reply or b"", 0.3, ib.noise_public)
    assert step3.established  # our handshake survived the forged message 1
    assert b.on_message_untrusted(ia.peer_id, step3.reply or b"", 0.4, ia.noise_public).established
    assert not a.handshaking(ib.peer_id)  # the responder handshake the forgery opened is moot now
    assert a.expire(100.0) == []


def test_responder_handshakes_are_bounded_and_rate_limited() -> None:
    a, _, _, _, lim = _ordered_pair()
    refused = 0
    for i in range(100):  # message 1 from 100 throwaway identities at once, each on a link of its own
        msg1 = XXHandshake.initiator_for(os.urandom(32)).write()
        refused += a.on_message_untrusted(os.urandom(8), msg1, 0.0, None, link_id=f"l{i}").refused
    assert a.bounded_sizes()["responder_handshakes"] == (lim.max_responders, lim.max_responders)
    assert refused == 100 - lim.per_min  # the global rate of unknown senders: 30 a minute
    one_link = sum(  # unknown senders on one link share that link's bucket (a burst of 10: max(10, 30 / 4))
        not a.on_message_untrusted(os.urandom(8), XXHandshake.initiator_for(b"k" * 32).write(), 120.0, None).refused
        for _ in range(20)
    )
    assert one_link == 10
    peer = os.urandom(8)
    answered = sum(
        not a.on_message_untrusted(
            peer, XXHandshake.initiator_for(os.urandom(32)).write(), 240.0 + i, None, tier=Msg1Tier.ANNOUNCED
        ).refused
        for i in range(30)
    )
    assert answered == lim.per_peer_per_min + 4  # one announced sender: a burst of 10, then one per 6 s (29 s: +4)


def test_sessions_are_bounded_lru_and_idle_ones_expire_on_the_timer() -> None:
    a, _, ia, _, lim = _ordered_pair()
    peers = []
    for i in range(5):
        other = Identity.generate()
        o = SessionManager(static_private=other.noise_private, local_peer_id=other.peer_id, timeout_s=10)
        handshake(a, o, ia, other, now=float(i))
        peers.append(other.peer_id)
    assert len(a) == lim.max_sessions and a.session(peers[0]) is None and a.session(peers[4]) is not None
    a.touch(peers[2], 50.0)  # used lately: outlives the others
    assert a.next_deadline() == 3.0 + lim.idle_s  # the least recently used one's idle expiry
    a.expire(120.0)
    assert [p for p in peers if a.session(p) is not None] == [peers[2]]
    assert a.next_deadline() == 150.0
    a.expire(150.0)
    assert len(a) == 0 and a.next_deadline() is None
