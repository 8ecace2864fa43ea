"""CPU of a light save (the twin's language model not loaded) before and after state format 2, in one run.

    PYTHONPATH=$PWD python bench/twin_light_save.py [PLANTED_V1_OUT]

Two states: a legitimate one (200 messages learned, the neural adaptation included) and a planted one within every
bound a light save checks (its words: ~8 MiB of random letters, which LZMA packs only ~1.6x). "before" is what a
light save did up to session 8 (unpack the whole format-1 file, repack it: blob.unpack_untrusted + blob.pack, as
engine._encode_light did); "after" is TwinEngine.encode without the model (the LM section's bytes copied). Median of
3 runs, process CPU. PLANTED_V1_OUT: the planted state in format 1 is written there (for bench/twin_planted_save.py
run on both trees)."""

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from node.twin import blob, rnn, store
from node.twin.engine import Event, TwinEngine
from node.twin.prior import GlobalPrior

MAX = 10_000_000  # twin.max_disk_bytes, the default
WORDS = [
    "vorpal",
    "lounge",
    "meet",
    "pump",
    "guide",
    "nine",
    "see",
    "you",
    "at",
    "the",
    "opens",
    "garden",
    "river",
    "tram",
    "ticket",
]


def cpu(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def legit() -> bytes:
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos), gate_fraction=1.0)
    rng = np.random.default_rng(1)
    for i in range(200):
        text = " ".join(rng.choice(WORDS, 12)) + f" zorb{i}"
        eng.observe(Event("message", text, "messages.send", 0))
        eng.observe(Event("command", "", "node.status", 0))
    return eng.encode(MAX)


def planted(state: bytes) -> bytes:
    arrays, meta = store.unpack_state(state, 1 << 30)
    rng = np.random.default_rng(2)
    letters = rng.integers(ord("a"), ord("z") + 1, (8 << 20) - 400_000, dtype=np.uint8)  # (the rest: the real arrays)
    letters[::200] = ord("\n")  # ~40,000 words: under twin.max_personal_words
    return store.pack_state({**arrays, "words": letters}, meta)


def measure(name: str, v2: bytes) -> None:
    arrays, meta = store.unpack_state(v2, 1 << 30)
    v1 = blob.pack(store.MAGIC, store.V1_FORMAT_VERSION, arrays, meta, compact=True)

    def before() -> None:
        a, m = blob.unpack_untrusted(v1, store.MAGIC, store.V1_FORMAT_VERSION, max_bytes=store.raw_bound(MAX))
        blob.pack(store.MAGIC, store.V1_FORMAT_VERSION, dict(a), m, compact=True)

    eng = TwinEngine(None)
    eng.decode(v2, MAX)
    assert eng.lm_needed_at_save is None, eng.lm_needed_at_save  # carried by light saves, then and now
    eng.observe(Event("command", "", "rag.stats", 0))
    b, a = cpu(before), cpu(lambda: eng.encode(MAX))
    raw = sum(x.nbytes for x in arrays.values())
    print(
        f"{name}: file {len(v2):,} B (unpacked {raw:,} B); light save before {b * 1000:.1f} ms CPU, after "
        f"{a * 1000:.2f} ms CPU (x{b / a:.0f} less)"
    )


if __name__ == "__main__":
    state = legit()
    measure("legit", state)
    bad = planted(state)
    measure("planted", bad)
    if len(sys.argv) > 1:
        arrays, meta = store.unpack_state(bad, 1 << 30)
        Path(sys.argv[1]).write_bytes(blob.pack(store.MAGIC, store.V1_FORMAT_VERSION, arrays, meta, compact=True))
