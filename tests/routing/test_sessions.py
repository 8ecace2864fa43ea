"""SessionManager: XX between two managers, the previous-session fallback, abandoning a stuck responder."""

from __future__ import annotations

import pytest

from node.crypto.errors import DecryptError, HandshakeError
from node.identity import Identity
from node.routing.sessions import SessionManager


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


def test_abandon_responder_only_drops_a_responder_handshake() -> None:
    a, b, ia, ib = pair()
    msg1 = a.initiate(ib.peer_id, 0.0)
    assert msg1 is not None
    b.on_message_untrusted(ia.peer_id, msg1, 0.0, None)
    assert b.handshaking(ia.peer_id)
    assert not a.abandon_responder(ib.peer_id)  # a is the initiator: kept
    assert a.handshaking(ib.peer_id)
    assert b.abandon_responder(ia.peer_id)
    assert not b.handshaking(ia.peer_id)
    assert b.initiate(ia.peer_id, 1.0) is not None  # free to start over as initiator
