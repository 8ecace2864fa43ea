"""The scripted BitChat peer's own codec (tests/transports/ble/bitchat_peer.py) against BITCHAT.md §6's vectors,
so the peer the node is tested against is itself checked against the spec. The node's codec has its own vector
tests in tests/wire/test_vectors.py; nothing here uses node/wire."""

from __future__ import annotations

import hashlib

import nacl.signing

from tests.transports.ble.bitchat_peer import (
    announce_tlvs,
    pack,
    parse,
    pkcs7_pad,
    sign_frame,
    verifier_preimage,
)
from tests.wire.vectors import vector

TS = 1_700_000_000_000


def ids(v: dict[str, object]) -> tuple[bytes, bytes | None]:
    inp = v["in"]
    assert isinstance(inp, dict)
    rec = inp.get("recipient_id")
    return bytes.fromhex(inp["sender_id"]), bytes.fromhex(rec) if rec else None


def test_plain_directed_and_signed_frames() -> None:
    v = vector("v1_broadcast_unsigned_message")
    sender, _ = ids(v)
    assert pack(2, sender, b"hello", ts_ms=TS).hex() == v["expected_hex"]
    v = vector("v1_directed_with_recipient_ping")
    sender, rec = ids(v)
    assert pack(38, sender, bytes.fromhex(v["in"]["payload_hex"]), ts_ms=TS, recipient=rec).hex() == v["expected_hex"]
    v = vector("v1_with_signature_placeholder")
    sender, _ = ids(v)
    frame = pack(2, sender, b"hi", ts_ms=TS, signature=b"\xab" * 64)
    assert frame.hex() == v["expected_hex"]
    assert pkcs7_pad(pack(2, sender, b"hi", ttl=0, ts_ms=TS)).hex() == v["signing_preimage_hex"]
    assert verifier_preimage(parse(frame)).hex() == v["signing_preimage_hex"]


def test_routed_compressed_and_padded_frames_parse() -> None:
    v = vector("v2_directed_two_hop_route")
    p = parse(bytes.fromhex(v["expected_hex"]))
    assert (p.version, p.type, p.recipient) == (2, 17, bytes.fromhex("1122334455667788"))
    assert p.payload.hex() == v["in"]["payload_hex"]
    assert parse(bytes.fromhex(v["padded_on_air_hex"])).payload == p.payload  # trailing padding ignored
    v = vector("v1_compressed_payload")
    assert parse(bytes.fromhex(v["expected_hex"])).payload == b"A" * 120
    v = vector("padding_100_byte_frame")
    sender, rec = ids(v)
    frame = pkcs7_pad(pack(17, sender, bytes.fromhex(v["in"]["payload_hex"]), ts_ms=TS, recipient=rec))
    assert frame.hex() == v["expected_hex"]


def test_fragment_pair_reassembles_to_the_padded_frame() -> None:
    v = vector("fragment_payload_index1_of2")
    first, second = parse(bytes.fromhex(v["fragment_index0_hex"])), parse(bytes.fromhex(v["expected_hex"]))
    assert first.type == second.type == 0x20
    assert first.payload[:8] == second.payload[:8] == bytes.fromhex("f0e1d2c3b4a59687")
    whole = first.payload[13:] + second.payload[13:]
    assert whole.hex() == vector("padding_100_byte_frame")["expected_hex"]


def test_signed_announce_from_fixed_keys() -> None:
    v = vector("announce_tlv_signed")
    inp = v["in"]
    signing = nacl.signing.SigningKey(bytes.fromhex(inp["ed25519_seed_hex"]))
    noise_pub = bytes.fromhex(inp["noise_static_public_hex"])
    sender = hashlib.sha256(noise_pub).digest()[:8]
    assert sender.hex() == inp["sender_id_derived"]
    # Optional TLVs 04 (neighbours) and 05 (capabilities, little-endian, trailing zeros dropped) follow 01–03.
    neighbours = b"".join(bytes.fromhex(n) for n in inp["neighbors"])
    caps = inp["capabilities"].to_bytes(8, "little").rstrip(b"\x00")
    extra = bytes([4, len(neighbours)]) + neighbours + bytes([5, len(caps)]) + caps
    tlv = announce_tlvs(inp["nickname"], noise_pub, bytes(signing.verify_key), extra)
    assert tlv.hex() == v["announce_tlv_hex"]
    assert sign_frame(signing, 1, sender, tlv, TS).hex() == v["expected_hex"]
