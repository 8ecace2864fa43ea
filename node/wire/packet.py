"""The BitChat packet, byte for byte (BITCHAT.md §1; BF/BinaryProtocol.swift, BF/BitchatPacket.swift).

Layout (integers big-endian; v1 / v2 differ only in the payload-length width and the route)::

    version u8 | type u8 | ttl u8 | timestamp_ms u64 | flags u8 | payloadLength u16 (v1) / u32 (v2)
    senderID 8 | [recipientID 8 if 0x01] | [route: n u8 + n×8, v2 and 0x08 only]
    | [originalSize u16/u32 if 0x04] payload | [signature 64 if 0x02] | [PKCS#7-style padding]

* ``payloadLength`` counts the payload plus the originalSize field, never IDs, route or signature.
* Compression (BF/CompressionUtil.swift): raw DEFLATE, only when the payload is ≥ 100 bytes, has few
  distinct bytes (unique/min(len,256) < 0.9), the output is non-empty and strictly shorter (v1: ≤ 65535).
* Padding (BF/MessagePadding.swift): to the smallest of 256/512/1024/2048 with len+16 ≤ block, only when the
  pad length k is 1..255; on air only 0x10/0x11 frames are padded.
* Signature (§1.4): Ed25519 over the preimage = the same packet with TTL 0, no signature, RSR cleared,
  compression kept, **always padded**. Verifiers rebuild it from the received bytes
  (:func:`signing_preimage_from_wire_untrusted`), never by re-compressing.
* Decoding (§1.5): try the raw buffer, then once more unpadded; trailing bytes are ignored; the type byte is
  not validated (unknown types are relayed by the mesh). Any problem raises :class:`MalformedFrame` only.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, fields, replace

import nacl.bindings
import nacl.exceptions
import nacl.signing

from node.wire.errors import EncodeError, MalformedFrame
from node.wire.limits import WireLimits

DEFAULT_LIMITS = WireLimits()

ID_BYTES = 8  # sender, recipient and route hop IDs
SIGNATURE_BYTES = 64  # Ed25519
V1_HEADER_BYTES = 14  # version, type, ttl, timestamp(8), flags, payloadLength u16
V2_HEADER_BYTES = 16  # ... payloadLength u32
V1_MIN_FRAME = V1_HEADER_BYTES + ID_BYTES  # 22: header + sender
V2_MIN_FRAME = V2_HEADER_BYTES + ID_BYTES  # 24
COMPRESS_MIN_BYTES = 100  # BF/Constants.swift compressionThreshold
COMPRESS_MAX_UNIQUE_RATIO = 0.9  # payloads with more distinct bytes than this are not worth deflating
DEFLATE_LEVEL = 5  # as observed in BitChat's output; any level inflates the same
PAD_BLOCKS = (256, 512, 1024, 2048)  # BF/MessagePadding.swift optimalBlockSize
PAD_HEADROOM = 16  # a block is chosen only if len + 16 <= block
BROADCAST_ID = b"\xff" * ID_BYTES  # Android's explicit broadcast recipient

FLAG_HAS_RECIPIENT = 0x01
FLAG_HAS_SIGNATURE = 0x02
FLAG_IS_COMPRESSED = 0x04
FLAG_HAS_ROUTE = 0x08  # honoured only in v2
FLAG_IS_RSR = 0x10  # solicited sync reply; not part of the signature


class MessageType(enum.IntEnum):
    """BF/MessageType.swift"""

    ANNOUNCE = 0x01
    MESSAGE = 0x02
    LEAVE = 0x03
    COURIER_ENVELOPE = 0x04
    NOISE_HANDSHAKE = 0x10
    NOISE_ENCRYPTED = 0x11
    FRAGMENT = 0x20
    REQUEST_SYNC = 0x21
    FILE_TRANSFER = 0x22
    BOARD_POST = 0x23
    PREKEY_BUNDLE = 0x24
    GROUP_MESSAGE = 0x25
    PING = 0x26
    PONG = 0x27
    NOSTR_CARRIER = 0x28
    VOICE_FRAME = 0x29
    ANNOUNCE_V2 = 0x2C
    # AIVillage only, not defined by BitChat: a per-hop acknowledgement (node.routing.hoparq). Sent with TTL 1,
    # only to a neighbour whose announce carries the hop-ack capability bit, so a BitChat phone never sees one.
    HOP_ACK = 0x40


@dataclass(frozen=True, slots=True)
class Packet:
    version: int  # 1 or 2
    type: int  # a MessageType value, or an unknown type to relay untouched
    ttl: int
    timestamp_ms: int
    sender_id: bytes
    recipient_id: bytes | None = None
    route: tuple[bytes, ...] = ()  # intermediate hops only; v2 only
    payload: bytes = b""  # always the uncompressed payload
    signature: bytes | None = None
    is_rsr: bool = False


# The decoder builds one Packet per frame. Packet's generated __init__ sets each field through object.__setattr__
# (it is frozen); the decoder sets its slots through their descriptors instead: the same object at about half the
# cost. (Packet validates nothing on construction — tests/wire checks it has no __post_init__ to skip.)
(
    _SET_VERSION,
    _SET_TYPE,
    _SET_TTL,
    _SET_TIMESTAMP,
    _SET_SENDER,
    _SET_RECIPIENT,
    _SET_ROUTE,
    _SET_PAYLOAD,
    _SET_SIGNATURE,
    _SET_IS_RSR,
) = (getattr(Packet, f.name).__set__ for f in fields(Packet))
_new_object = object.__new__


def _new_packet(
    version: int,
    msg_type: int,
    ttl: int,
    timestamp_ms: int,
    sender_id: bytes,
    recipient_id: bytes | None,
    route: tuple[bytes, ...],
    payload: bytes,
    signature: bytes | None,
    is_rsr: bool,
) -> Packet:
    """``Packet(version, msg_type, ...)``, built faster (see above; a test checks they are equal)."""
    packet: Packet = _new_object(Packet)
    _SET_VERSION(packet, version)
    _SET_TYPE(packet, msg_type)
    _SET_TTL(packet, ttl)
    _SET_TIMESTAMP(packet, timestamp_ms)
    _SET_SENDER(packet, sender_id)
    _SET_RECIPIENT(packet, recipient_id)
    _SET_ROUTE(packet, route)
    _SET_PAYLOAD(packet, payload)
    _SET_SIGNATURE(packet, signature)
    _SET_IS_RSR(packet, is_rsr)
    return packet


def is_broadcast(packet: Packet) -> bool:
    """iOS sends no recipient for broadcasts, Android all-FF; both mean everyone (BLEPacketFreshnessPolicy)."""
    return packet.recipient_id is None or packet.recipient_id == BROADCAST_ID


# ---------------------------------------------------------------- padding
def pad(data: bytes) -> bytes:
    n = len(data)
    for block in PAD_BLOCKS:
        if n + PAD_HEADROOM <= block:
            k = block - n
            return data + bytes([k]) * k if 1 <= k <= 255 else data
    return data


def unpad(data: bytes) -> bytes:
    if not data:
        return data
    k = data[-1]
    if 1 <= k <= len(data) and data[-k:] == bytes([k]) * k:
        return data[:-k]
    return data


# ---------------------------------------------------------------- compression
def should_compress(payload: bytes) -> bool:
    if len(payload) < COMPRESS_MIN_BYTES:
        return False
    return len(set(payload)) / min(len(payload), 256) < COMPRESS_MAX_UNIQUE_RATIO


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


# ---------------------------------------------------------------- encoding
def _check_id(name: str, value: bytes) -> None:
    if len(value) != ID_BYTES:
        raise EncodeError(f"{name} must be {ID_BYTES} bytes, got {len(value)}")


def encode_packet(
    packet: Packet, *, pad: bool = False, compress: bool = True, limits: WireLimits = DEFAULT_LIMITS
) -> bytes:
    """Encode ``packet``; ``pad`` applies BitChat padding (used on air for 0x10/0x11 only)."""
    p = packet
    if p.version not in (1, 2):
        raise EncodeError(f"version must be 1 or 2, got {p.version}")
    for name, value, top in (("type", p.type, 0xFF), ("ttl", p.ttl, 0xFF), ("timestamp_ms", p.timestamp_ms, 2**64 - 1)):
        if not 0 <= value <= top:
            raise EncodeError(f"{name} {value} does not fit its field")
    _check_id("sender_id", p.sender_id)
    if p.recipient_id is not None:
        _check_id("recipient_id", p.recipient_id)
    if p.route:
        if p.version < 2:
            raise EncodeError("a source route needs a version 2 packet")
        if len(p.route) > min(255, limits.max_route_hops):
            raise EncodeError(f"route of {len(p.route)} hops exceeds {min(255, limits.max_route_hops)}")
        for hop in p.route:
            _check_id("route hop", hop)
    if p.signature is not None and len(p.signature) != SIGNATURE_BYTES:
        raise EncodeError(f"signature must be {SIGNATURE_BYTES} bytes")
    size_width = 2 if p.version == 1 else 4
    body = p.payload
    flags = 0
    if compress and should_compress(p.payload) and (p.version == 2 or len(p.payload) <= 0xFFFF):
        deflated = raw_deflate(p.payload)
        if 0 < len(deflated) < len(p.payload):
            body = len(p.payload).to_bytes(size_width, "big") + deflated
            flags |= FLAG_IS_COMPRESSED
    if len(body) > (0xFFFF if p.version == 1 else 0xFFFFFFFF):
        raise EncodeError(f"payload of {len(body)} bytes does not fit a v{p.version} packet")
    if p.recipient_id is not None:
        flags |= FLAG_HAS_RECIPIENT
    if p.signature is not None:
        flags |= FLAG_HAS_SIGNATURE
    if p.route:
        flags |= FLAG_HAS_ROUTE
    if p.is_rsr:
        flags |= FLAG_IS_RSR
    out = bytearray(struct.pack(">BBBQB", p.version, p.type, p.ttl, p.timestamp_ms, flags))
    out += len(body).to_bytes(size_width, "big")
    out += p.sender_id
    if p.recipient_id is not None:
        out += p.recipient_id
    if p.route:
        out.append(len(p.route))
        for hop in p.route:
            out += hop
    out += body
    if p.signature is not None:
        out += p.signature
    return _pad(bytes(out)) if pad else bytes(out)


_pad = pad  # encode_packet's keyword shadows the function name


# ---------------------------------------------------------------- decoding
_V1_HEADER = struct.Struct(">BBBQBH")  # version, type, ttl, timestamp, flags, payloadLength
_V2_HEADER = struct.Struct(">BBBQBI")
_MESSAGE = int(MessageType.MESSAGE)  # (a plain int: compared on every frame)


def _parse(data: bytes, limits: WireLimits) -> tuple[Packet, int]:
    """(the packet, the offset just past its payload — where the signature, if any, starts). Every relayed frame
    comes through here once: written flat (no per-call closure or layout object; the fixed header in one
    ``struct`` call, the payload sliced or inflated straight from the frame)."""
    n = len(data)
    if n < V1_MIN_FRAME:
        raise MalformedFrame(f"frame of {n} bytes is shorter than the {V1_MIN_FRAME}-byte minimum")
    version = data[0]
    if version == 1:
        _, msg_type, ttl, timestamp, flags, payload_len = _V1_HEADER.unpack_from(data)
        pos, width = V1_HEADER_BYTES + ID_BYTES, 2
    elif version == 2:
        if n < V2_MIN_FRAME:
            raise MalformedFrame(f"v2 frame of {n} bytes is shorter than {V2_MIN_FRAME}")
        _, msg_type, ttl, timestamp, flags, payload_len = _V2_HEADER.unpack_from(data)
        pos, width = V2_HEADER_BYTES + ID_BYTES, 4
    else:
        raise MalformedFrame(f"unknown version {version}")
    if payload_len > limits.max_payload_bytes:
        raise MalformedFrame(f"payload length {payload_len} exceeds {limits.max_payload_bytes}")
    sender = data[pos - ID_BYTES : pos]  # (the minimum frame sizes hold the header and the sender)
    recipient = None
    if flags & FLAG_HAS_RECIPIENT:
        end = pos + ID_BYTES
        if end > n:
            raise MalformedFrame("recipient ID runs past the end of the frame")
        recipient, pos = data[pos:end], end
    route: tuple[bytes, ...] = ()
    if version == 2 and flags & FLAG_HAS_ROUTE:
        if pos + 1 > n:
            raise MalformedFrame("route count runs past the end of the frame")
        hops = data[pos]
        pos += 1
        if hops > limits.max_route_hops:
            raise MalformedFrame(f"route of {hops} hops exceeds {limits.max_route_hops}")
        if pos + hops * ID_BYTES > n:
            raise MalformedFrame("route hop runs past the end of the frame")
        route = tuple(data[pos + k * ID_BYTES : pos + (k + 1) * ID_BYTES] for k in range(hops))
        pos += hops * ID_BYTES
    payload_end = pos + payload_len
    if payload_end > n:
        raise MalformedFrame("payload runs past the end of the frame")
    # Public messages have a smaller bound: checked on the declared size, before any inflating.
    cap = limits.max_message_payload_bytes if msg_type == _MESSAGE else limits.max_payload_bytes
    if payload_len > cap:
        raise MalformedFrame(f"payload of {payload_len} bytes exceeds {cap} for type {msg_type:#04x}")
    if flags & FLAG_IS_COMPRESSED:
        payload = _inflate(data, pos, payload_end, width, limits, cap)
    else:
        payload = data[pos:payload_end]
    signature = None
    if flags & FLAG_HAS_SIGNATURE:
        end = payload_end + SIGNATURE_BYTES
        if end > n:
            raise MalformedFrame("signature runs past the end of the frame")
        signature = data[payload_end:end]
    packet = _new_packet(
        version, msg_type, ttl, timestamp, sender, recipient, route, payload, signature, bool(flags & FLAG_IS_RSR)
    )
    return packet, payload_end


def _inflate(data: bytes, start: int, end: int, width: int, limits: WireLimits, cap: int) -> bytes:
    """The payload ``data[start:end]`` (originalSize field, then raw DEFLATE) inflated, within ``cap``."""
    deflated_start = start + width
    if end <= deflated_start:
        raise MalformedFrame("compressed payload has no deflate data")
    original = int.from_bytes(data[start:deflated_start], "big")
    if original > cap:
        raise MalformedFrame(f"original size {original} exceeds {cap}")
    if original / (end - deflated_start) > limits.max_decompression_ratio:
        raise MalformedFrame("compression ratio exceeds the configured maximum")
    try:
        out = zlib.decompressobj(-15).decompress(data[deflated_start:end], original + 1)
    except zlib.error as exc:
        raise MalformedFrame(f"invalid deflate data: {exc}") from None
    if len(out) != original:
        raise MalformedFrame(f"inflated {len(out)} bytes, header says {original}")
    return out


def _unpadded_for_retry(data: bytes) -> bytes | None:
    """The frame without its padding, for a second parse after the first failed; None if that cannot help."""
    if len(data) > 11 and data[11] & FLAG_IS_COMPRESSED:
        return None  # unpadding only shortens a frame, so it cannot mend one; here it would inflate a second time
    stripped = unpad(data)
    return None if len(stripped) == len(data) else stripped


def _parse_maybe_padded(data: bytes, limits: WireLimits) -> tuple[Packet, int]:
    try:
        return _parse(data, limits)
    except MalformedFrame:
        stripped = _unpadded_for_retry(data)
        if stripped is None:
            raise
        return _parse(stripped, limits)


def decode_packet_untrusted(data: bytes, limits: WireLimits = DEFAULT_LIMITS) -> Packet:
    """Decode a frame from the network. Raises :class:`MalformedFrame` and nothing else. (The body of
    :func:`_parse_maybe_padded`, spelled out: every frame comes through here.)"""
    data = bytes(data)
    try:
        return _parse(data, limits)[0]
    except MalformedFrame:
        stripped = _unpadded_for_retry(data)
        if stripped is None:
            raise
        return _parse(stripped, limits)[0]


# ---------------------------------------------------------------- signatures
def signing_preimage(packet: Packet) -> bytes:
    """§1.4: the packet with TTL 0, no signature, RSR cleared, compression kept, always padded."""
    return encode_packet(replace(packet, ttl=0, signature=None, is_rsr=False), pad=True)


def _signed_span(data: bytes, limits: WireLimits) -> tuple[int, bytes | None]:
    """(offset just past the payload, signature or None) of a frame, read from its header alone: the same bounds
    as :func:`_parse` but no packet is built and nothing is inflated (a signature covers the deflate bytes as
    sent). Raises :class:`MalformedFrame`."""
    n = len(data)
    if n < V1_MIN_FRAME:
        raise MalformedFrame(f"frame of {n} bytes is shorter than the {V1_MIN_FRAME}-byte minimum")
    version, msg_type, flags = data[0], data[1], data[11]
    if version == 1:
        payload_len, pos = (data[12] << 8) | data[13], V1_HEADER_BYTES + ID_BYTES
    elif version == 2:
        if n < V2_MIN_FRAME:
            raise MalformedFrame(f"v2 frame of {n} bytes is shorter than {V2_MIN_FRAME}")
        payload_len, pos = int.from_bytes(data[12:16], "big"), V2_HEADER_BYTES + ID_BYTES
    else:
        raise MalformedFrame(f"unknown version {version}")
    cap = limits.max_message_payload_bytes if msg_type == _MESSAGE else limits.max_payload_bytes
    if payload_len > min(cap, limits.max_payload_bytes):
        raise MalformedFrame(f"payload length {payload_len} exceeds the limit for type {msg_type:#04x}")
    if flags & FLAG_HAS_RECIPIENT:
        pos += ID_BYTES
    if version >= 2 and flags & FLAG_HAS_ROUTE:
        if pos >= n:
            raise MalformedFrame("route count runs past the end of the frame")
        hops = data[pos]
        if hops > limits.max_route_hops:
            raise MalformedFrame(f"route of {hops} hops exceeds {limits.max_route_hops}")
        pos += 1 + hops * ID_BYTES
    pos += payload_len
    if not flags & FLAG_HAS_SIGNATURE:
        if pos > n:
            raise MalformedFrame("payload runs past the end of the frame")
        return pos, None
    if pos + SIGNATURE_BYTES > n:
        raise MalformedFrame("signature runs past the end of the frame")
    return pos, data[pos : pos + SIGNATURE_BYTES]


def _signed_span_maybe_padded(data: bytes, limits: WireLimits) -> tuple[int, bytes | None]:
    try:
        return _signed_span(data, limits)
    except MalformedFrame:
        stripped = unpad(data)
        if len(stripped) == len(data):
            raise
        return _signed_span(stripped, limits)


_SIGNED_FLAGS = ~(FLAG_HAS_SIGNATURE | FLAG_IS_RSR) & 0xFF  # the flags a preimage keeps


def _padding(n: int) -> bytes:
    """What :func:`pad` appends to ``n`` bytes."""
    for block in PAD_BLOCKS:
        if n + PAD_HEADROOM <= block:
            k = block - n
            return bytes((k,)) * k if 1 <= k <= 255 else b""
    return b""


def _signed_message(signature: bytes, frame: bytes, payload_end: int) -> bytes:
    """``signature`` followed by the preimage rebuilt from the frame (cut at the end of the payload, TTL 0, flags
    without HAS_SIGNATURE and IS_RSR, padded), assembled in one join — libsodium's signed-message layout."""
    return b"".join(
        (
            signature,
            frame[:2],
            b"\x00",
            frame[3:11],
            bytes((frame[11] & _SIGNED_FLAGS,)),
            frame[12:payload_end],
            _padding(payload_end),
        )
    )


def signing_preimage_from_wire_untrusted(frame: bytes, limits: WireLimits = DEFAULT_LIMITS) -> bytes:
    """The preimage rebuilt from received bytes: cut at the end of the payload, TTL 0, flags without
    HAS_SIGNATURE and IS_RSR, padded — the sender's deflate bytes are kept as they are."""
    return _signed_message(b"", frame, _parse_maybe_padded(bytes(frame), limits)[1])


def sign_packet(packet: Packet, signing_key: nacl.signing.SigningKey) -> Packet:
    signature = signing_key.sign(signing_preimage(packet)).signature
    return replace(packet, signature=bytes(signature))


def verify_wire_signature(frame: bytes, verify_key: bytes, limits: WireLimits = DEFAULT_LIMITS) -> bool:
    """True if the frame carries a signature that verifies with ``verify_key`` (32-byte Ed25519). Never
    raises: malformed frames, bad keys and bad signatures all give False.

    The hot path of every relay: the header is read once for the signature's span (no packet built, nothing
    inflated — the caller decoded the frame already) and the check goes straight to libsodium."""
    try:
        data = bytes(frame)
        payload_end, signature = _signed_span_maybe_padded(data, limits)
        if signature is None or len(verify_key) != nacl.bindings.crypto_sign_PUBLICKEYBYTES:
            return False
        nacl.bindings.crypto_sign_open(_signed_message(signature, data, payload_end), verify_key)
    except (
        MalformedFrame,
        nacl.exceptions.BadSignatureError,
        nacl.exceptions.ValueError,
        nacl.exceptions.TypeError,
        ValueError,
        TypeError,
    ):
        return False
    return True
