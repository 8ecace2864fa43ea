"""Hostile packaged neural model files (review LOW, session 7: a modified package only): a ~10 KB neural.bin declaring
64 MiB of int8 weights used to allocate ~570 MiB (the payload, then the weights as float32, twice) before its
refusal. Now a blob's declared sizes are bounded before anything is decompressed (node/twin/blob.py), a model file's
payload by neural.MAX_RAW_BYTES, and every shape of a model is checked before any weight is dequantized."""

from __future__ import annotations

import json
import lzma
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from node.twin import blob, neural, rnn
from node.twin.errors import TwinStoreError
from node.twin.prior import GlobalPrior

MiB = 1 << 20


def _zeros_blob(magic: bytes, arrays: dict[str, tuple[str, tuple[int, ...]]]) -> bytes:
    """A blob whose arrays (name: (dtype, shape)) are all zeros, compressed in 1 MiB steps (the test never holds the
    payload it declares): what a few KB of hostile file can declare."""
    index = [{"name": n, "dtype": dt, "shape": list(shape)} for n, (dt, shape) in arrays.items()]
    header = json.dumps({"arrays": index, "meta": {}}).encode()
    size = sum(int(np.prod(shape)) * np.dtype(dt).itemsize for dt, shape in arrays.values())
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=1)
    chunk = bytes(MiB)
    body = [comp.compress(chunk[: min(MiB, size - i)]) for i in range(0, size, MiB)]
    body.append(comp.flush())
    return struct.pack(">4sHI", magic, 1, len(header)) + header + b"".join(body)


def _peak(fn: Callable[[], Any]) -> tuple[int, str]:
    """The most memory Python and numpy held at once while ``fn`` ran (tracemalloc), and its refusal."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1], ""
    except TwinStoreError as exc:
        return tracemalloc.get_traced_memory()[1], str(exc)
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def prior() -> GlobalPrior:
    return GlobalPrior.load_packaged()


@pytest.mark.parametrize("magic", [rnn.MAGIC, neural.MAGIC], ids=["recurrent", "feed-forward"])
@pytest.mark.parametrize(("rows", "dim"), [(16_300, 4096), (4096, 16_300)], ids=["tall", "wide"])
def test_a_small_file_declaring_huge_weights_costs_nothing(
    prior: GlobalPrior, magic: bytes, rows: int, dim: int
) -> None:
    data = _zeros_blob(magic, {"e": ("int8", (rows, dim)), "e_scale": ("float32", (rows,))})
    assert len(data) < 20_000  # ~10 KB of file
    peak, why = _peak(lambda: rnn.load_neural(data, prior.p1, prior.unk, prior.bos))
    assert why and peak < 2 * MiB, (peak, why)  # was ~570 MiB: refused from its header, nothing decompressed


def test_a_blob_is_never_decompressed_past_what_its_header_declares() -> None:
    """A header declaring 1 KB over a 32 MiB payload of zeros: the decoder stops one byte past the declared size."""
    arrays: dict[str, tuple[str, tuple[int, ...]]] = {"a": ("uint8", (32 * MiB,))}
    data = _zeros_blob(b"AVTX", arrays)
    header_len = struct.unpack_from(">I", data, 6)[0]
    small = json.dumps({"arrays": [{"name": "a", "dtype": "uint8", "shape": [1024]}], "meta": {}}).encode()
    lying = struct.pack(">4sHI", b"AVTX", 1, len(small)) + small + data[10 + header_len :]
    peak, why = _peak(lambda: blob.unpack_untrusted(lying, b"AVTX", 1, max_bytes=64 * MiB))
    assert "longer than its header says" in why and peak < 2 * MiB, (peak, why)
    got, _ = blob.unpack_untrusted(data, b"AVTX", 1, max_bytes=64 * MiB)  # the honest header: it loads
    assert got["a"].shape == (32 * MiB,)
    two = _zeros_blob(b"AVTX", {"a": ("uint8", (16 * MiB,)), "b": ("uint8", (16 * MiB,))})
    with pytest.raises(TwinStoreError, match="declared by the header"):  # each under the bound, not together
        blob.unpack_untrusted(two, b"AVTX", 1, max_bytes=32 * MiB - 1)


@pytest.mark.parametrize(
    ("arrays", "said"),
    [
        # within MAX_RAW_BYTES, shapes the prior allows, but no GRU weights: refused before the 64 MiB of float32
        ({"e": ("int8", (16_000, 1024)), "e_scale": ("float32", (16_000,))}, "wx is not an int8 matrix"),
        ({"e": ("int8", (4000, 4096)), "e_scale": ("float32", (4000,))}, "state size of 4096"),
        ({"e": ("int8", (18_153 + 40, 512)), "e_scale": ("float32", (18_193,))}, "vocabulary and the prior's"),
    ],
    ids=["missing-weights", "state-too-wide", "vocabulary-past-the-prior"],
)
def test_shapes_are_checked_before_any_weight_is_dequantized(
    prior: GlobalPrior, arrays: dict[str, tuple[str, tuple[int, ...]]], said: str
) -> None:
    data = _zeros_blob(rnn.MAGIC, arrays)
    payload = sum(int(np.prod(shape)) * np.dtype(dt).itemsize for dt, shape in arrays.values())
    assert payload <= neural.MAX_RAW_BYTES
    peak, why = _peak(lambda: rnn.load_neural(data, prior.p1, prior.unk, prior.bos))
    # the payload (decompressing it may take twice its size at once), never the 4x of it as float32 on top
    assert said in why and peak < 3 * payload, (peak, payload, why)


def test_the_shipped_model_still_loads(prior: GlobalPrior) -> None:
    nn = rnn.load_packaged(prior.p1, prior.unk, prior.bos)
    assert isinstance(nn, rnn.RecurrentLM) and nn.d <= neural.MAX_DIM and nn.size_bytes < neural.MAX_RAW_BYTES
