"""The twin state's compressor stays small however large the state grows (node/twin/blob.py ``compact``)."""

from __future__ import annotations

import lzma

import numpy as np

from node.twin import blob


def _body(data: bytes) -> bytes:
    return data[10 + int.from_bytes(data[6:10], "big") :]


def test_a_compact_blobs_dictionary_is_capped_whatever_the_payload() -> None:
    """A 1.2 MB state packed ``compact`` decodes within 1 MiB of decoder memory: its LZMA dictionary is at most 256
    KiB, not the payload's 2 MiB (the compressor's match finder takes ~10x its dictionary in RSS while a save runs:
    a dictionary sized to the payload put a +10-60 MiB spike on a node ingesting documents). It round-trips."""
    arrays: dict[str, np.ndarray] = {
        "counts": np.arange(300_000, dtype=np.int32) % 977,
        "n": np.arange(1000, dtype=np.int64),
    }
    data = blob.pack(b"TEST", 1, arrays, {"k": 1}, compact=True)
    raw = lzma.LZMADecompressor(memlimit=1 << 20).decompress(_body(data))  # LZMAError (memory limit) past ~1 MiB
    assert len(raw) == 1_200_000 + 8_000
    got, meta = blob.unpack_untrusted(data, b"TEST", 1, max_bytes=1 << 23)
    assert meta == {"k": 1} and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    small = blob.pack(b"TEST", 1, {"n": arrays["n"]}, {}, compact=True)  # 8 KB: the 64 KiB floor
    lzma.LZMADecompressor(memlimit=1 << 18).decompress(_body(small))
