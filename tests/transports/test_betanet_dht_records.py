"""What the signed records of one DHT message can cost a BetaNet node, over real loopback TCP: py-libp2p 0.8
verifies every signed record of an answer (and a request's senderRecord) back to back, and caps an RSA key's
modulus, never its public exponent: a 4095-bit exponent makes one check ~25 ms. The node drops such records (and
refuses a message whose sender's own record is one) before py-libp2p reads the message."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets

import multiaddr
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.rsa import create_new_key_pair as create_rsa_key_pair
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID
from libp2p.peer.pb import crypto_pb2, envelope_pb2
from libp2p.peer.peerstore import create_signed_peer_record
from libp2p.utils import varint
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from node.transports.betanet.dht import ANSWER_PEERS, _cheap_record
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport
from tests.transports.test_betanet_dht_answers import (
    ASKER,
    CLOSED,
    MAX_GAP_S,
    _connected,
    _fake_id,
    _hostile_server,
    _lookup_watched,
)

MODULUS_BITS = 4096  # py-libp2p's cap on an RSA modulus: the costliest key it takes
EXPONENT_BITS = 4095  # a public exponent just under the modulus: each signature check ~25 ms


def _costly_record() -> tuple[bytes, bytes]:
    """A peer ID and a signed-record envelope of it under an RSA key of a MODULUS_BITS modulus and an
    EXPONENT_BITS public exponent, with a junk signature (checking it is what costs; it never verifies). The
    exponent is drawn again until it is coprime to the modulus, and the signature is below the modulus:
    pycryptodome (py-libp2p's RSA) refuses other keys at import (~19 % of random pairs) and other signatures
    before the check, both cheaply."""
    n = secrets.randbits(MODULUS_BITS) | (1 << (MODULUS_BITS - 1)) | 1
    e = n
    while math.gcd(n, e) != 1:
        e = secrets.randbits(EXPONENT_BITS) | (1 << (EXPONENT_BITS - 1)) | 1
    der = rsa.RSAPublicNumbers(e, n).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    envelope = envelope_pb2.Envelope(payload_type=b"\x03\x01", payload=b"\x0a\x00")
    envelope.public_key.Type = crypto_pb2.KeyType.RSA
    envelope.public_key.Data = der
    envelope.signature = secrets.randbelow(n).to_bytes(MODULUS_BITS // 8, "big")  # under n: checked in full
    peer_id = b"\x12\x20" + hashlib.sha256(envelope.public_key.SerializeToString()).digest()
    return peer_id, envelope.SerializeToString()


def _costly_answer() -> bytes:
    """A FIND_NODE answer naming k peers, each at CLOSED with a costly signed record."""
    answer = Message(type=Message.MessageType.FIND_NODE)
    for _ in range(ANSWER_PEERS):
        peer_id, record = _costly_record()
        peer = answer.closerPeers.add()
        peer.id, peer.signedRecord = peer_id, record
        peer.addrs.append(multiaddr.Multiaddr(CLOSED).to_bytes())
    return answer.SerializeToString()


def test_only_records_under_costly_keys_are_costly() -> None:
    """Ed25519 and RSA keys of exponent 65537 (what every generator makes) are verified as usual; an RSA key with a
    bigger exponent, or an envelope that does not parse, is not."""
    addrs = [multiaddr.Multiaddr(CLOSED)]
    for pair in (create_new_key_pair(), create_rsa_key_pair(2048)):
        peer_id = ID.from_pubkey(pair.public_key)
        assert _cheap_record(create_signed_peer_record(peer_id, addrs, pair.private_key).marshal_envelope())
    assert not _cheap_record(_costly_record()[1])
    assert not _cheap_record(b"\xff\xff")


async def test_costly_signed_records_in_answers_do_not_hold_the_event_loop(nursery: trio.Nursery) -> None:
    """Three hostile DHT servers answer a lookup with k peers each, every one with a costly signed record: the
    node drops the records before py-libp2p verifies them (the named peers stay, unsigned), so the event loop keeps
    running. (Unbounded: 20 checks of ~25 ms back to back per answer held the event loop 0.5-1.7 s.)"""
    servers = [await _hostile_server(nursery, _costly_answer()) for _ in range(3)]
    asker, _ = await start_transport(nursery, settings=ASKER)
    with trio.fail_after(WAIT_S):
        for server in servers:
            await asker.dial(server.listen_addresses()[0])
        await asker.wait_counters(lambda c: c.dht_routing_added >= len(servers))
        _found, _took, held = await _lookup_watched(asker, _fake_id())
    assert held < MAX_GAP_S, f"the event loop was held {held:.2f} s"
    assert asker.counters.dht_records_dropped >= ANSWER_PEERS
    assert asker.counters.dht_answers_refused == 0


async def test_an_answer_whose_sender_record_is_costly_is_refused(nursery: trio.Nursery) -> None:
    """An answer naming the target, sent with a senderRecord under a costly key: refused unread (the stream is
    reset), so the lookup does not learn the target from it. (Unbounded: py-libp2p checked the record, ~25 ms,
    before finding it invalid.)"""
    target = _fake_id()
    answer = Message(type=Message.MessageType.FIND_NODE)
    answer.senderRecord = _costly_record()[1]
    peer = answer.closerPeers.add()
    peer.id = target.to_bytes()
    peer.addrs.append(multiaddr.Multiaddr(CLOSED).to_bytes())
    server = await _hostile_server(nursery, answer.SerializeToString())
    asker, _ = await start_transport(nursery, settings=ASKER)
    with trio.fail_after(WAIT_S):
        await _connected(asker, server)
        found, _took, held = await _lookup_watched(asker, target)
    assert found == []
    assert asker.counters.dht_answers_refused >= 1 and asker.counters.dht_records_dropped >= 1
    assert held < MAX_GAP_S, f"the event loop was held {held:.2f} s"


@pytest.mark.parametrize("costly", ["senderRecord", "providerRecord"])
async def test_a_request_with_a_costly_record_costs_the_server_nothing(nursery: trio.Nursery, costly: str) -> None:
    """A DHT server gets a FIND_NODE whose senderRecord is under a costly key: the request is refused unread (the
    stream reset, ``dht_requests_refused``); an ADD_PROVIDER naming a provider with a costly record has the record
    dropped before py-libp2p verifies it. (Unbounded: each check cost the server ~25 ms of its event loop.)"""
    server, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, dht_mode="server"))
    asker, _ = await start_transport(nursery)
    assert asker.host is not None and server.host is not None
    provider_id, record = _costly_record()
    if costly == "senderRecord":
        request = Message(type=Message.MessageType.FIND_NODE, key=_fake_id().to_bytes(), senderRecord=record)
    else:
        request = Message(type=Message.MessageType.ADD_PROVIDER, key=hashlib.sha256(b"content").digest())
        provider = request.providerPeers.add()
        provider.id, provider.signedRecord = provider_id, record
    with trio.fail_after(WAIT_S):
        await asker.dial(server.listen_addresses()[0])
        stream = await asker.host.new_stream(server.host.get_id(), [KAD_PROTOCOL])
        body = request.SerializeToString()
        await stream.write(bytes(varint.encode_uvarint(len(body))) + body)
        try:  # the server's answer (ADD_PROVIDER's echo), or the reset
            answered = bool(await read_varint_prefixed_bytes_limited(stream, 1 << 16))
        except Exception:  # noqa: BLE001 - reset: libp2p raises one of several stream errors
            answered = False
    assert server.counters.dht_records_dropped == 1
    assert server.counters.dht_requests_refused == (1 if costly == "senderRecord" else 0)
    assert answered == (costly != "senderRecord")
