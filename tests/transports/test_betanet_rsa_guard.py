"""RSA keys too costly to verify are refused where py-libp2p parses them (:mod:`node.transports.betanet.rsa_guard`),
checked on py-libp2p's own key classes and envelopes, and against the identify-push attack over real loopback TCP:
py-libp2p verifies a pushed signedPeerRecord before it compares its peer ID with the sender's, and a 4095-bit public
exponent made each check ~25-50 ms."""

from __future__ import annotations

import libp2p.crypto.rsa as libp2p_rsa
import multiaddr
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.rsa import RSAPublicKey
from libp2p.crypto.rsa import create_new_key_pair as create_rsa_key_pair
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.peer.pb import envelope_pb2
from libp2p.peer.peerstore import create_signed_peer_record
from libp2p.utils import varint

from node.transports.betanet.rsa_guard import MAX_RSA_EXPONENT, CostlyRsaKey, refuse_costly_rsa_keys
from node.transports.betanet.transport import BetanetTransport
from tests.transports.test_betanet import WAIT_S, start_transport
from tests.transports.test_betanet_dht_answers import CLOSED, TICK_S
from tests.transports.test_betanet_dht_records import _costly_record

PUSHES = 40  # identify pushes the attacker sends at once, each on its own stream (the reviewer's attack)
# Event-loop time one costly push may cost beyond an honest one, seconds: a refused key costs a DER parse (~1-4 ms);
# a verified one ~25-50 ms, so 40 of them cost the loop 1-2.5 s.
EXTRA_PER_PUSH_S = 0.008


def _costly_key_der() -> bytes:
    """The SubjectPublicKeyInfo DER of :func:`_costly_record`'s key (a 4095-bit public exponent)."""
    return envelope_pb2.Envelope.FromString(_costly_record()[1]).public_key.Data


def test_a_costly_exponent_is_refused_and_usual_ones_are_not() -> None:
    """After the guard: py-libp2p's RSA key parse refuses an exponent above 65537 (as a ValueError and as
    py-libp2p's CryptographyError), and a signed record under it fails before its signature is checked; keys of
    exponent 65537 and 3 parse as before. Installing it twice wraps once."""
    refuse_costly_rsa_keys()
    installed = libp2p_rsa.validate_rsa_key_size
    refuse_costly_rsa_keys()
    assert libp2p_rsa.validate_rsa_key_size is installed
    with pytest.raises(CostlyRsaKey, match="4095 bits"):
        RSAPublicKey.from_bytes(_costly_key_der())
    with pytest.raises(ValueError, match="refused"):
        consume_envelope(_costly_record()[1], "libp2p-peer-record")
    for e in (MAX_RSA_EXPONENT, 3):
        numbers = rsa.generate_private_key(e, 2048).public_key()
        key = RSAPublicKey.from_bytes(numbers.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
        assert int(key.impl.e) == e
    pair = create_rsa_key_pair(2048)  # py-libp2p's own generator (65537), signing and verifying as before
    record = create_signed_peer_record(ID.from_pubkey(pair.public_key), [multiaddr.Multiaddr(CLOSED)], pair.private_key)
    _envelope, parsed = consume_envelope(record.marshal_envelope(), "libp2p-peer-record")
    assert parsed.peer_id == ID.from_pubkey(pair.public_key)


async def _push_all(attacker: BetanetTransport, server: BetanetTransport, message: bytes) -> float:
    """``attacker`` sends PUSHES identify pushes of ``message`` to ``server`` at once, each on its own stream and
    read to its end (the server closes a push's stream once it has handled it), while a watcher sleeps TICK_S in
    a loop: the event loop's busy time meanwhile (the sum of the watcher's late wake-ups), seconds."""
    assert attacker.host is not None and server.host is not None
    host, server_id = attacker.host, server.host.get_id()
    framed = bytes(varint.encode_uvarint(len(message))) + message
    late: list[float] = []

    async def push() -> None:
        stream = await host.new_stream(server_id, [ID_PUSH])
        await stream.write(framed)
        try:
            while await stream.read(4096):
                pass
        except Exception:  # noqa: BLE001 - the server closed or reset it: libp2p raises one of several stream errors
            return

    async with trio.open_nursery() as watch:

        async def watcher() -> None:
            while True:
                before = trio.current_time()
                await trio.sleep(TICK_S)
                late.append(max(0.0, trio.current_time() - before - TICK_S))

        watch.start_soon(watcher)
        await trio.sleep(TICK_S)  # the watcher runs before the pushes start
        async with trio.open_nursery() as pushes:
            for _ in range(PUSHES):
                pushes.start_soon(push)
        watch.cancel_scope.cancel()
    return sum(late)


async def test_identify_pushes_under_costly_keys_cost_what_honest_ones_do(nursery: trio.Nursery) -> None:
    """A connected peer pushes PUSHES identify messages at once, each with a signed record under a costly key: the
    event loop is busy no longer than for as many pushes of an honest (Ed25519) record of another peer, which the
    server verifies and ignores the same way, plus EXTRA_PER_PUSH_S each. (Unguarded: py-libp2p verified every costly
    record before comparing peer IDs, ~25-50 ms each: the loop busy 1-2.5 s.)"""
    server, _ = await start_transport(nursery)
    attacker, _ = await start_transport(nursery)
    other = create_new_key_pair()
    other_id = ID.from_pubkey(other.public_key)
    record = create_signed_peer_record(other_id, [multiaddr.Multiaddr(CLOSED)], other.private_key)
    honest = Identify(signedPeerRecord=record.marshal_envelope()).SerializeToString()
    costly = Identify(signedPeerRecord=_costly_record()[1]).SerializeToString()
    with trio.fail_after(WAIT_S):
        await attacker.dial(server.listen_addresses()[0])
        honest_busy = await _push_all(attacker, server, honest)
        costly_busy = await _push_all(attacker, server, costly)
    assert costly_busy < honest_busy + PUSHES * EXTRA_PER_PUSH_S, (
        f"{PUSHES} costly pushes kept the event loop busy {costly_busy:.2f} s (honest ones: {honest_busy:.2f} s)"
    )
