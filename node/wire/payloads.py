"""Payloads carried inside BitChat packets.

* Announce (type 0x01; bitchat/Protocols/Packets.swift ``AnnouncementPacket``, BITCHAT.md §2.1): TLVs
  ``[type u8][len u8][value]`` in the order 01 nickname, 02 Noise static key, 03 Ed25519 key, 04 neighbours,
  05 capabilities (UInt64 little-endian, trailing zero bytes dropped, ≥ 1 byte), 06 bridge geohash; unknown
  types skipped; 01/02/03 mandatory.
* Noise plaintext (inside 0x11; bitchat/Models/NoisePayload.swift, §2.4): ``[NoisePayloadType u8][data]``;
  0x09 is accepted as an alias of privateFile (0x20) on input.
* Private message (NoisePayloadType 0x01; Packets.swift ``PrivateMessagePacket``): TLVs ``00 len messageID``,
  ``01 len content``; each ≤ 255 bytes UTF-8; an unknown TLV type rejects the message.
* Ping/pong (0x26/0x27; BF/MeshPingPayload.swift): 8-byte nonce + originTTL u8.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from node.wire.errors import EncodeError, MalformedFrame

KEY_BYTES = 32  # X25519 and Ed25519 public keys
ID_BYTES = 8
MAX_NEIGHBOURS = 10  # BitChat announces at most 10 direct neighbours
MAX_GEOHASH_BYTES = 12
MAX_CAPABILITY_BYTES = 8  # a UInt64
TLV_MAX_VALUE = 255  # one length byte

TLV_NICKNAME, TLV_NOISE_KEY, TLV_SIGNING_KEY, TLV_NEIGHBOURS, TLV_CAPABILITIES, TLV_GEOHASH = 1, 2, 3, 4, 5, 6
PM_MESSAGE_ID, PM_CONTENT = 0x00, 0x01


@dataclass(frozen=True, slots=True)
class Announce:
    nickname: str
    noise_public_key: bytes
    signing_public_key: bytes
    neighbours: tuple[bytes, ...] = ()
    capabilities: int | None = None
    geohash: bytes | None = None


def _tlv(t: int, value: bytes) -> bytes:
    if len(value) > TLV_MAX_VALUE:
        raise EncodeError(f"TLV {t:#04x} value of {len(value)} bytes exceeds {TLV_MAX_VALUE}")
    return bytes([t, len(value)]) + value


def encode_announce(a: Announce) -> bytes:
    if len(a.noise_public_key) != KEY_BYTES or len(a.signing_public_key) != KEY_BYTES:
        raise EncodeError("announce keys must be 32 bytes")
    if len(a.neighbours) > MAX_NEIGHBOURS or any(len(n) != ID_BYTES for n in a.neighbours):
        raise EncodeError(f"announce carries at most {MAX_NEIGHBOURS} neighbour IDs of 8 bytes")
    out = (
        _tlv(TLV_NICKNAME, a.nickname.encode())
        + _tlv(TLV_NOISE_KEY, a.noise_public_key)
        + _tlv(TLV_SIGNING_KEY, a.signing_public_key)
    )
    if a.neighbours:
        out += _tlv(TLV_NEIGHBOURS, b"".join(a.neighbours))
    if a.capabilities is not None:
        if not 0 <= a.capabilities < 2**64:
            raise EncodeError("capabilities must fit a UInt64")
        caps = a.capabilities.to_bytes(MAX_CAPABILITY_BYTES, "little").rstrip(b"\0") or b"\0"
        out += _tlv(TLV_CAPABILITIES, caps)
    if a.geohash is not None:
        if len(a.geohash) > MAX_GEOHASH_BYTES:
            raise EncodeError(f"geohash longer than {MAX_GEOHASH_BYTES} bytes")
        out += _tlv(TLV_GEOHASH, a.geohash)
    return out


def _iter_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise MalformedFrame("truncated TLV header")
        t, n = data[pos], data[pos + 1]
        if pos + 2 + n > len(data):
            raise MalformedFrame(f"TLV {t:#04x} runs past the end of the payload")
        out.append((t, bytes(data[pos + 2 : pos + 2 + n])))
        pos += 2 + n
    return out


def decode_announce_untrusted(payload: bytes) -> Announce:
    fields: dict[int, bytes] = {}
    for t, v in _iter_tlvs(payload):
        fields.setdefault(t, v)  # the first occurrence counts
    for t, name in ((TLV_NICKNAME, "nickname"), (TLV_NOISE_KEY, "noise key"), (TLV_SIGNING_KEY, "signing key")):
        if t not in fields:
            raise MalformedFrame(f"announce without its {name}")
    try:
        nickname = fields[TLV_NICKNAME].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("announce nickname is not UTF-8") from None
    noise, signing = fields[TLV_NOISE_KEY], fields[TLV_SIGNING_KEY]
    if len(noise) != KEY_BYTES or len(signing) != KEY_BYTES:
        raise MalformedFrame("announce keys must be 32 bytes")
    neighbours: tuple[bytes, ...] = ()
    if TLV_NEIGHBOURS in fields:
        raw = fields[TLV_NEIGHBOURS]
        if len(raw) % ID_BYTES:
            raise MalformedFrame("announce neighbour list is not a multiple of 8 bytes")
        neighbours = tuple(raw[i : i + ID_BYTES] for i in range(0, len(raw), ID_BYTES))
    capabilities = None
    if TLV_CAPABILITIES in fields:
        raw = fields[TLV_CAPABILITIES]
        if not 1 <= len(raw) <= MAX_CAPABILITY_BYTES:
            raise MalformedFrame("announce capabilities must be 1 to 8 bytes")
        capabilities = int.from_bytes(raw, "little")
    geohash = fields.get(TLV_GEOHASH)
    if geohash is not None and len(geohash) > MAX_GEOHASH_BYTES:
        raise MalformedFrame("announce geohash too long")
    return Announce(nickname, noise, signing, neighbours, capabilities, geohash)


class NoisePayloadType(enum.IntEnum):
    PRIVATE_MESSAGE = 0x01
    READ_RECEIPT = 0x02
    DELIVERED = 0x03
    GROUP_INVITE = 0x06
    GROUP_KEY_UPDATE = 0x07
    VOICE_FRAME = 0x08
    VERIFY_CHALLENGE = 0x10
    VERIFY_RESPONSE = 0x11
    VOUCH = 0x12
    PRIVATE_FILE = 0x20
    AUTHENTICATED_PEER_STATE = 0x21
    APP_CHANNEL = 0x70  # AIVillage only (node.routing.app): app request/response; BitChat ignores unknown types


PRIVATE_FILE_ALIAS = 0x09  # accepted on input as PRIVATE_FILE


def encode_noise_payload(ptype: int, data: bytes) -> bytes:
    if not 0 <= ptype <= 0xFF:
        raise EncodeError(f"noise payload type {ptype} does not fit a byte")
    return bytes([ptype]) + data


def decode_noise_payload_untrusted(plaintext: bytes) -> tuple[int, bytes]:
    if not plaintext:
        raise MalformedFrame("empty noise payload")
    ptype = plaintext[0]
    if ptype == PRIVATE_FILE_ALIAS:
        ptype = NoisePayloadType.PRIVATE_FILE
    return ptype, bytes(plaintext[1:])


def encode_private_message(message_id: str, content: str) -> bytes:
    return _tlv(PM_MESSAGE_ID, message_id.encode()) + _tlv(PM_CONTENT, content.encode())


def decode_private_message_untrusted(data: bytes) -> tuple[str, str]:
    """Returns (message ID, content)."""
    fields: dict[int, bytes] = {}
    for t, v in _iter_tlvs(data):
        if t not in (PM_MESSAGE_ID, PM_CONTENT):
            raise MalformedFrame(f"unknown private-message TLV {t:#04x}")
        fields[t] = v
    if PM_MESSAGE_ID not in fields or PM_CONTENT not in fields:
        raise MalformedFrame("private message needs a message ID and content")
    try:
        return fields[PM_MESSAGE_ID].decode("utf-8"), fields[PM_CONTENT].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("private message is not UTF-8") from None


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: bytes
    origin_ttl: int


def encode_ping(p: Ping) -> bytes:
    if len(p.nonce) != 8 or not 0 <= p.origin_ttl <= 0xFF:
        raise EncodeError("ping nonce must be 8 bytes and originTTL one byte")
    return p.nonce + bytes([p.origin_ttl])


def decode_ping_untrusted(payload: bytes) -> Ping:
    if len(payload) != 9:
        raise MalformedFrame(f"ping payload must be 9 bytes, got {len(payload)}")
    return Ping(bytes(payload[:8]), payload[8])
