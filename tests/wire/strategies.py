"""Hypothesis strategies for BitChat packets."""

from __future__ import annotations

from hypothesis import strategies as st

from node.wire import Packet

ids = st.binary(min_size=8, max_size=8)
# Payloads both incompressible (random) and compressible (few distinct bytes, long).
payloads = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda b, n: (b * n)[:4000], st.binary(min_size=1, max_size=8), st.integers(1, 800)),
)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    version = draw(st.sampled_from([1, 2]))
    return Packet(
        version=version,
        type=draw(st.integers(0, 255)),
        ttl=draw(st.integers(0, 255)),
        timestamp_ms=draw(st.integers(0, 2**64 - 1)),
        sender_id=draw(ids),
        recipient_id=draw(st.none() | ids),
        route=tuple(draw(st.lists(ids, max_size=5))) if version == 2 else (),
        payload=draw(payloads),
        signature=draw(st.none() | st.binary(min_size=64, max_size=64)),
        is_rsr=draw(st.booleans()),
    )
