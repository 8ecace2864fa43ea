#!/usr/bin/env python3
"""Build node/twin/data/prior.bin, the twin's shipped global prior, reproducibly.

Corpus: chitchat-dataset 0.9.0 (PyPI, MIT; `pip install 'aivillage[twin]'`), only senders whose UUID starts
with 0-b, minus the tuning (dev) senders and minus every conversation a report sender takes part in (the other
side of those conversations; 9.6 % of the messages); never a sender starting with c-f (see bench/twin_data.py). The
output is deterministic for a given corpus and settings (sorted inputs, fixed LZMA preset, no timestamps).

    PYTHONPATH=. python scripts/build_twin_prior.py [--order 4] [--min-count 1 1 2 2] [--out PATH]

Defaults: a 4-gram model keeping the trigrams and 4-grams seen at least twice (the shipped 1.4 MB prior).
`--min-count 1 1 1 2` (every trigram kept, 3.1 MB) gained 0.1 point top-1/top-3 on the report senders for +17 MB
of RAM once loaded and +52 MB while loading; not shipped (bench/README.md, "session 5 (twinacc)").
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import twin_data  # noqa: E402

from node.twin import prior  # noqa: E402
from node.twin.tokens import message_tokens  # noqa: E402

DEFAULT_OUT = ROOT / "node" / "twin" / "data" / prior.PRIOR_FILE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--order", type=int, default=4)
    ap.add_argument("--min-count", type=int, nargs="+", default=[1, 1, 2, 2], help="per order 1..N")
    ap.add_argument("--min-word-count", type=int, default=2)
    ap.add_argument("--max-vocab", type=int, default=30_000)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if len(args.min_count) != args.order:
        ap.error("--min-count needs one value per order")
    t0 = time.perf_counter()
    senders = twin_data.load_senders()
    chosen = twin_data.prior_senders(senders)
    assert not any(s.uuid[0] in "cdef" for s in chosen)
    msgs = [message_tokens(m) for s in chosen for m in s.messages]
    settings = prior.BuildSettings(
        order=args.order,
        min_word_count=args.min_word_count,
        max_vocab=args.max_vocab,
        min_count=tuple(args.min_count),
    )
    data = prior.build(msgs, settings)
    args.out.write_bytes(data)
    tokens = sum(len(m) for m in msgs)
    print(
        f"prior: {len(chosen)} senders, {len(msgs)} messages, {tokens} tokens -> {args.out} "
        f"{len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()[:16]} ({time.perf_counter() - t0:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
