"""How far a twin state decompresses: the payload over the file's size, for states learned from real senders
(chitchat-dataset report senders, all their messages; then all of them into one state), with and without the
neural tier. It sets store.MAX_RAW_FACTOR's margin (review of ingest4). One summary line per state.

    PYTHONPATH=$PWD python bench/twin_state_ratio.py [--senders 4]
"""

from __future__ import annotations

import argparse
import lzma

import twin_data

from node.twin import rnn
from node.twin.engine import Event, TwinEngine
from node.twin.prior import GlobalPrior

MAX_BYTES = 10_000_000  # twin.max_disk_bytes' default


def ratio(engine: TwinEngine) -> tuple[int, int, float]:
    data = engine.encode(MAX_BYTES)
    header_len = int.from_bytes(data[6:10], "big")
    raw = lzma.decompress(data[10 + header_len :])
    return len(data), len(raw), len(raw) / len(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--senders", type=int, default=4)
    a = ap.parse_args(argv)
    prior = GlobalPrior.load_packaged()
    senders = sorted((s for s in twin_data.load_senders().values() if twin_data.is_report(s)), key=lambda s: -s.words)
    chosen = senders[: a.senders]
    for neural in (False, True):
        everyone = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos) if neural else None)
        for s in chosen if not neural else chosen[:1]:  # the neural tier learns slowly: one sender
            eng = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos) if neural else None)
            for m in s.messages:
                for e in (eng, everyone) if not neural else (eng,):
                    e.observe(Event("message", m, "messages.send", 0))
            f, r, q = ratio(eng)
            print(f"neural={neural} sender {s.uuid[:8]} ({len(s.messages)} msgs): file {f} B, payload {r} B, x{q:.2f}")
        if not neural:
            f, r, q = ratio(everyone)
            print(f"neural=False all {len(chosen)} senders in one state: file {f} B, payload {r} B, x{q:.2f}")
    empty = TwinEngine(prior)
    f, r, q = ratio(empty)
    print(f"empty state: file {f} B, payload {r} B, x{q:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
