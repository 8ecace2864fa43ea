"""The mailbox codec: requests and answers round-trip, and untrusted bytes raise only MalformedFrame (or, for an
anchor's ERROR answer, MailboxError) — never struct.error, IndexError or the like."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.identity import Identity
from node.mailbox import protocol as p
from node.mailbox.protocol import MailboxError
from node.wire import MalformedFrame

DECODERS = [
    p.decode_request_untrusted,
    p.decode_deposited_untrusted,
    p.decode_challenge_untrusted,
    p.decode_envelopes_untrusted,
    p.decode_acked_untrusted,
]


def test_round_trips() -> None:
    ident, anchor = Identity.generate(), Identity.generate()
    ch = p.Challenge(b"n" * 32, b"e" * 32, 123)
    proof = p.make_proof(ident, anchor.signing_public, ch)
    assert p.decode_request_untrusted(p.encode_fetch(proof, 7)) == p.Request(p.FETCH, proof=proof, max_envelopes=7)
    assert p.decode_request_untrusted(p.encode_ack(b"g" * 16, [1, 2**63])) == p.Request(
        p.ACK, grant=b"g" * 16, ids=(1, 2**63)
    )
    assert p.decode_request_untrusted(p.encode_deposit(b"xyz")) == p.Request(p.DEPOSIT, envelope=b"xyz")
    assert p.decode_challenge_untrusted(p.encode_challenge(ch)) == ch
    items = [p.StoredEnvelope(5, b"abc"), p.StoredEnvelope(9, b"")]
    assert p.decode_envelopes_untrusted(p.encode_envelopes(b"g" * 16, items)) == (b"g" * 16, items)
    assert p.decode_deposited_untrusted(p.encode_deposited(42, False)) == (42, False)
    assert p.decode_acked_untrusted(p.encode_acked(3)) == 3
    with pytest.raises(MailboxError, match="busy: slow down") as exc:
        p.decode_acked_untrusted(p.encode_error(p.E_BUSY, "slow down"))
    assert exc.value.code == p.E_BUSY


TYPES = [p.DEPOSIT, p.CHALLENGE_REQUEST, p.FETCH, p.ACK, p.DEPOSITED, p.CHALLENGE, p.ENVELOPES, p.ACKED, p.ERROR, 0x55]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(TYPES), st.binary(max_size=300), st.sampled_from(DECODERS))
def test_untrusted_bytes_raise_only_malformed_frame(kind: int, rest: bytes, decode: object) -> None:
    with contextlib.suppress(MalformedFrame, MailboxError):
        decode(bytes([kind]) + rest)  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.binary(max_size=200))
def test_truncated_envelope_lists_are_malformed(cut: int, tail: bytes) -> None:
    whole = p.encode_envelopes(b"g" * 16, [p.StoredEnvelope(1, b"a" * 30), p.StoredEnvelope(2, tail)])
    if cut:
        with pytest.raises(MalformedFrame):
            p.decode_envelopes_untrusted(whole[:-cut])
