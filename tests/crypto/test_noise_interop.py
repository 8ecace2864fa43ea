"""Live XX handshakes and transport messages against the independent `noiseprotocol` package, in both
roles, including BitChat's explicit-nonce transport framing."""

from __future__ import annotations

import os
import struct

import pytest
from noise.connection import Keypair, NoiseConnection

from node.crypto.noise import x25519_public
from node.crypto.session import XX_MESSAGE_BYTES, XX_PROTOCOL, NoiseTransportSession, XXHandshake


def their_side(initiator: bool, static: bytes) -> NoiseConnection:
    conn = NoiseConnection.from_name(XX_PROTOCOL.encode())
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static)
    conn.start_handshake()
    return conn


def exchange(ours: NoiseTransportSession, theirs: NoiseConnection) -> None:
    for i in range(5):
        msg = f"ours→theirs {i} ".encode() * (i + 1)
        frame = ours.encrypt(msg)
        assert struct.unpack(">I", frame[:4])[0] == i  # BitChat's explicit nonce, counting from 0
        assert theirs.decrypt(frame[4:]) == msg
        reply = f"theirs→ours {i}".encode()
        assert ours.decrypt_untrusted(struct.pack(">I", i) + theirs.encrypt(reply)) == reply


@pytest.mark.parametrize("we_initiate", [True, False], ids=["we-initiate", "they-initiate"])
def test_xx_against_noiseprotocol(we_initiate: bool) -> None:
    our_static, their_static = os.urandom(32), os.urandom(32)
    ours = XXHandshake(we_initiate, our_static)
    theirs = their_side(not we_initiate, their_static)
    lengths = []
    for step in range(3):
        if (step % 2 == 0) == we_initiate:
            msg = ours.write()
            theirs.read_message(msg)
        else:
            msg = theirs.write_message()
            ours.read_untrusted(msg)
        lengths.append(len(msg))
    assert tuple(lengths) == XX_MESSAGE_BYTES
    assert theirs.handshake_finished and ours.is_complete
    session = ours.finish()
    assert session.handshake_hash == theirs.get_handshake_hash()
    assert session.remote_static == x25519_public(their_static)
    exchange(session, theirs)


def test_their_tampered_message_is_rejected() -> None:
    ours = XXHandshake(False, os.urandom(32))
    theirs = their_side(True, os.urandom(32))
    ours.read_untrusted(theirs.write_message())
    theirs.read_message(ours.write())
    msg3 = bytearray(theirs.write_message())
    msg3[5] ^= 1
    from node.crypto.errors import HandshakeError

    with pytest.raises(HandshakeError):
        ours.read_untrusted(bytes(msg3))
