"""Codec and handshake throughput, each as a ratio against a baseline measured in the same run.

    python bench/codec.py [--seconds S]

Figures (one summary line each):
* encode/decode of a signed 200-byte public message, vs ``struct.pack``/``unpack`` of the same header;
* encode/decode of a 1 KB compressible payload (deflate on the path), same baseline;
* fragment + reassemble a 10 KB frame at a 512-byte MTU, vs slicing the frame into the same chunks;
* signature verification from the wire, vs a bare pynacl Ed25519 verify of the same preimage;
* full Noise XX handshakes (both sides), vs bare X25519 operations (an XX handshake does 10).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nacl.bindings
import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.crypto.session import XXHandshake
from node.wire import (
    MessageType,
    Packet,
    Reassembler,
    decode_fragment_untrusted,
    decode_packet_untrusted,
    encode_packet,
    fragment_frame,
    sign_packet,
    signing_preimage_from_wire_untrusted,
    verify_wire_signature,
)

HEADER = struct.Struct(">BBBQBH8s")


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(64):
            fn()
        n += 64
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def run(seconds: float = 1.0) -> list[str]:
    key = nacl.signing.SigningKey(bytes(range(32)))
    sender = bytes(range(8))
    lines = []

    def header_baseline() -> None:
        HEADER.unpack(HEADER.pack(1, 2, 7, 1_700_000_000_000, 2, 200, sender))

    base = rate(header_baseline, seconds)

    msg = sign_packet(
        Packet(
            version=1,
            type=MessageType.MESSAGE,
            ttl=7,
            timestamp_ms=1_700_000_000_000,
            sender_id=sender,
            payload=os.urandom(100).hex().encode(),
        ),
        key,
    )
    wire = encode_packet(msg)
    enc = rate(lambda: encode_packet(msg), seconds)
    dec = rate(lambda: decode_packet_untrusted(wire), seconds)
    lines.append(f"codec.encode_signed_msg_200B: {enc:,.0f} ops/s (ratio vs struct pack+unpack {enc / base:.3f})")
    lines.append(f"codec.decode_signed_msg_200B: {dec:,.0f} ops/s (ratio vs struct pack+unpack {dec / base:.3f})")

    big = Packet(
        version=1,
        type=MessageType.MESSAGE,
        ttl=7,
        timestamp_ms=1,
        sender_id=sender,
        payload=(b"the quick brown fox jumps over the lazy dog " * 24)[:1024],
    )
    big_wire = encode_packet(big)
    enc_c = rate(lambda: encode_packet(big), seconds)
    dec_c = rate(lambda: decode_packet_untrusted(big_wire), seconds)
    lines.append(
        f"codec.encode_compressed_1KB: {enc_c:,.0f} ops/s (ratio vs struct pack+unpack {enc_c / base:.3f};"
        f" {len(big_wire)} bytes on the wire)"
    )
    lines.append(f"codec.decode_compressed_1KB: {dec_c:,.0f} ops/s (ratio vs struct pack+unpack {dec_c / base:.3f})")

    frame_pkt = Packet(
        version=1,
        type=MessageType.NOISE_ENCRYPTED,
        ttl=7,
        timestamp_ms=1,
        sender_id=sender,
        recipient_id=bytes(8),
        payload=os.urandom(10_000),
    )
    frame = encode_packet(frame_pkt)

    def fragment_roundtrip() -> None:
        r = Reassembler()
        out = None
        for piece in fragment_frame(frame_pkt, frame, 512, b"F" * 8):
            p = decode_packet_untrusted(piece)
            out = r.add_untrusted(p.sender_id, decode_fragment_untrusted(p.payload), 0.0)
        if out != frame:
            raise AssertionError("reassembly failed")

    def slice_baseline() -> None:
        b"".join(frame[i : i + 469] for i in range(0, len(frame), 469))

    frag = rate(fragment_roundtrip, seconds)
    sl = rate(slice_baseline, seconds)
    lines.append(f"codec.fragment_reassemble_10KB: {frag:,.0f} frames/s (ratio vs bare slicing {frag / sl:.4f})")

    preimage = signing_preimage_from_wire_untrusted(wire)
    vk = nacl.signing.VerifyKey(bytes(key.verify_key))
    assert msg.signature is not None
    sig = msg.signature
    ver = rate(lambda: verify_wire_signature(wire, bytes(key.verify_key)), seconds)
    bare = rate(lambda: vk.verify(preimage, sig), seconds)
    lines.append(f"codec.verify_from_wire: {ver:,.0f} ops/s (ratio vs bare Ed25519 verify {ver / bare:.3f})")

    a_static, b_static = os.urandom(32), os.urandom(32)

    def handshake() -> None:
        a, b = XXHandshake(True, a_static), XXHandshake(False, b_static)
        b.read_untrusted(a.write())
        a.read_untrusted(b.write())
        b.read_untrusted(a.write())
        a.finish()
        b.finish()

    pub = nacl.bindings.crypto_scalarmult_base(b_static)
    hs = rate(handshake, seconds)
    dh = rate(lambda: nacl.bindings.crypto_scalarmult(a_static, pub), seconds)
    # Both sides: 4 key generations + 6 DH = 10 X25519 operations per full handshake.
    lines.append(
        f"noise.xx_handshake_both_sides: {hs:,.0f} handshakes/s (ratio vs 10 bare X25519 ops {hs * 10 / dh:.3f})"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure")
    args = parser.parse_args()
    for line in run(args.seconds):
        print(line, flush=True)


if __name__ == "__main__":
    main()
