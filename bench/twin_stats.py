"""The twin's always-on statistics, this tree against a git ref, in one process (issue 15's gating lever).

What runs on every message whether or not the neural tier's W/b step does: the personal KN counts
(``PersonalKN.add_message``), the recency cache (``RecencyCache.add_message``) and the neural output-bias step
(``NeuralLM.adapt_bias_rows``). The reference implementations are read from ``--ref`` (``git show``) and run beside
this tree's on the same messages: one TwinLM predicts every token (its statistics are this tree's), then each
message's update is timed for both implementations, the order alternating per message (A first, then B first),
CPU time (``time.process_time``) per component. At the end both states are compared (they must be the same
counts; the bias vector to float32 rounding). One line per figure, µs per token, and the ratio.

    python bench/twin_stats.py --ref main --senders 0243,0aac
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as bench/twin.py: one BLAS thread per process

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import twin_data

from node.twin.model import TwinLM
from node.twin.neural import NeuralLM
from node.twin.personal import ctx_of
from node.twin.prior import GlobalPrior
from node.twin.tokens import message_tokens

REPO = Path(__file__).resolve().parent.parent


def load_ref(ref: str, path: str, name: str) -> types.ModuleType:
    """The module at ``path`` as it is at git ``ref``, loaded under ``name`` (its imports resolve to this tree)."""
    src = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    mod = types.ModuleType(name)
    mod.__file__ = f"{ref}:{path}"
    sys.modules[name] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)  # our own repository's history
    return mod


def _f3(m: Any) -> dict[tuple[int, int], dict[int, int]]:
    return {(k if isinstance(k, tuple) else ctx_of(k)): f for k, f in m.f3.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main", help="the git ref whose statistics are the baseline (A)")
    ap.add_argument("--senders", default="0243,0aac", help="comma list of UUID prefixes (tuning senders)")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the senders (each alternating A/B)")
    args = ap.parse_args(argv)
    old_personal = load_ref(args.ref, "node/twin/personal.py", "_ref_personal")
    old_cache = load_ref(args.ref, "node/twin/cache.py", "_ref_cache")
    old_neural = load_ref(args.ref, "node/twin/neural.py", "_ref_neural")
    prior = GlobalPrior.load_packaged()
    nn_data = (REPO / "node/twin/data/neural.bin").read_bytes()
    senders = twin_data.load_senders()
    prefixes = tuple(p for p in args.senders.split(",") if p)
    chosen = [s for u, s in sorted(senders.items()) if u.startswith(prefixes) and s.words >= twin_data.MIN_WORDS]
    names = ("personal", "cache", "bias")
    t: dict[str, list[float]] = {f"{k}_{ab}": [] for k in names for ab in "AB"}
    tokens = 0
    for rnd in range(args.rounds):
        acc = {k: 0.0 for k in t}
        ntok = 0
        for s in chosen:
            nn = NeuralLM(nn_data, prior.p1, prior.unk, prior.bos)
            lm = TwinLM(prior, neural=nn)
            assert lm.recency is not None
            a_pers = old_personal.PersonalKN(prior.bos)
            a_cache = old_cache.RecencyCache(prior.bos)
            a_nn = object.__new__(old_neural.NeuralLM)  # the old bias step on a copy of c
            a_nn.c, a_nn.vn, a_nn.unk = nn.c.copy(), nn.vn, nn.unk
            for i, msg in enumerate(s.messages):
                ids = lm.ids(message_tokens(msg), add=True)
                lm._rows_hint = len(ids)
                for j, tok in enumerate(ids):
                    lm.learn_weights(ids[:j], tok)
                lm._rows_hint = 0
                rows = lm._pblock[: lm._pn] if lm._pblock is not None else np.zeros((0, nn.vn), np.float32)
                targets = list(lm._bias_targets)
                ops: dict[str, tuple[Any, tuple[Any, ...]]] = {
                    "personal_A": (a_pers.add_message, (ids,)),
                    "personal_B": (lm.personal.add_message, (ids,)),
                    "cache_A": (a_cache.add_message, (ids,)),
                    "cache_B": (lm.recency.add_message, (ids,)),
                    "bias_A": (a_nn.adapt_bias_rows, (rows, targets, lm.bias_lr)),
                    "bias_B": (nn.adapt_bias_rows, (rows, targets, lm.bias_lr)),
                }
                order = "AB" if (i + rnd) % 2 == 0 else "BA"
                for k in names:
                    for ab in order:
                        fn, fargs = ops[f"{k}_{ab}"]
                        t0 = time.process_time()
                        fn(*fargs)
                        acc[f"{k}_{ab}"] += time.process_time() - t0
                lm.messages += 1
                lm._pn, lm._bias_targets, lm._fwd = 0, [], []
                ntok += len(ids)
            same = _f3(a_pers) == _f3(lm.personal) and a_pers.f2 == lm.personal.f2 and a_pers.coc == lm.personal.coc
            same = same and a_pers.f1 == lm.personal.f1 and a_pers.d == lm.personal.d
            rc = lm.recency
            same = same and a_cache.c1 == rc.c1 and a_cache.c2 == rc.c2 and a_cache.tot2 == rc.tot2
            assert same, f"sender {s.uuid[:8]}: the statistics differ"
            np.testing.assert_allclose(a_nn.c, nn.c, rtol=1e-5, atol=1e-6)
        for k, v in acc.items():
            t[k].append(v / ntok * 1e6)
        tokens = ntok
    load = os.getloadavg()[0]
    print(
        f"twin_stats.setup: {len(chosen)} senders, {tokens} tokens, {args.rounds} rounds; A = {args.ref}, B = this tree"
    )
    for k in (*names, "total"):
        if k == "total":
            a = [sum(t[f"{n}_A"][r] for n in names) for r in range(args.rounds)]
            b = [sum(t[f"{n}_B"][r] for n in names) for r in range(args.rounds)]
        else:
            a, b = t[f"{k}_A"], t[f"{k}_B"]
        pa = " / ".join(f"{x:.2f}" for x in a)
        pb = " / ".join(f"{x:.2f}" for x in b)
        ratio = " / ".join(f"{y / x:.2f}" for x, y in zip(a, b, strict=True))
        print(f"twin_stats.{k}: A {pa} µs per token, B {pb}; B/A {ratio} (load average {load:.1f})")
    print("twin_stats.same_state: yes (counts and cache equal, bias to float32 rounding)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
