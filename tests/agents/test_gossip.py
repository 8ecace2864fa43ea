"""The governance gossip codec and per-peer buckets (sans-IO): round trips, every malformed input raises only
MalformedFrame, buckets refill at their rate and forget the least recently seen peer first."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.agents.governance.gossip import (
    MAX_ITEMS,
    Item,
    ItemKind,
    Pull,
    Push,
    TokenBuckets,
    batch_from_bytes_untrusted,
    encode_batch,
    encode_pull,
    encode_push,
    request_from_bytes_untrusted,
)
from node.wire.errors import MalformedFrame

items = st.lists(st.builds(Item, st.sampled_from(list(ItemKind)), st.binary(max_size=300)), max_size=20)


@given(items, st.text(min_size=1, max_size=20))
def test_push_and_batch_round_trip(its: list[Item], ns: str) -> None:
    got = request_from_bytes_untrusted(encode_push(ns, its))
    assert got == Push(ns, its)
    assert batch_from_bytes_untrusted(encode_batch(its, True)) == (its, True)


def test_pull_round_trip() -> None:
    assert request_from_bytes_untrusted(encode_pull("village", 3, 17)) == Pull("village", 3, 17)


@given(st.binary(max_size=200))
def test_untrusted_parsers_raise_only_malformed_frame(data: bytes) -> None:
    for parse in (request_from_bytes_untrusted, batch_from_bytes_untrusted):
        with contextlib.suppress(MalformedFrame):
            parse(data)


def test_oversize_and_trailing_inputs_are_refused() -> None:
    body = encode_push("v", [Item(ItemKind.VOTE, b"x")])
    with pytest.raises(MalformedFrame, match="trailing"):
        request_from_bytes_untrusted(body + b"!")
    too_many = bytearray(encode_push("v", []))
    too_many[-2:] = (MAX_ITEMS + 1).to_bytes(2, "big")
    with pytest.raises(MalformedFrame, match="more than"):
        request_from_bytes_untrusted(bytes(too_many))
    with pytest.raises(ValueError):
        encode_push("v", [Item(ItemKind.VOTE, b"")] * (MAX_ITEMS + 1))


def test_token_buckets_refill_and_stay_bounded() -> None:
    b = TokenBuckets(rate_per_s=10.0, burst=20.0, max_peers=2)
    assert b.take(b"a", 50, 0) == 20
    assert b.take(b"a", 50, 500) == 5  # half a second refills 5
    assert b.take(b"b", 1, 500) == 1
    assert b.take(b"c", 1, 500) == 1  # "a" is forgotten (least recently used) ...
    assert b.take(b"a", 50, 500) == 20  # ... and starts with a full bucket (bounded memory, not unbounded credit)
