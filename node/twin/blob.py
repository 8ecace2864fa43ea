"""A small versioned container for numpy arrays: magic, format version, a JSON header, LZMA-compressed data.

Used for the shipped prior and for the twin's own state. Reading is strict (``*_untrusted`` style): a wrong
magic or version, a header that does not describe the payload, or a payload over ``max_bytes`` raises
:class:`~node.twin.errors.TwinStoreError`; nothing is unpickled (``allow_pickle`` is never on).
"""

from __future__ import annotations

import json
import lzma
import math
import struct
from typing import Any

import numpy as np

from node.twin.errors import TwinStoreError

_HEADER = struct.Struct(">4sHI")  # magic, version, header length
_ALLOWED_DTYPES = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float16", "float32", "float64"}
MAX_HEADER_BYTES = 1 << 20
# The decoder's memory cap: pack uses preset 9 (a 64 MiB dictionary, ~65 MiB to decode); a body declaring a
# bigger dictionary is refused as LZMAError instead of allocating it (MemoryError under ulimit -v, 32-bit Pi OS).
MAX_DECODER_MEMORY_BYTES = 128 << 20
COMPACT_DICT_MAX_BYTES = 256 << 10  # pack(compact=True): the compressor's RSS stays ~5 MiB


def _check_shape(shape: tuple[int, ...], max_bytes: int) -> None:
    """The shapes :func:`pack` writes, and only those: 1-D or 2-D, each dimension at most ``max_bytes``, and no
    rows without columns (an empty 2-D array has no rows: ``tolist()`` would build one list per row, ``(2**27, 0)``
    is 8 GB of empty lists from a few bytes of header)."""
    if len(shape) not in (1, 2):
        raise TwinStoreError(f"corrupt header: an array of {len(shape)} dimensions (1 or 2 expected)")
    if any(x < 0 or x > max_bytes for x in shape):
        raise TwinStoreError(f"corrupt header: an array dimension out of range 0..{max_bytes}")
    if len(shape) == 2 and shape[1] == 0 and shape[0] != 0:
        raise TwinStoreError("corrupt header: a 2-D array with rows but no columns")


def pack(
    magic: bytes, version: int, arrays: dict[str, np.ndarray], meta: dict[str, Any], *, compact: bool = False
) -> bytes:
    """Serialise ``arrays`` (1-D or 2-D, plain dtypes) and a JSON-able ``meta`` dict.

    ``compact``: a small LZMA dictionary (the payload's size rounded up to a power of two, 64 KiB to
    ``COMPACT_DICT_MAX_BYTES``) instead of preset 9's 64 MiB. The compressor's match finder takes ~10x its
    dictionary in RSS while it runs: preset 9 touched ~65 MiB even for a 300 KB state (the +60 MiB spike a twin save
    put on a running node, seen during RAG ingest), and a dictionary sized to the whole payload still took 11 MiB
    for a 1 MB state and 60 MiB for a 5 MB one. At 256 KiB it is ~5 MiB whatever the state's size, for files
    0-0.6 % larger (bench/README.md, ingest4). The shipped prior and neural model keep the default so their
    rebuilds stay byte-identical."""
    index = []
    chunks = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.name not in _ALLOWED_DTYPES:
            raise TwinStoreError(f"array {name!r} has unsupported dtype {a.dtype}")
        if len(a.shape) not in (1, 2) or (a.ndim == 2 and a.shape[1] == 0 and a.shape[0] != 0):
            raise TwinStoreError(f"array {name!r} has shape {a.shape} (1-D, or 2-D with columns, expected)")
        index.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
        chunks.append(a.tobytes())
    header = json.dumps({"arrays": index, "meta": meta}, separators=(",", ":")).encode()
    raw = b"".join(chunks)
    if compact:
        dict_size = max(1 << 16, min(COMPACT_DICT_MAX_BYTES, 1 << max(0, len(raw) - 1).bit_length()))
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size}]
        body = lzma.compress(raw, format=lzma.FORMAT_XZ, filters=filters)
    else:
        body = lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)
    return _HEADER.pack(magic, version, len(header)) + header + body


def unpack_untrusted(
    data: bytes, magic: bytes, version: int, *, max_bytes: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and meta of a :func:`pack` blob; raises TwinStoreError on anything unexpected."""
    if len(data) < _HEADER.size:
        raise TwinStoreError("file too short")
    got_magic, got_version, header_len = _HEADER.unpack_from(data)
    if got_magic != magic:
        raise TwinStoreError(f"not a {magic.decode()} file")
    if got_version != version:
        raise TwinStoreError(f"format version {got_version}, this node reads version {version}")
    if header_len > MAX_HEADER_BYTES or _HEADER.size + header_len > len(data):
        raise TwinStoreError("header length out of range")
    try:
        header = json.loads(data[_HEADER.size : _HEADER.size + header_len])
        index = header["arrays"]
        meta = header["meta"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: deep nesting
        raise TwinStoreError(f"corrupt file: {type(exc).__name__}: {str(exc)[:200]}") from exc
    # Every array's declared size first, before anything is decompressed: the payload's size is what the header
    # declares, and no more than that is ever decompressed (a few KB of hostile file declaring small arrays over a
    # huge payload, or huge arrays, costs nothing past this check).
    entries: list[tuple[str, np.dtype[Any], tuple[int, ...], int]] = []
    declared = 0
    try:
        if not isinstance(index, list):
            raise TwinStoreError("corrupt header: arrays is not a list")
        for entry in index:
            dtype = np.dtype(str(entry["dtype"]))
            if dtype.name not in _ALLOWED_DTYPES:
                raise TwinStoreError(f"unsupported dtype {dtype}")
            shape = tuple(int(x) for x in entry["shape"])
            _check_shape(shape, max_bytes)
            n = math.prod(shape) * dtype.itemsize  # Python ints: np.prod(dtype=int64) wrapped
            declared += n
            if declared > max_bytes:
                raise TwinStoreError(f"payload over {max_bytes} bytes (declared by the header)")
            entries.append((str(entry["name"]), dtype, shape, n))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: a shape past int64 or Infinity
        raise TwinStoreError(f"corrupt header: {type(exc).__name__}: {str(exc)[:200]}") from exc
    try:
        decomp = lzma.LZMADecompressor(memlimit=MAX_DECODER_MEMORY_BYTES)
        raw = decomp.decompress(data[_HEADER.size + header_len :], max_length=declared + 1)
    except lzma.LZMAError as exc:
        raise TwinStoreError(f"corrupt file: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if len(raw) > declared:
        raise TwinStoreError("payload longer than its header says")
    if len(raw) < declared:
        raise TwinStoreError("payload shorter than its header says")
    # The whole stream, and nothing after it: a file cut inside the xz index or footer (its last ~24 bytes) still
    # yields every byte of the payload, and only the missing end says it was cut (a torn write, a bad copy).
    if not decomp.eof:
        raise TwinStoreError("corrupt file: the compressed payload is truncated")
    if decomp.unused_data:
        raise TwinStoreError("corrupt file: data after the compressed payload")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for name, dtype, shape, n in entries:
        arrays[name] = np.frombuffer(raw, dtype=dtype, count=n // dtype.itemsize, offset=offset).reshape(shape)
        offset += n
    if not isinstance(meta, dict):
        raise TwinStoreError("meta is not an object")
    return arrays, meta
