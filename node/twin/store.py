"""The twin's state on disk: one versioned file in the data dir, written 0600 and atomically, bounded in bytes.

``twin/state.bin`` holds the language model's learned part (personal trigram counts, the user's own words,
the mixture weights, the recency cache, the neural adaptation) and the next-action head; the shipped prior is not
copied. Format 2 (session 9) keeps them as two sections, each a :mod:`~node.twin.blob` of its own::

    "AVTS" | version 2 (u16) | light section bytes (u32) | LM section bytes (u32) | light section | LM section

the light section (magic ``AVTL``: the next-action head, :data:`LIGHT_ARRAYS`, and :data:`LIGHT_META`) and the
language model's (``AVTM``: everything else; 0 bytes when nothing was learned by it). A save made while the model is
not loaded copies the LM section's bytes as read (checked once at read), with no LZMA work on them. Format 1 (one
blob of both parts, up to session 8) is still read. Code of session 8 or older reading a format-2 file refuses it
(TwinStoreError "format version 2, this node reads version 1": the service moves it aside as ``state.bin.bad`` and
starts fresh; nothing crashes). Writing goes
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
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from node.twin import blob
from node.twin.actions import state_max_bytes
from node.twin.errors import TwinStoreError
from node.twin.model import N_BUCKETS, N_CACHE_BUCKETS, TwinLM
from node.twin.names import STATE_FILE as STATE_FILE  # re-exported: the file this module writes
from node.twin.names import forget_files
from node.twin.personal import MAX_COUNT, MAX_TRIGRAMS, PersonalKN, rarest_dropped

MAGIC = b"AVTS"
FORMAT_VERSION = 2  # two sections (see above)
V1_FORMAT_VERSION = 1  # one blob of both parts (sessions 1-8): still read
LIGHT_MAGIC, LM_MAGIC = b"AVTL", b"AVTM"  # the sections' blobs
SECTION_VERSION = 1
_FRAME = struct.Struct(">4sHII")  # magic, version, light section bytes, LM section bytes (starts as a v1 blob does)
FRAME_BYTES = _FRAME.size
# The state file's parts that are not the language model's: the next-action head (extra arrays, "x_" in the file)
# and the header's event count, recent topics and contacts. Everything else in the file is the language model's.
LIGHT_ARRAYS = ("act_names", "act_w", "act_b", "act_events")
LIGHT_META = ("events", "topics", "contacts")
# The light section's payload, at most: the next-action head's arrays at their largest (293 KiB); its header values
# (topics, contacts) are in the blob's header, bounded by blob.MAX_HEADER_BYTES. Its own bound, not the file's raw
# bound (160 MB at the default 10 MB): a light save re-packs this section every time, so a planted 150 MB action
# name cost each save 11-13 s of CPU and ~790 MiB, forever (review of twinsave9).
LIGHT_SECTION_MAX_RAW_BYTES = state_max_bytes()
LM_EMPTY = "lm_empty"  # format 1's header flag (format 2: an empty LM section): nothing learned by the model
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
    return pack_state(arrays, m)


def is_light(name: str) -> bool:
    """Whether an array of the state (its name in the file) belongs to the light section."""
    return name.startswith("x_") and name[2:] in LIGHT_ARRAYS


def pack_light(arrays: dict[str, np.ndarray[Any, Any]], meta: dict[str, Any]) -> bytes:
    """The light section (the next-action head, events, topics, contacts: ~300 KiB unpacked at most)."""
    return blob.pack(LIGHT_MAGIC, SECTION_VERSION, arrays, meta, compact=True)


def pack_lm(arrays: dict[str, np.ndarray[Any, Any]], meta: dict[str, Any]) -> bytes:
    """The language model's section."""
    return blob.pack(LM_MAGIC, SECTION_VERSION, arrays, meta, compact=True)


def frame(light: bytes, lm: bytes) -> bytes:
    """A format-2 state file of its two sections (``lm`` empty: nothing learned by the language model)."""
    return _FRAME.pack(MAGIC, FORMAT_VERSION, len(light), len(lm)) + light + lm


def pack_state(arrays: dict[str, np.ndarray[Any, Any]], meta: dict[str, Any]) -> bytes:
    """A format-2 state file of every array and header value, split into the two sections by name; ``meta``
    with :data:`LM_EMPTY` true: no LM section (it must then hold only light arrays and values)."""
    light = {k: v for k, v in arrays.items() if is_light(k)}
    lm = {k: v for k, v in arrays.items() if not is_light(k)}
    light_meta = {k: v for k, v in meta.items() if k in LIGHT_META}
    lm_meta = {k: v for k, v in meta.items() if k not in LIGHT_META and k != LM_EMPTY}
    if meta.get(LM_EMPTY) is True:
        if lm or lm_meta:
            raise TwinStoreError("a state without its language model holds language-model arrays or values")
        return frame(pack_light(light, light_meta), b"")
    return frame(pack_light(light, light_meta), pack_lm(lm, lm_meta))


@dataclass(frozen=True, slots=True)
class StateParts:
    """A state file read: its light part, and its language model's (None: nothing learned by it) as arrays and
    header, with the LM section's bytes as read (``lm_section``; None for a format-1 file, which has none)."""

    light_arrays: dict[str, np.ndarray[Any, Any]]
    light_meta: dict[str, Any]
    lm_arrays: dict[str, np.ndarray[Any, Any]] | None
    lm_meta: dict[str, Any] | None
    lm_section: bytes | None


def unpack_parts_untrusted(data: bytes, max_raw_bytes: int) -> StateParts:
    """Both parts of a state file of format 2 or 1, every section's payload bounded by ``max_raw_bytes`` (in all;
    a format-2 light section also by :data:`LIGHT_SECTION_MAX_RAW_BYTES`);
    raises TwinStoreError on anything unexpected (a section's length that is not the file's, an array of one part
    in the other's section, another version)."""
    if len(data) >= _FRAME.size and data[:4] == MAGIC and _FRAME.unpack_from(data)[1] == V1_FORMAT_VERSION:
        arrays, meta = blob.unpack_untrusted(data, MAGIC, V1_FORMAT_VERSION, max_bytes=max_raw_bytes)
        light = {k: v for k, v in arrays.items() if is_light(k)}
        light_meta = {k: v for k, v in meta.items() if k in LIGHT_META}
        if meta.get(LM_EMPTY) is True:
            return StateParts(light, light_meta, None, None, None)
        lm = {k: v for k, v in arrays.items() if not is_light(k)}
        return StateParts(light, light_meta, lm, {k: v for k, v in meta.items() if k not in LIGHT_META}, None)
    if len(data) < _FRAME.size:
        raise TwinStoreError("file too short")
    magic, version, light_len, lm_len = _FRAME.unpack_from(data)
    if magic != MAGIC:
        raise TwinStoreError(f"not a {MAGIC.decode()} file")
    if version != FORMAT_VERSION:
        raise TwinStoreError(f"format version {version}, this node reads versions 1 and {FORMAT_VERSION}")
    if _FRAME.size + light_len + lm_len != len(data):
        raise TwinStoreError("corrupt file: its sections' lengths are not the file's")
    light_section = data[_FRAME.size : _FRAME.size + light_len]
    light_bound = min(max_raw_bytes, LIGHT_SECTION_MAX_RAW_BYTES)
    light, light_meta = blob.unpack_untrusted(light_section, LIGHT_MAGIC, SECTION_VERSION, max_bytes=light_bound)
    if any(not is_light(k) for k in light) or any(k not in LIGHT_META for k in light_meta):
        raise TwinStoreError("corrupt file: the light section holds another part's arrays or values")
    if lm_len == 0:
        return StateParts(light, light_meta, None, None, None)
    lm_section = data[_FRAME.size + light_len :]
    left = max_raw_bytes - sum(a.nbytes for a in light.values())
    lm, lm_meta = blob.unpack_untrusted(lm_section, LM_MAGIC, SECTION_VERSION, max_bytes=left)
    return StateParts(light, light_meta, lm, lm_meta, lm_section)


def unpack_state(data: bytes, max_bytes: int) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, Any]]:
    """Every array and header value of a state file (format 2 or 1) as one blob would hold them (the format-1
    view: :data:`LM_EMPTY` set when there is no language-model part); payloads bounded by ``max_bytes``."""
    parts = unpack_parts_untrusted(data, max_bytes)
    arrays, meta = dict(parts.light_arrays), dict(parts.light_meta)
    if parts.lm_arrays is None or parts.lm_meta is None:
        meta[LM_EMPTY] = True
    else:
        arrays.update(parts.lm_arrays)
        meta.update(parts.lm_meta)
    return arrays, meta


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
    """Load a state written by :func:`encode` (a whole file, format 2 or 1, or its LM section alone) into a fresh
    ``lm``; returns the extra arrays and the meta.

    Everything is checked (types, ranges, sizes): any unusable file raises TwinStoreError and nothing else, and
    the work is linear in the file's n-grams (at most ``max_bytes`` of them), whatever their counts."""
    if data[:4] == LM_MAGIC:
        arrays, meta = blob.unpack_untrusted(data, LM_MAGIC, SECTION_VERSION, max_bytes=raw_bound(max_bytes))
    else:
        arrays, meta = unpack_state(data, raw_bound(max_bytes))
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
