"""The twin's state on disk: one versioned file in the data dir, written 0600 and atomically, bounded in bytes.

``twin/state.bin`` holds the language model's learned part (personal trigram counts, the user's own words,
the mixture weights, the recency cache) and the next-action head; the shipped prior is not copied. Writing goes
to a temporary file (0600 from creation) then ``os.replace``. A state over ``max_bytes`` is shrunk before
writing by dropping the recency cache, then the rarest personal trigrams (exactly the commonest that fit are kept:
:func:`encode_bounded`), so the file never exceeds its bound. :func:`forget` deletes every file the twin wrote.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from node.twin import blob
from node.twin.errors import TwinStoreError
from node.twin.model import N_BUCKETS, N_CACHE_BUCKETS, TwinLM
from node.twin.names import STATE_FILE as STATE_FILE  # re-exported: the file this module writes
from node.twin.names import forget_files
from node.twin.personal import MAX_COUNT, MAX_TRIGRAMS, PersonalKN, rarest_dropped

MAGIC = b"AVTS"
FORMAT_VERSION = 1
MAX_RAW_FACTOR = 16  # a state decompresses to at most this many times its bound (real ones x2.5-x6.2: bench/README)
MIN_RAW_BOUND_BYTES = (
    32 << 20
)  # ... or to this much, whatever the bound (a small bound's rare well-compressing state is kept)
forget = forget_files  # re-exported: deleting the twin's files lives in the light module (no numpy)
MAX_META_INT = 2**62  # a counter in the header (events, messages, ...) above this is not a real one


def prior_id(lm: TwinLM) -> str:
    return hashlib.sha256("\n".join(lm.prior.vocab).encode()).hexdigest()[:16]


def encode(
    lm: TwinLM,
    extra: dict[str, np.ndarray[Any, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    *,
    keep: np.ndarray[Any, Any] | None = None,
    trigrams: dict[str, np.ndarray[Any, Any]] | None = None,
) -> bytes:
    """The state file's bytes. ``keep`` (a mask over the personal trigrams as :meth:`PersonalKN.to_arrays` lists
    them, ``trigrams`` when the caller already has them) writes only those, and no recency cache: the shrunk
    state :func:`encode_bounded` writes."""
    arrays = dict(trigrams) if trigrams is not None else lm.personal.to_arrays()
    dropped = 0
    if keep is not None:
        dropped = int(len(keep) - np.count_nonzero(keep))
        arrays = {"tri": arrays["tri"][keep], "tri_counts": arrays["tri_counts"][keep]}
    arrays["words"] = np.frombuffer("\n".join(lm.words).encode("utf-8"), dtype=np.uint8)
    arrays["lam"] = np.asarray(lm.lam, dtype=np.float64)
    arrays["lam_n"] = np.asarray(lm.lam_n, dtype=np.int64)
    if lm.recency is not None:
        arrays["kappa"] = np.asarray(lm.kappa, dtype=np.float64)
        arrays["kappa_n"] = np.asarray(lm.kappa_n, dtype=np.int64)
        if keep is None:  # a state over its bound drops the cache first (it refills within a few messages)
            arrays.update(lm.recency.to_arrays())
    for name, arr in (extra or {}).items():
        arrays[f"x_{name}"] = arr
    m = {"prior": prior_id(lm), "messages": lm.messages, "trigrams_dropped": dropped, **(meta or {})}
    return blob.pack(MAGIC, FORMAT_VERSION, arrays, m, compact=True)


def encode_bounded(
    lm: TwinLM, max_bytes: int, extra: dict[str, np.ndarray[Any, Any]] | None = None, meta: dict[str, Any] | None = None
) -> bytes:
    """:func:`encode`, shrunk until it fits in ``max_bytes``: first without the recency cache, then keeping only
    the ``k`` commonest personal trigrams for a ``k`` that fits — exactly the ``k`` most frequent, ties kept for
    the later listed (contexts seen last), as the in-memory bound keeps them
    (:func:`~node.twin.personal.rarest_dropped`). ``k`` is searched on the encoded size, which grows with ``k``
    only roughly (compression: a slightly larger ``k`` may now and then fit too), so the ``k`` found is the
    largest that fits up to such a wobble, never over the bound: a search step guesses ``k`` by interpolating the
    sizes seen, then halves the bracket (at most ~2 log2(trigrams) encodes). Raises TwinStoreError when not even
    the state without any trigram fits."""
    data = encode(lm, extra, meta)
    if len(data) <= max_bytes:
        return data
    tri = lm.personal.to_arrays()
    counts = tri["tri_counts"]
    n = len(counts)

    def attempt(k: int) -> bytes:
        return encode(lm, extra, meta, keep=rarest_dropped(counts, k), trigrams=tri)

    best = attempt(n)
    if len(best) <= max_bytes:
        return best
    lo, hi = 0, n  # lo fits (checked below), hi does not
    lo_size, hi_size = None, len(best)
    best = attempt(0)
    if len(best) > max_bytes:
        raise TwinStoreError(f"twin state does not fit in {max_bytes} bytes (twin.max_disk_bytes)")
    lo_size = len(best)
    halve = False
    while hi - lo > 1:
        if halve or hi_size <= lo_size:
            k = (lo + hi) // 2
        else:  # where the sizes seen say the bound falls, kept strictly inside the bracket
            k = lo + int((hi - lo) * (max_bytes - lo_size) / (hi_size - lo_size))
            k = min(hi - 1, max(lo + 1, k))
        halve = not halve  # interpolation and bisection alternate: a bad guess costs one step
        data = attempt(k)
        if len(data) <= max_bytes:
            lo, lo_size, best = k, len(data), data
        else:
            hi, hi_size = k, len(data)
    return best


def meta_int(meta: dict[str, Any], key: str, default: int = 0) -> int:
    """An integer counter of the header, from 0 to MAX_META_INT; raises TwinStoreError otherwise."""
    v = meta.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_META_INT:
        raise TwinStoreError(f"twin state header: {key} is not a counter")
    return v


def meta_float(meta: dict[str, Any], key: str, default: float, *, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number of the header within ``[lo, hi]``; raises TwinStoreError (naming the key) otherwise."""
    v = meta.get(key, default)
    try:
        finite = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
    except OverflowError:  # an int past a float's range
        finite = False
    if not finite:
        raise TwinStoreError(f"twin state header: {key} is not a finite number")
    if not lo <= v <= hi:
        raise TwinStoreError(f"twin state header: {key} = {v} is outside [{lo}, {hi}]")
    return float(v)


def int_array(arrays: dict[str, np.ndarray[Any, Any]], name: str) -> np.ndarray[Any, Any]:
    a = arrays[name]
    if not np.issubdtype(a.dtype, np.integer):
        raise TwinStoreError(f"twin state: {name} is not an integer array")
    return a


def finite_array(arrays: dict[str, np.ndarray[Any, Any]], name: str) -> np.ndarray[Any, Any]:
    a = arrays[name]
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise TwinStoreError(f"twin state: {name} is not an array of finite numbers")
    return a


def raw_bound(max_bytes: int) -> int:
    """The most a state file of at most ``max_bytes`` may decompress to: MAX_RAW_FACTOR times its bound, and never
    less than MIN_RAW_BOUND_BYTES (under a small ``twin.max_disk_bytes`` a state that compresses unusually well,
    e.g. mostly zero arrays, must still load; a hostile file costs at most this much memory either way)."""
    return max(max_bytes * MAX_RAW_FACTOR, MIN_RAW_BOUND_BYTES)


def decode_into(lm: TwinLM, data: bytes, max_bytes: int) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, Any]]:
    """Load a state written by :func:`encode` into a fresh ``lm``; returns the extra arrays and the meta.

    Everything is checked (types, ranges, sizes): any unusable file raises TwinStoreError and nothing else, and
    the work is linear in the file's n-grams (at most ``max_bytes`` of them), whatever their counts."""
    arrays, meta = blob.unpack_untrusted(data, MAGIC, FORMAT_VERSION, max_bytes=raw_bound(max_bytes))
    if meta.get("prior") != prior_id(lm):
        raise TwinStoreError("twin state was learned over a different prior; run `village twin forget`")
    try:
        # Sizes are checked before anything becomes Python objects: one newline is a list entry, one number a
        # float object (~30 bytes for each byte or 8 bytes of a payload that is itself up to 16x the bound).
        raw_words = bytes(arrays["words"])
        if raw_words.count(b"\n") >= lm.max_personal_words:
            raise TwinStoreError("twin state out of bounds (more words than twin.max_personal_words)")
        lam_a, lam_n_a = finite_array(arrays, "lam"), int_array(arrays, "lam_n")
        if lam_a.shape != (N_BUCKETS,) or lam_n_a.shape != (N_BUCKETS,):
            raise TwinStoreError("twin state out of bounds (mixture weights)")
        words = raw_words.decode("utf-8").split("\n") if raw_words else []
        tri = int_array(arrays, "tri").reshape(-1, 3)
        counts = int_array(arrays, "tri_counts").reshape(-1)
        lam = lam_a.tolist()
        lam_n = lam_n_a.tolist()
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise TwinStoreError(f"corrupt twin state: {exc}") from exc
    if len(words) > lm.max_personal_words or len(lam) != N_BUCKETS or len(lam_n) != N_BUCKETS:
        raise TwinStoreError("twin state out of bounds")
    if len(set(words)) != len(words) or len(tri) > max_bytes:
        raise TwinStoreError("twin state out of bounds (a word listed twice, or more n-grams than bytes)")
    top = lm.prior.v + len(words)
    if len(tri) and (int(tri.min()) < 0 or int(tri.max()) >= top or len(counts) != len(tri) or int(counts.min()) < 1):
        raise TwinStoreError("twin state has ids out of range")
    if len(counts) and int(counts.max()) > MAX_COUNT:  # the writer clamps to this; larger would overflow later
        raise TwinStoreError(f"twin state has a count above {MAX_COUNT}")
    messages = meta_int(meta, "messages")
    lm.words = words
    lm.word_index = {w: lm.prior.v + i for i, w in enumerate(words)}
    if len(tri) > MAX_TRIGRAMS:  # more than memory keeps (a file written under a larger bound): the rarest go
        keep = rarest_dropped(counts, MAX_TRIGRAMS)
        tri, counts = tri[keep], counts[keep]
    lm.personal = PersonalKN.from_arrays(lm.prior.bos, tri, counts)
    lm.lam = [min(0.98, max(0.02, float(x))) for x in lam]
    lm.lam_n = [min(MAX_META_INT, max(0, int(x))) for x in lam_n]
    lm.messages = messages
    if lm.recency is not None and "kappa" in arrays:
        kappa_a, kappa_n_a = finite_array(arrays, "kappa"), int_array(arrays, "kappa_n")
        if kappa_a.size != N_CACHE_BUCKETS or kappa_n_a.size != N_CACHE_BUCKETS:
            raise TwinStoreError("twin state: recency weights out of bounds")
        kappa = kappa_a.reshape(-1).tolist()
        kappa_n = kappa_n_a.reshape(-1).tolist()
        lm.kappa = [min(0.9, max(0.01, float(x))) for x in kappa]
        lm.kappa_n = [min(MAX_META_INT, max(0, int(x))) for x in kappa_n]
        lm.recency.load_arrays(arrays, top)
    extra = {k[2:]: v for k, v in arrays.items() if k.startswith("x_")}
    return extra, meta


def read_state(path: Path, max_bytes: int) -> bytes | None:
    """The state file's bytes, or None when there is none. Refuses (TwinStoreError) a symlink, anything but a
    regular file (a FIFO would block) and a file over ``max_bytes``; OSError when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TwinStoreError("the state file is a symlink") from exc
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TwinStoreError("the state file is not a regular file")
        if st.st_size > max_bytes:
            raise TwinStoreError(f"{st.st_size} bytes, over its bound of {max_bytes} (twin.max_disk_bytes)")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TwinStoreError(f"over its bound of {max_bytes} bytes (twin.max_disk_bytes)")
    return data


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (the directory is made 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
