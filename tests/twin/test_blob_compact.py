"""The twin state's compressor stays small however large the state grows (node/twin/blob.py ``compact``)."""

from __future__ import annotations

import lzma

import numpy as np

from node.twin import blob


def test_a_compact_blobs_dictionary_is_capped_whatever_the_payload() -> None:
    """A 3 MB state packed ``compact`` decodes within 1 MiB of decoder memory: its LZMA dictionary is at most 256
    KiB (the compressor's match finder takes ~10x its dictionary in RSS while a save runs: a dictionary sized to
    the payload put a +10-60 MiB spike on a node ingesting documents). It still round-trips exactly."""
    rng = np.random.default_rng(7)
    arrays: dict[str, np.ndarray] = {
        "w": rng.standard_normal(750_000).astype(np.float32),
        "n": np.arange(1000, dtype=np.int64),
    }
    data = blob.pack(b"TEST", 1, arrays, {"k": 1}, compact=True)
    header_len = int.from_bytes(data[6:10], "big")
    body = data[10 + header_len :]
    raw = lzma.LZMADecompressor(memlimit=1 << 20).decompress(body)  # LZMAError (memory limit) past ~1 MiB
    assert len(raw) == 3_000_000 + 8_000
    got, meta = blob.unpack_untrusted(data, b"TEST", 1, max_bytes=1 << 23)
    assert meta == {"k": 1} and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    big = blob.pack(b"TEST", 1, arrays, {"k": 1})  # the default (shipped files): preset 9's 64 MiB dictionary
    try:
        lzma.LZMADecompressor(memlimit=1 << 20).decompress(big[10 + int.from_bytes(big[6:10], "big") :])
    except lzma.LZMAError:
        pass
    else:
        raise AssertionError("the default dictionary decoded within 1 MiB: the check above proves nothing")
