"""The C allocator's knobs for the daemon's own process (glibc only; a no-op elsewhere, e.g. Android's bionic).

glibc gives every thread that allocates its own arena (up to 8 per core) and keeps what is freed in each: a node
whose model calls run in whichever trio worker thread is free, beside onnxruntime's and the tokenizer's threads,
ends up holding a high-water mark of working memory per arena. :func:`set_arena_max` caps the number of arenas
(``mallopt(M_ARENA_MAX)``, the run-time form of ``MALLOC_ARENA_MAX``; only arenas created afterwards are affected,
so the daemon calls it before any thread starts). :func:`trim` gives free pages back to the system
(``malloc_trim(0)``: in every arena, not only at the top of the main heap), after a burst of work such as a
``rag.add``. :func:`set_mmap_threshold` fixes the size from which a block is its own mapping
(``mallopt(M_MMAP_THRESHOLD)``, the run-time form of ``MALLOC_MMAP_THRESHOLD_``): glibc otherwise raises the
threshold to the size of every mapped block freed (up to 32 MiB), after which blocks of that size (numpy arrays,
onnxruntime's tensors) come from the heap and stay there when freed. All are measured in ``bench/ingest_peak.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import re
import sys
from typing import Any

log = logging.getLogger("village.node")

M_ARENA_MAX = -8  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MAX_MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's HEAP_MAX_SIZE / 2 on 64-bit: mallopt refuses more


@functools.cache
def _libc() -> Any:
    """glibc's handle, or None (not Linux, another C library, or its functions missing)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        gnu = libc.gnu_get_libc_version
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    gnu.restype = ctypes.c_char_p
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def available() -> bool:
    """True where the knobs act (glibc)."""
    return _libc() is not None


def _env_arena_cap() -> bool:
    """True when MALLOC_ARENA_MAX holds a cap glibc takes: a number >= 1 as strtoul reads it (base 0: leading
    digits, 0x hex, 0 octal); empty, 0 or no number is no cap (glibc ignores it)."""
    m = re.match(r"\s*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", os.environ.get("MALLOC_ARENA_MAX", ""))
    return m is not None and int(m.group(1), 0 if not re.fullmatch(r"0[0-7]+", m.group(1)) else 8) >= 1


def set_arena_max(n: int) -> bool:
    """Cap glibc's malloc arenas at ``n`` (0: leave glibc's default). True when applied. An operator's own
    ``MALLOC_ARENA_MAX`` (or ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``) in the environment wins: left as is."""
    libc = _libc()
    if n <= 0 or libc is None:
        return False
    if _env_arena_cap() or "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        log.info("malloc arenas: the environment's setting is kept (node.malloc_arena_max = %d not applied)", n)
        return False
    ok = bool(libc.mallopt(M_ARENA_MAX, n))
    if not ok:
        log.warning("mallopt(M_ARENA_MAX, %d) was refused; glibc's default arenas stay", n)
    return ok


def _env_mmap_threshold() -> bool:
    """True when MALLOC_MMAP_THRESHOLD_ holds a threshold glibc takes on every version: the whole value one number
    (decimal, 0x hex, 0 octal, after spaces or tabs) within mallopt's range 0..32 MiB. Anything else (empty, text,
    trailing garbage, negative, over 32 MiB) some glibc versions ignore: then the setting applies, so that a
    threshold is in force either way (never neither)."""
    m = re.fullmatch(r"[ \t]*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", os.environ.get("MALLOC_MMAP_THRESHOLD_", ""))
    if m is None:
        return False
    digits = m.group(1)
    value = int(digits, 16 if digits[:2] in ("0x", "0X") else 8 if digits.startswith("0") else 10)
    return value <= MAX_MMAP_THRESHOLD_BYTES


def set_mmap_threshold(n_bytes: int) -> bool:
    """Serve blocks of ``n_bytes`` or more from their own mappings, given back on free, and stop glibc from raising
    the threshold (0: leave glibc's dynamic threshold). True when applied. An operator's own
    ``MALLOC_MMAP_THRESHOLD_`` (or ``glibc.malloc.mmap_threshold`` in ``GLIBC_TUNABLES``) wins: left as is."""
    libc = _libc()
    if n_bytes <= 0 or libc is None:
        return False
    if _env_mmap_threshold() or "glibc.malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        log.info(
            "malloc mmap threshold: the environment's setting is kept (node.malloc_mmap_threshold_bytes = %d not"
            " applied)",
            n_bytes,
        )
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        log.warning(
            "malloc mmap threshold: MALLOC_MMAP_THRESHOLD_=%r is not a threshold every glibc takes (a number from 0"
            " to %d); node.malloc_mmap_threshold_bytes = %d applies",
            os.environ["MALLOC_MMAP_THRESHOLD_"][:40],
            MAX_MMAP_THRESHOLD_BYTES,
            n_bytes,
        )
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, min(n_bytes, MAX_MMAP_THRESHOLD_BYTES)))
    if not ok:
        log.warning(
            "mallopt(M_MMAP_THRESHOLD, %d) was refused (node.malloc_mmap_threshold_bytes); glibc's dynamic threshold"
            " stays",
            n_bytes,
        )
    return ok


def trim() -> bool:
    """Return free heap pages to the system (every arena). True when some memory was released. Blocking (a few
    milliseconds on a few hundred MB of heap): call it from a worker thread after a burst of work."""
    libc = _libc()
    return False if libc is None else bool(libc.malloc_trim(0))
