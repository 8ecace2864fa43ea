"""The codec against BitChat's published packet vectors (BITCHAT.md §6), byte for byte."""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.public
import nacl.signing

from node.wire import (
    Announce,
    MessageType,
    Packet,
    Reassembler,
    decode_announce_untrusted,
    decode_fragment_untrusted,
    decode_packet_untrusted,
    encode_announce,
    encode_packet,
    fragment_with_chunk_size,
    pad,
    sign_packet,
    signing_preimage,
    signing_preimage_from_wire_untrusted,
    unpad,
    verify_wire_signature,
)
from tests.wire.vectors import all_vector_names, vector


def packet_from(inp: dict[str, Any]) -> Packet:
    if "payload_utf8" in inp:
        payload = inp["payload_utf8"].encode()
    elif "payload_ascii" in inp:
        payload = inp["payload_ascii"].encode()
    else:
        payload = bytes.fromhex(inp["payload_hex"])
    sig = inp.get("signature_hex")
    return Packet(
        version=inp["version"],
        type=inp["type"],
        ttl=inp["ttl"],
        timestamp_ms=inp["timestamp_ms"],
        sender_id=bytes.fromhex(inp["sender_id"]),
        recipient_id=bytes.fromhex(inp["recipient_id"]) if inp.get("recipient_id") else None,
        route=tuple(bytes.fromhex(h) for h in inp.get("route", [])),
        payload=payload,
        signature=bytes.fromhex(sig) if sig else None,
    )


PLAIN = [
    "v1_broadcast_unsigned_message",
    "v1_directed_with_recipient_ping",
    "v1_with_signature_placeholder",
    "v2_directed_two_hop_route",
    "v1_compressed_payload",
    "padding_100_byte_frame",
]


def test_we_cover_every_vector() -> None:
    assert set(all_vector_names()) == {*PLAIN, "fragment_payload_index1_of2", "announce_tlv_signed"}


def test_plain_vectors_encode_and_decode() -> None:
    for name in PLAIN:
        v = vector(name)
        pkt = packet_from(v["in"])
        wire = encode_packet(pkt, pad=v["in"]["padding"])
        assert wire.hex() == v["expected_hex"], name
        assert len(wire) == v["expected_len"]
        assert decode_packet_untrusted(wire) == pkt, name


def test_signature_preimage_vector() -> None:
    v = vector("v1_with_signature_placeholder")
    pkt = packet_from(v["in"])
    assert signing_preimage(pkt).hex() == v["signing_preimage_hex"]
    assert signing_preimage_from_wire_untrusted(bytes.fromhex(v["expected_hex"])).hex() == v["signing_preimage_hex"]


def test_padded_on_air_form_decodes_to_the_same_packet() -> None:
    v = vector("v2_directed_two_hop_route")
    padded = bytes.fromhex(v["padded_on_air_hex"])
    assert encode_packet(packet_from(v["in"]), pad=True) == padded
    assert len(padded) == 256 and padded[-1] == 187
    assert decode_packet_untrusted(padded) == packet_from(v["in"])
    assert unpad(padded).hex() == v["expected_hex"]


def test_fragment_pair_reassembles_the_padded_original() -> None:
    whole = bytes.fromhex(vector("padding_100_byte_frame")["expected_hex"])
    v = vector("fragment_payload_index1_of2")
    frag1 = bytes.fromhex(v["expected_hex"])
    frag0 = bytes.fromhex(v["fragment_index0_hex"])
    original = decode_packet_untrusted(whole)
    # Our fragmenter, with the vector's 200-byte chunks and fragment ID, produces both frames exactly.
    ours = fragment_with_chunk_size(original, whole, 200, bytes.fromhex(v["in"]["fragment_id"]))
    assert ours == [frag0, frag1]
    p0, p1 = decode_packet_untrusted(frag0), decode_packet_untrusted(frag1)
    assert p0.type == p1.type == MessageType.FRAGMENT
    assert p1.recipient_id == bytes.fromhex(v["in"]["recipient_id"]) and p1.signature is None
    r = Reassembler()
    assert r.add_untrusted(p1.sender_id, decode_fragment_untrusted(p1.payload), now=0.0) is None
    assert r.add_untrusted(p0.sender_id, decode_fragment_untrusted(p0.payload), now=0.1) == whole
    assert decode_packet_untrusted(whole).payload == bytes(range(70))


def test_signed_announce_from_fixed_keys() -> None:
    v = vector("announce_tlv_signed")
    inp = v["in"]
    noise_pub = bytes(nacl.public.PrivateKey(bytes.fromhex(inp["noise_static_private_hex"])).public_key)
    signer = nacl.signing.SigningKey(bytes.fromhex(inp["ed25519_seed_hex"]))
    assert noise_pub.hex() == inp["noise_static_public_hex"]
    assert bytes(signer.verify_key).hex() == inp["ed25519_public_hex"]
    assert hashlib.sha256(noise_pub).digest()[:8].hex() == inp["sender_id_derived"]
    ann = Announce(
        nickname=inp["nickname"],
        noise_public_key=noise_pub,
        signing_public_key=bytes(signer.verify_key),
        neighbours=tuple(bytes.fromhex(n) for n in inp["neighbors"]),
        capabilities=inp["capabilities"],
    )
    tlv = encode_announce(ann)
    assert tlv.hex() == v["announce_tlv_hex"]
    assert decode_announce_untrusted(tlv) == ann
    pkt = Packet(
        version=1,
        type=MessageType.ANNOUNCE,
        ttl=7,
        timestamp_ms=inp["timestamp_ms"],
        sender_id=bytes.fromhex(inp["sender_id_derived"]),
        payload=tlv,
    )
    assert signing_preimage(pkt).hex() == v["signing_preimage_hex"]
    wire = encode_packet(sign_packet(pkt, signer))  # Ed25519 is deterministic: the exact bytes
    assert wire.hex() == v["expected_hex"] and len(wire) == v["expected_len"]
    assert verify_wire_signature(wire, bytes(signer.verify_key))
    relayed = bytearray(wire)
    relayed[2] = 3  # a relay lowers the TTL: the signature still holds
    assert verify_wire_signature(bytes(relayed), bytes(signer.verify_key))


def test_padding_rule_edges() -> None:
    assert len(pad(bytes(100))) == 256 and pad(bytes(100))[-1] == 156
    assert pad(bytes(241)) == bytes(241)  # 241+16 > 256 and 512-241 = 271 > 255: unpadded
    assert len(pad(bytes(300))) == 512
    assert pad(bytes(2033)) == bytes(2033)
    assert unpad(b"abc\x02\x02") == b"abc" and unpad(b"abc\x03\x02") == b"abc\x03\x02"
