"""Fuzzing every untrusted decoder: whatever the bytes, only MalformedFrame may escape."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.wire import (
    MalformedFrame,
    Packet,
    Reassembler,
    decode_announce_untrusted,
    decode_fragment_untrusted,
    decode_noise_payload_untrusted,
    decode_packet_untrusted,
    decode_ping_untrusted,
    decode_private_message_untrusted,
    encode_packet,
    signing_preimage_from_wire_untrusted,
    verify_wire_signature,
)
from tests.wire.strategies import packets

DECODERS = (
    decode_packet_untrusted,
    decode_announce_untrusted,
    decode_fragment_untrusted,
    decode_noise_payload_untrusted,
    decode_ping_untrusted,
    decode_private_message_untrusted,
    signing_preimage_from_wire_untrusted,
)


def feed_everything(data: bytes, reassembler: Reassembler) -> None:
    for decode in DECODERS:
        with contextlib.suppress(MalformedFrame):
            decode(data)
    assert verify_wire_signature(data, bytes(32)) is False
    try:
        frag = decode_fragment_untrusted(data)
    except MalformedFrame:
        return
    reassembler.add_untrusted(data[:8], frag, 0.0)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    pkt: Packet = draw(packets())
    wire = bytearray(encode_packet(pkt, pad=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        i = draw(st.integers(0, max(0, len(wire) - 1)))
        if op == "flip" and wire:
            wire[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            wire[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and wire:
            del wire[i]
        elif op == "truncate":
            del wire[i:]
        elif op == "set" and wire:
            wire[i] = draw(st.sampled_from([0, 1, 2, 0x04, 0x08, 0x0F, 0xFF]))
    return bytes(wire)


inputs = st.one_of(st.binary(max_size=400), mutated_frames())


@settings(max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs)
def test_fuzz_fast(data: bytes) -> None:
    feed_everything(data, Reassembler())


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~3-4 minutes on 2 cores; the default 120 s per-test limit is too short
@settings(
    max_examples=100_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(inputs)
def test_fuzz_100k(data: bytes) -> None:
    feed_everything(data, Reassembler())


def _outcome(parse: object, data: bytes) -> object:
    try:
        return parse(data)  # type: ignore[operator]
    except MalformedFrame as exc:
        return ("refused", str(exc))


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs)
def test_the_decoder_and_the_shared_padded_parser_agree(data: bytes) -> None:
    """decode_packet_untrusted spells out _parse_maybe_padded's body for speed; the signature path still goes
    through the shared parser. If one copy were fixed and not the other, the decoder and the signature check
    could read different bytes: they must agree on every frame (same packet, or the same refusal)."""
    from node.wire.packet import DEFAULT_LIMITS, _parse_maybe_padded

    ours = _outcome(decode_packet_untrusted, data)
    shared = _outcome(lambda d: _parse_maybe_padded(d, DEFAULT_LIMITS)[0], data)
    assert ours == shared
