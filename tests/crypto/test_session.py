"""BitChat transport sessions: replay window, tampering, nonce limits, rekey, handshake negatives."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.crypto.errors import DecryptError, HandshakeError, LowOrderKey, NonceExhausted, ReplayError
from node.crypto.noise import CipherState
from node.crypto.session import NoiseTransportSession, XXHandshake


def pair(**kw: int) -> tuple[NoiseTransportSession, NoiseTransportSession]:
    a, b = XXHandshake(True, os.urandom(32)), XXHandshake(False, os.urandom(32))
    b.read_untrusted(a.write())
    a.read_untrusted(b.write())
    b.read_untrusted(a.write())
    return a.finish(**kw), b.finish(**kw)


def test_out_of_order_within_window_accepted_duplicates_rejected() -> None:
    a, b = pair()
    frames = [a.encrypt(f"m{i}".encode()) for i in range(2000)]
    assert b.decrypt_untrusted(frames[1500]) == b"m1500"
    assert b.decrypt_untrusted(frames[1000]) == b"m1000"  # 500 behind: inside the 1024 window
    with pytest.raises(ReplayError, match="already received"):
        b.decrypt_untrusted(frames[1000])
    with pytest.raises(ReplayError, match="older than the replay window"):
        b.decrypt_untrusted(frames[400])  # 1100 behind
    assert b.decrypt_untrusted(frames[1999]) == b"m1999"
    assert b.decrypt_untrusted(frames[1500 + 1]) == b"m1501"


def test_forged_frame_does_not_burn_its_nonce() -> None:
    a, b = pair()
    real = a.encrypt(b"real")
    forged = real[:4] + bytes(len(real) - 4)
    with pytest.raises(DecryptError):
        b.decrypt_untrusted(forged)
    assert b.decrypt_untrusted(real) == b"real"  # the nonce was not marked by the failed attempt


@pytest.mark.parametrize("index", [0, 3, 4, 10, -1])
def test_any_flipped_bit_is_detected(index: int) -> None:
    a, b = pair()
    frame = bytearray(a.encrypt(b"attack at dawn"))
    frame[index] ^= 0x40
    with pytest.raises((DecryptError, ReplayError)):
        b.decrypt_untrusted(bytes(frame))


def test_short_frames_rejected() -> None:
    _, b = pair()
    for n in range(20):
        with pytest.raises(DecryptError):
            b.decrypt_untrusted(bytes(n))


def test_sender_refuses_past_the_nonce_cap() -> None:
    a, b = pair(max_send_nonce=3)
    for i in range(4):
        assert b.decrypt_untrusted(a.encrypt(bytes([i]))) == bytes([i])
    with pytest.raises(NonceExhausted):
        a.encrypt(b"one too many")
    assert a.needs_rekey(0.0)


def test_needs_rekey_policy() -> None:
    a, _ = pair()
    assert not a.needs_rekey(3600.0)
    assert a.needs_rekey(24 * 3600.0)
    assert a.needs_rekey(0.0, max_messages=10) is False
    for _ in range(9):
        a.encrypt(b"x")
    assert a.needs_rekey(0.0, max_messages=10)


def test_rekey_in_lockstep() -> None:
    a, b = pair()
    assert b.decrypt_untrusted(a.encrypt(b"before")) == b"before"
    a.rekey()
    frame = a.encrypt(b"after")
    with pytest.raises(DecryptError):
        b.decrypt_untrusted(frame)  # b has not rekeyed: it cannot read the new key's frames
    b.rekey()
    assert b.decrypt_untrusted(a.encrypt(b"after, together")) == b"after, together"
    assert a.decrypt_untrusted(b.encrypt(b"and back")) == b"and back"


def test_cipherstate_rekey_matches_spec_definition() -> None:
    key = os.urandom(32)
    cs = CipherState(key)
    cs.rekey()
    from node.crypto.noise import aead_encrypt

    assert cs.k == aead_encrypt(key, 2**64 - 1, b"", bytes(32))[:32]


def test_handshake_negatives() -> None:
    a, b = XXHandshake(True, os.urandom(32)), XXHandshake(False, os.urandom(32))
    msg1 = a.write()
    with pytest.raises(HandshakeError, match="must be 32 bytes"):
        b.read_untrusted(msg1 + b"x")
    with pytest.raises(LowOrderKey):
        c = XXHandshake(False, os.urandom(32))
        c.read_untrusted(msg1)
        a2 = XXHandshake(True, os.urandom(32))
        a2.write()
        a2.read_untrusted(bytes(32) + c.write()[32:])  # an all-zero ephemeral key
    b.read_untrusted(msg1)
    msg2 = b.write()
    with pytest.raises(HandshakeError):
        b.read_untrusted(msg2)  # the responder does not read its own message 2 in state 2
    with pytest.raises(HandshakeError):
        b.finish()  # not complete
    tampered = bytearray(msg2)
    tampered[40] ^= 1
    with pytest.raises(HandshakeError):
        a.read_untrusted(bytes(tampered))


@given(st.lists(st.binary(max_size=600), min_size=1, max_size=20))
def test_roundtrip_any_plaintexts(messages: list[bytes]) -> None:
    a, b = pair()
    for m in messages:
        assert b.decrypt_untrusted(a.encrypt(m)) == m
        assert a.decrypt_untrusted(b.encrypt(m[::-1])) == m[::-1]
    assert struct.unpack(">I", a.encrypt(b"")[:4])[0] == len(messages)


def test_a_huge_nonce_jump_costs_no_memory_and_keeps_the_window_right() -> None:
    """A peer holding the keys may jump to the top nonce at once: the window must jump, not grow."""
    import tracemalloc

    a, b = pair()
    first = a.encrypt(b"n0")
    assert b.decrypt_untrusted(first) == b"n0"  # a non-empty bitmap: shifting it is what used to cost ~1 GB
    a._next_send = 2**32 - 2  # the highest nonce a sender may use: a jump of ~2**32 in one frame
    far = a.encrypt(b"far")
    tracemalloc.start()
    assert b.decrypt_untrusted(far) == b"far"
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000  # bytes; the unbounded shift allocated ~512 MiB
    with pytest.raises(ReplayError, match="older than the replay window"):
        b.decrypt_untrusted(first)
    with pytest.raises(ReplayError, match="already received"):
        b.decrypt_untrusted(far)
