"""Where the twin's top-3 misses come from: is the true token absent from the candidate set, or ranked too low?

For every test token (the same split and online learning as bench/twin.py's ``twin`` configuration) it
records whether the token is among ``TwinLM.candidates`` (the union of the tiers' proposals that suggestions
rank), and where it would rank if it were added to them: the "oracle" top-1 / top-3 is the accuracy with a
candidate set that always holds the answer, so ``oracle - actual`` is all that better candidate generation can
gain. Also by kind of token: ``</s>`` (end of message), words, punctuation, and a message's first token.

Tuning senders only (UUIDs starting with 0-b that are not in the prior, i.e. bench/twin_data.py's dev
senders): this is a tuning tool, never run it on the report (c-f) senders.

    python bench/twin_oracle.py --senders 0243,0aac,0b7e,1084,150c,1b0a,1bf2,2b15
"""

from __future__ import annotations

# ruff: noqa: E402  (the BLAS thread count must be set before numpy is imported)
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import multiprocessing
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import twin as bench_twin
import twin_data

from node.twin import rnn
from node.twin.gate import SurpriseGate
from node.twin.model import TwinLM
from node.twin.prior import GlobalPrior
from node.twin.tokens import is_word, message_tokens


def run(sender: twin_data.Sender) -> Counter[str]:
    prior = GlobalPrior.load_packaged()
    nn_data = bench_twin._packaged_neural()
    nn = rnn.load_neural(nn_data, prior.p1, prior.unk, prior.bos) if nn_data else None
    lm = TwinLM(prior, neural=nn)
    cfg = bench_twin.Config("twin", neural=True, gate_fraction=0.8)
    gate = SurpriseGate(0.8)
    r = bench_twin.Result()
    train, test = sender.split()
    for m in train:
        bench_twin._learn(lm, m, gate, cfg, r)
    st: Counter[str] = Counter()
    for m in test:
        ids = lm.ids(message_tokens(m))
        for i, t in enumerate(ids):
            h = ids[:i]
            cand = lm.candidates(h)
            inside = bool((cand == t).any())
            cand = cand if inside else np.append(cand, t)
            p = lm._mix(h, cand).p
            rank = int(np.flatnonzero(cand[np.argsort(-p, kind="stable")] == t)[0])
            word = lm.token_str(t)
            kind = "eos" if t == prior.eos else "word" if is_word(word) else "punct"
            for k in ("all", kind, *(["first"] if i == 0 else [])):
                st[f"{k}.n"] += 1
                st[f"{k}.in_cand"] += inside
                st[f"{k}.top1"] += inside and rank == 0
                st[f"{k}.top3"] += inside and rank < 3
                st[f"{k}.oracle1"] += rank == 0
                st[f"{k}.oracle3"] += rank < 3
            st["cand_size"] += len(cand) - (not inside)
        bench_twin._learn(lm, m, gate, cfg, r)
    return st


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--senders", required=True, help="dev | comma list of UUID prefixes (tuning senders only)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    senders = twin_data.load_senders()
    if args.senders == "dev":
        chosen = twin_data.dev_senders(senders)
    else:
        prefixes = tuple(p.strip() for p in args.senders.split(",") if p.strip())
        chosen = [s for u, s in sorted(senders.items()) if u.startswith(prefixes) and twin_data.is_dev(s)]
    if not chosen:
        ap.error("no tuning sender matches (only dev senders: UUID 0-2, >= 2,000 words)")
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        tot: Counter[str] = sum(pool.map(run, chosen), Counter())
    n = tot["all.n"]
    print(f"twin_oracle.setup: {len(chosen)} senders, {n} test tokens, {tot['cand_size'] / n:.1f} candidates a token")
    for k in ("all", "eos", "word", "punct", "first"):
        m = tot[f"{k}.n"]
        if not m:
            continue
        print(
            f"twin_oracle.{k}: {100 * m / n:.1f} % of tokens; in the candidates {100 * tot[f'{k}.in_cand'] / m:.1f} %; "
            f"top-1 {100 * tot[f'{k}.top1'] / m:.1f} % (oracle {100 * tot[f'{k}.oracle1'] / m:.1f} %), "
            f"top-3 {100 * tot[f'{k}.top3'] / m:.1f} % (oracle {100 * tot[f'{k}.oracle3'] / m:.1f} %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
