"""The twin's language model on chitchat-dataset: personal KN + shipped prior, against the prior alone.

Split (bench/twin_data.py): per sender, messages in time order, first 80 % learned, last 20 % evaluated
online (each test message is predicted token by token, then learned, as on a device). ``--senders report``
(default) = the c-f senders with >= 2,000 words, never used for the prior or for tuning; ``dev`` = the 0-2
senders with >= 2,000 words used for tuning (also left out of the prior); or a comma list of UUID prefixes.
Tokenization: node/twin/tokens.py (lowercased words, punctuation runs, ``</s>`` ends every message and is a
target like any word).

Figures (one line each; the baseline is the prior alone, in the same run):
* top-1 / top-3 next-token accuracy, pooled over all test tokens and per user; mean surprisal (bits/token);
* keystroke savings (first ``--ks-words`` test words per user; 3 suggestions shown; a word costs the letters
  typed before it shows up + 1 tap, or all its letters + space);
* model size on disk (the user's state file) and the shipped prior's size;
* suggestion latency p50 / p99 (``TwinLM.suggest`` on partial test messages, in-process);
* learning cost per message (predict every token + learn it);
* the gated-vs-always-update curve (with the neural tier): counts, recency cache and output bias always; the
  neural tier's W/b step on the tokens the gate passes. Baseline ``neural_always``: the session-3 update, one
  SGD step per token with its own forward pass; ``neural_gate_F`` gates that update; ``batch_always`` /
  ``batch_gate_F`` use session 4's update (one sparse mini-batch per message from the predictions' forward
  passes) with session 4's token gate. Gain = bits saved over no learning at all (``static``), compute = CPU
  time (``time.process_time``) in the updates.
* ``--msg-gate SCORE:F:REPLAY[:WEIGHT[:STEP]]`` adds ``msg_SCORE_F_rREPLAY``: the shipped message gate
  (``node.twin.gate.MessageGate``) with that score at a budget of ``F`` of the tokens, the W/b step once
  ``REPLAY`` gated tokens wait (1: per message, as shipped; what waits at a sender's end is learned and timed
  too, and ``neural tokens`` are tokens learned); ``random`` is the control (messages subsampled at the same
  budget; ``--random-seeds`` draws, 3 by default, with their spread on a ``twin.curve.spread`` line) and
  ``random:1:1:0`` is "output bias only" (the W/b step never runs). ``twin.curve.*``
  lines read every configuration against ``--baseline`` (default ``batch_always``, the same step on every
  message). ``...:WARMUP`` (6th field): the gate passes every message until it has seen that many tokens;
  ``...:TOKENS`` (7th, ``pos``/``neg``): a passed message teaches the W/b step only its tokens where the neural
  tier beat the mixture, or only the others (``--gate-tokens`` does it for ``twin``). ``...:THRESHOLD`` (8th):
  the gate's starting threshold (with ``STEP`` 0 a fixed one: e.g. ``edgec:0.15:1:1:0:0:pos:0.15``). With the bias-only
  configuration run, ``twin.curve.adapter_gain`` lines give each sender's share of the W/b step's gain.

Tuning switches (measured on dev senders only): ``--recency-decay``, ``--no-recency`` (no recency cache tier),
``--no-bias-always`` (the neural output bias behind the gate too), ``--gate-neural`` (session 4's token gate on
the neural tier's own surprisal instead of the mixture's; refused with a message gate, whose edge it would zero),
``--gate-variant F:START:STEP`` (an extra gated configuration with its
own starting threshold and adaptation step); ``--job-lines`` prints every (configuration, sender) result as it
ends. One BLAS thread per worker (set before numpy loads).

    python bench/twin.py [--senders report|dev|PREFIXES] [--limit N] [--fractions 0.1 0.2 0.3 0.5]
"""

from __future__ import annotations

# ruff: noqa: E402  (the BLAS thread count must be set before numpy is imported)
import os

# One BLAS thread per worker: the neural tier's matrices are small enough that OpenBLAS's helper threads only
# wait for each other, and on a loaded machine that wait made every step ~20x slower (measured: a 60-message
# user took 10.6 CPU-s with the default threads, 0.49 CPU-s with one).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import dataclasses
import json
import multiprocessing
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import twin_data

from node.twin import neural as neural_mod
from node.twin import rnn, store
from node.twin.gate import SHIPPED_FIXED_COST_TOKENS, SHIPPED_SCORE, MessageGate, SurpriseGate
from node.twin.model import TwinLM
from node.twin.neural import NEURAL_FILE
from node.twin.prior import GlobalPrior
from node.twin.tokens import is_word, message_tokens, tokenize


@dataclass
class Result:
    tokens: int = 0
    top1: int = 0
    top3: int = 0
    bits: float = 0.0
    ks_typed: int = 0
    ks_full: int = 0
    learn_s: float = 0.0
    learn_msgs: int = 0
    update_s: float = 0.0  # every learning update: counts, and the neural steps
    updates: int = 0
    neural_s: float = 0.0  # the neural steps alone (the expensive update)
    neural_updates: int = 0
    size_bytes: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, o: Result) -> None:
        for name in (
            "tokens",
            "top1",
            "top3",
            "bits",
            "ks_typed",
            "ks_full",
            "learn_s",
            "learn_msgs",
            "update_s",
            "updates",
            "neural_s",
            "neural_updates",
        ):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        self.latencies.extend(o.latencies)


def keystrokes(lm: TwinLM, hist: list[int], word: str) -> int:
    for j in range(len(word)):
        if word in (lm.token_str(i) for i, _ in lm.top(hist, 3, prefix=word[:j])):
            return j + 1
    return len(word) + 1


def _learn(lm: TwinLM, text: str, gate: SurpriseGate | MessageGate | None, cfg: Config, r: Result) -> None:
    """What the device does per message: predict each token (surprisal), update the cheap statistics, and run
    the expensive update (neural adaptation, or the counts when ``gate_counts``) on the tokens the gate passes.
    Update compute is CPU time (``time.process_time``) around the updates, the gate's decision included."""
    tokens = message_tokens(text)
    ids = lm.ids(tokens, add=True)
    bits = []
    for i, t in enumerate(ids):
        b = lm.learn_weights(ids[:i], t)
        nb = lm.last_neural_bits
        bits.append(b if _OPTS.get("gate_score") is None or nb is None else nb)
    t0 = time.process_time()
    if cfg.gate_counts:
        assert not isinstance(gate, MessageGate)
        mask = [gate.check(b) for b in bits] if gate is not None else [True] * len(ids)
        r.updates += lm.learn_counts_gated(ids, mask)
        r.update_s += time.process_time() - t0
        lm.message_done(ids)
        return
    lm.learn_counts(ids)
    t1 = time.process_time()
    r.updates += len(ids)
    if lm.neural is not None and gate is not None:
        if isinstance(gate, MessageGate) or cfg.sampled:
            weights = lm.gate_weights(gate, bits)
        else:
            weights = [1.0 if gate.check(b) else 0.0 for b in bits]
        if cfg.msg_weight != 1.0:
            weights = [w * cfg.msg_weight for w in weights]
        lm.adapt_neural(ids, weights)  # tokens learned are counted at the end (a replay buffer only queues them)
        r.neural_s += time.process_time() - t1
    r.update_s += time.process_time() - t0
    lm.message_done(ids)  # (after the step: the recurrent tier's step reads this message's states)


@dataclass(frozen=True)
class Config:
    name: str
    fixed_lambda: float | None = None  # 0: prior only; 1: personal only; None: learned
    neural: bool = False
    gate_fraction: float | None = None  # neural adaptation gated at this fraction (1.0: always; None: frozen)
    gate_counts: bool = False  # gate the personal counts instead (no neural tier)
    sampled: bool = True  # neural gate: importance-sampled (the shipped one) or a hard threshold
    topk: bool = True
    extras: bool = False  # keystrokes and latency
    recency: bool = True  # the recency cache tier (learned always, like the counts)
    gate_start_bits: float | None = None  # the gate's starting threshold (None: SurpriseGate's default)
    gate_step_bits: float | None = None  # the gate's adaptation step (None: SurpriseGate's default)
    batched: bool = True  # neural steps as one mini-batch per message from the predictions' forward passes
    message_gate: str | None = None  # a MessageGate with this score (gate_fraction its token budget)
    replay: int = 1  # the W/b step runs when this many gated tokens wait (1: once per message)
    msg_weight: float = 1.0  # the step's weight on every passed token
    gate_step_msg: float | None = None  # the MessageGate's adaptation step (None: its default)
    gate_seed: int = 0  # the MessageGate's random draws (the random control)
    gate_warmup: int = 0  # the MessageGate passes every message until it has seen this many tokens
    gate_start_msg: float | None = None  # the MessageGate's starting threshold (None: START_BITS[score])
    gate_tokens: str = ""  # the MessageGate's token selection inside a passed message ("", "pos", "neg")


def run_sender(
    prior: GlobalPrior,
    neural_data: bytes | None,
    sender: twin_data.Sender,
    cfg: Config,
    *,
    ks_words: int = 0,
    latency_samples: int = 0,
) -> Result:
    nn = rnn.load_neural(neural_data, prior.p1, prior.unk, prior.bos) if cfg.neural and neural_data else None
    lm = TwinLM(
        prior,
        fixed_lambda=cfg.fixed_lambda,
        neural=nn,
        recency=cfg.recency and not _OPTS.get("no_recency"),
        recency_decay=_OPTS.get("recency_decay"),
        bias_always=not _OPTS.get("no_bias_always"),
        batched_steps=cfg.batched,
        replay_tokens=cfg.replay,
        **(
            {}
            if _OPTS.get("neural_candidates") is None
            else {"neural_candidates": int(_OPTS["neural_candidates"] or 0)}
        ),
    )
    if _NEURAL_LR:
        lm.neural_lr = _NEURAL_LR[0]
    if _BIAS_LR:
        lm.bias_lr = _BIAS_LR[0]
    gate: SurpriseGate | MessageGate | None = None
    if cfg.gate_fraction is not None and cfg.message_gate is not None:
        gate = MessageGate(
            cfg.gate_fraction,
            score=cfg.message_gate,
            seed=cfg.gate_seed,
            fixed_cost_tokens=float(_OPTS.get("gate_fixed_cost") or 0.0),
            warmup_tokens=cfg.gate_warmup,
            token_select=cfg.gate_tokens,
        )
        if cfg.gate_step_msg is not None:
            gate.step_bits = cfg.gate_step_msg
        if cfg.gate_start_msg is not None:
            gate.threshold_bits = cfg.gate_start_msg
        lm.want_resp = gate.score in ("resp", "grad")  # (_learn calls learn_weights itself, not observe)
    elif cfg.gate_fraction is not None:
        gate = SurpriseGate(cfg.gate_fraction)
        if cfg.gate_start_bits is not None:
            gate.threshold_bits = cfg.gate_start_bits
        if cfg.gate_step_bits is not None:
            gate.step_bits = cfg.gate_step_bits
    r = Result()
    train, test = sender.split()
    t0 = time.perf_counter()
    for msg in train:
        _learn(lm, msg, gate, cfg, r)
    r.learn_s = time.perf_counter() - t0
    r.learn_msgs = len(train)
    ks_left = ks_words if cfg.extras else 0
    for msg in test:
        ids = lm.ids(message_tokens(msg))
        for i, t in enumerate(ids):
            hist = ids[:i]
            if cfg.topk:
                top = [x for x, _ in lm.top(hist, 3)]
                r.top1 += bool(top) and top[0] == t
                r.top3 += t in top
            r.bits += lm.surprisal_bits(hist, t)
            r.tokens += 1
            word = lm.token_str(t)
            if ks_left > 0 and t != prior.unk and is_word(word):
                r.ks_typed += keystrokes(lm, hist, word)
                r.ks_full += len(word) + 1
                ks_left -= 1
        if cfg.extras and len(r.latencies) < latency_samples and len(msg) > 4:
            partial = msg[: len(msg) * 2 // 3]
            t1 = time.perf_counter()
            lm.suggest(partial)
            r.latencies.append(time.perf_counter() - t1)
        _learn(lm, msg, gate, cfg, r)
    if nn is not None:  # what still waits in a replay buffer (replay > 1) is learned, and timed, like the rest
        t2 = time.process_time()
        lm.flush_neural()
        r.neural_s += time.process_time() - t2
        r.update_s += time.process_time() - t2
        r.neural_updates = nn.updates  # tokens the W/b step learned (batched or one by one)
    extra = nn.state() if nn is not None else None
    r.size_bytes = len(store.encode(lm, extra))
    return r


def _job(prior_path: Path | None, nn_data: bytes | None, s: twin_data.Sender, c: Config, ks_words: int) -> Result:
    prior = _PRIORS.get(prior_path)
    if prior is None:
        prior = _PRIORS[prior_path] = GlobalPrior.load_file(prior_path) if prior_path else GlobalPrior.load_packaged()
    return run_sender(prior, nn_data, s, c, ks_words=ks_words, latency_samples=50)


def _star_job(a: tuple[Path | None, bytes | None, twin_data.Sender, Config, int]) -> Result:
    return _job(*a)


_PRIORS: dict[Path | None, GlobalPrior] = {}
_NEURAL_LR: list[float] = []
_BIAS_LR: list[float] = []
_OPTS: dict[str, float | None] = {}


def _packaged_neural() -> bytes | None:
    try:
        return resources.files("node.twin.data").joinpath(NEURAL_FILE).read_bytes()
    except (FileNotFoundError, OSError):
        return None


def _gate_lines_neural(configs: list[Config], pooled: dict[str, Result]) -> None:
    """Two views of gating: all learning (counts always, neural steps gated) against no learning at all, and
    the neural steps alone against a frozen neural tier."""
    if not {"static", "neural_frozen", "neural_always"} <= set(pooled):
        return
    a, static, frozen = pooled["neural_always"], pooled["static"], pooled["neural_frozen"]
    gain_all = static.bits - a.bits
    gain_nn = frozen.bits - a.bits
    print(
        f"twin.gate.always: learning gains {gain_all / a.tokens:.4f} bits/token over no learning "
        f"({gain_nn / a.tokens:.4f} of it from the neural steps); update time {a.update_s:.2f} s "
        f"(neural steps {a.neural_s:.2f} s, {a.neural_updates} of them)"
    )
    for c in configs:
        if c.gate_fraction is None or not c.neural or c.name in ("neural_always", "twin") or c.name not in pooled:
            continue
        g = pooled[c.name]
        print(
            f"twin.gate.{c.name}: keeps {pct(static.bits - g.bits, gain_all)} of the always-update gain at "
            f"{pct(g.update_s, a.update_s)} of its update time; neural steps alone: "
            f"{pct(frozen.bits - g.bits, gain_nn)} of their gain at {pct(g.neural_updates, a.neural_updates)} "
            f"of the steps ({pct(g.neural_s, a.neural_s)} of their time); {g.bits / g.tokens:.3f} bits/token"
        )
    ba = pooled.get("batch_always")
    if ba is None:
        return
    gain_b = static.bits - ba.bits
    for c in configs:
        if c.name.startswith("batch_gate_") and c.name in pooled:
            g = pooled[c.name]
            print(
                f"twin.gate_within_batched.{c.name}: keeps {pct(static.bits - g.bits, gain_b)} of batch_always's "
                f"gain at {pct(g.update_s, ba.update_s)} of its update time (the gate's own selection)"
            )


def _gate_lines_baseline(configs: list[Config], pooled: dict[str, Result], name: str) -> None:
    """Every neural configuration against one always-update baseline that uses the same step: the share of its
    learning gain kept (over no learning at all, ``static``) and of its update CPU time."""
    if name not in pooled or "static" not in pooled:
        return
    base, static = pooled[name], pooled["static"]
    gain = static.bits - base.bits
    frozen = pooled.get("neural_frozen")
    print(
        f"twin.curve.baseline {name}: gains {gain / base.tokens:.4f} bits/token over no learning; update CPU "
        f"{base.update_s:.2f} s (neural {base.neural_s:.2f} s), {base.neural_updates} neural tokens"
    )
    for c in configs:
        if not c.neural or c.name in ("static", "neural_frozen", "twin", name) or c.name not in pooled:
            continue
        g = pooled[c.name]
        nn = ""
        if frozen is not None and frozen.bits != base.bits:
            nn = f"; neural gain {pct(frozen.bits - g.bits, frozen.bits - base.bits)}"
        print(
            f"twin.curve.{c.name}: keeps {pct(static.bits - g.bits, gain)} of the gain at "
            f"{pct(g.update_s, base.update_s)} of the update CPU (neural step {pct(g.neural_s, base.neural_s)}, "
            f"tokens {pct(g.neural_updates, base.neural_updates)}){nn}; {g.bits / g.tokens:.3f} bits/token"
        )
    seeds: dict[str, list[Result]] = {}  # the random control over several seeds: its spread
    for c in configs:
        if c.message_gate == "random" and c.name in pooled:
            seeds.setdefault(c.name.split("_seed")[0], []).append(pooled[c.name])
    for group, rs in seeds.items():
        if len(rs) > 1:
            kept = [100 * (static.bits - g.bits) / gain if gain else 0.0 for g in rs]
            cpu = [100 * g.update_s / base.update_s if base.update_s else 0.0 for g in rs]
            print(
                f"twin.curve.spread {group} over {len(rs)} seeds: keeps {min(kept):.1f}-{max(kept):.1f} % of the "
                f"gain at {min(cpu):.1f}-{max(cpu):.1f} % of the update CPU"
            )


BIAS_ONLY = "msg_random_1_r1_w0"  # the W/b (adapter) step never runs: only counts, cache and the bias step learn


def _adapter_gain_lines(per_user: dict[str, list[tuple[str, Result]]], name: str) -> None:
    """Where the adapter step's gain comes from: per sender, what ``name`` (the always-update baseline) gains
    over the bias-only configuration (bits/token) and that sender's share of the pooled adapter gain."""
    if name not in per_user or BIAS_ONLY not in per_user:
        return
    pairs = list(zip(per_user[BIAS_ONLY], per_user[name], strict=True))
    total = sum(b.bits - a.bits for (_, b), (_, a) in pairs)
    for (uuid, b), (_, a) in pairs:
        print(
            f"twin.curve.adapter_gain {uuid[:8]}: {(b.bits - a.bits) / max(a.tokens, 1):+.4f} bits/token over bias "
            f"only ({pct(b.bits - a.bits, total)} of the pooled adapter gain), {a.neural_updates} learned tokens"
        )


def _gate_lines_counts(configs: list[Config], pooled: dict[str, Result]) -> None:
    base, a = pooled["prior"], pooled["twin"]
    gain = base.bits - a.bits
    for c in configs:
        if c.gate_fraction is None or not c.gate_counts:
            continue
        g = pooled[c.name]
        print(
            f"twin.gate.{c.name}: keeps {pct(base.bits - g.bits, gain)} of the always-update gain at "
            f"{pct(g.updates, a.updates)} of its count updates; {g.bits / g.tokens:.3f} bits/token"
        )


def pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f} %" if b else "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--senders", default="report", help="report | dev | comma list of UUID prefixes")
    ap.add_argument("--limit", type=int, default=0, help="only the first N senders")
    ap.add_argument("--ks-words", type=int, default=300)
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.1, 0.3])
    ap.add_argument(
        "--batch-fractions", type=float, nargs="*", default=[0.5, 0.8], help="gate fractions of the batched update"
    )
    ap.add_argument("--prior", type=Path, default=None, help="a prior file (default: the packaged one)")
    ap.add_argument("--per-user", action="store_true")
    ap.add_argument("--modes", default="", help="comma list of configurations to run (default: all)")
    ap.add_argument("--neural", type=Path, default=None, help="a neural model file (default: the packaged one)")
    ap.add_argument("--gate", type=float, default=0.5, help="the shipped gate fraction (twin.gate_fraction)")
    ap.add_argument(
        "--gate-score",
        default=SHIPPED_SCORE,
        help="the `twin` configuration's message gate score (default: the daemon's; '' = session 4's token gate)",
    )
    ap.add_argument("--gate-tokens", default="", help="the `twin` message gate's token selection: '' (all), pos or neg")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--neural-lr", type=float, default=None, help="override the neural tier's adaptation step (adapter / W, b)"
    )
    ap.add_argument("--bias-lr", type=float, default=None, help="override the always-on output-bias step (c alone)")
    ap.add_argument("--recency-decay", type=float, default=None, help="the recency cache's decay per token")
    ap.add_argument("--gate-neural", action="store_true", help="gate on the neural tier's own surprisal")
    ap.add_argument("--no-bias-always", action="store_true", help="neural output bias behind the gate too")
    ap.add_argument("--neural-candidates", type=int, default=None, help="the neural tier's top-k in the candidates")
    ap.add_argument("--sparse-min-p", type=float, default=None, help="the batched step's output-row cut")
    ap.add_argument("--no-recency", action="store_true", help="no recency cache tier")
    ap.add_argument("--job-lines", action="store_true", help="print each (configuration, sender) result as it ends")
    ap.add_argument(
        "--gate-variant",
        action="append",
        default=[],
        metavar="F:START:STEP",
        help="an extra gated configuration: fraction, starting threshold (bits), adaptation step (bits)",
    )
    ap.add_argument(
        "--msg-gate",
        action="append",
        default=[],
        metavar="SCORE:F:REPLAY[:WEIGHT[:STEP[:WARMUP[:TOKENS[:THRESHOLD]]]]]",
        help="an extra message-gated configuration (score useful|mixture|neural|random, token budget, replay size)",
    )
    ap.add_argument(
        "--always-replay", type=int, nargs="*", default=[], help="batch_always with these replay buffer sizes"
    )
    ap.add_argument(
        "--gate-fixed-cost",
        type=float,
        default=SHIPPED_FIXED_COST_TOKENS,
        help="message gates count each message as its tokens + this many (the step's fixed cost) in the budget "
        "(default: the daemon's)",
    )
    ap.add_argument("--baseline", default="batch_always", help="the always-update configuration gates are read against")
    ap.add_argument(
        "--random-seeds", type=int, default=3, help="a random --msg-gate (the control) runs with this many seeds"
    )
    args = ap.parse_args(argv)
    if args.gate_neural and (
        args.msg_gate or (args.gate_score and (not args.modes or "twin" in args.modes.split(",")))
    ):
        ap.error(
            "--gate-neural replaces the mixture's bits by the neural tier's own, so a message gate's edge score "
            "would be 0 for every message: use it with --gate-score '' and no --msg-gate (session 4's token gate)"
        )
    _OPTS["recency_decay"] = args.recency_decay
    _OPTS["gate_fixed_cost"] = args.gate_fixed_cost
    _OPTS["neural_candidates"] = args.neural_candidates
    if args.sparse_min_p is not None:
        neural_mod.SPARSE_MIN_P = args.sparse_min_p  # read by adapt_batch at call time (the workers fork after)
    _OPTS["no_bias_always"] = 1.0 if args.no_bias_always else None
    _OPTS["gate_score"] = 1.0 if args.gate_neural else None
    _OPTS["no_recency"] = 1.0 if args.no_recency else None
    prior = GlobalPrior.load_file(args.prior) if args.prior else GlobalPrior.load_packaged()
    senders = twin_data.load_senders()
    if args.senders == "report":
        chosen = twin_data.report_senders(senders)
    elif args.senders == "dev":
        chosen = twin_data.dev_senders(senders)
    else:
        prefixes = tuple(p.strip() for p in args.senders.split(",") if p.strip())
        chosen = [s for u, s in sorted(senders.items()) if u.startswith(prefixes) and s.words >= twin_data.MIN_WORDS]
    if args.limit:
        chosen = chosen[: args.limit]
    in_prior = {s.uuid for s in twin_data.prior_senders(senders)}
    assert not any(s.uuid in in_prior for s in chosen), "an evaluated sender is in the prior"
    words = sum(s.words for s in chosen)
    print(
        f"twin.setup: {len(chosen)} senders ({args.senders}), {words} words; prior {prior.size_bytes} bytes, "
        f"order {prior.order}, vocab {prior.v}; tokens: {tokenize('Hello, you... OK?')} + </s>"
    )
    t_start = time.perf_counter()
    if args.neural_lr is not None:
        _NEURAL_LR.append(args.neural_lr)
    if args.bias_lr is not None:
        _BIAS_LR.append(args.bias_lr)
    nn_data = args.neural.read_bytes() if args.neural else _packaged_neural()
    configs = [
        Config("prior", fixed_lambda=0.0, recency=False),
        Config("personal", fixed_lambda=1.0, recency=False),
        Config("ngram", gate_counts=True, gate_fraction=None, topk=True, recency=False),
    ]
    if nn_data is not None:
        old: dict[str, Any] = {
            "batched": False
        }  # the session-3 update: one SGD step per token with its own forward pass
        configs += [
            Config(
                "twin",
                neural=True,
                gate_fraction=args.gate,
                extras=True,
                message_gate=args.gate_score or None,
                gate_tokens=args.gate_tokens,
            ),
            Config("twin_token_gate_0.8", neural=True, gate_fraction=0.8, extras=True),  # session 4's shipped gate
            Config("static", fixed_lambda=0.0, neural=True, gate_fraction=None, topk=False, recency=False),
            Config("neural_frozen", neural=True, gate_fraction=None, topk=False),
            Config("neural_always", neural=True, gate_fraction=1.0, topk=False, **old),
        ]
        configs += [
            Config(f"neural_gate_{f:g}", neural=True, gate_fraction=f, topk=False, **old) for f in args.fractions
        ]
        configs += [
            Config(
                f"neural_hard_gate_{args.gate:g}",
                neural=True,
                gate_fraction=args.gate,
                sampled=False,
                topk=False,
                **old,
            )
        ]
        configs += [Config("batch_always", neural=True, gate_fraction=1.0, topk=False)]
        configs += [Config(f"batch_gate_{f:g}", neural=True, gate_fraction=f, topk=False) for f in args.batch_fractions]
        configs += [
            Config(f"batch_always_r{n}", neural=True, gate_fraction=1.0, topk=False, replay=n)
            for n in args.always_replay
        ]
        for v in args.msg_gate:
            parts = v.split(":")
            score, f, rep = parts[0], float(parts[1]), int(parts[2])
            wgt = float(parts[3]) if len(parts) > 3 else 1.0
            step = float(parts[4]) if len(parts) > 4 and parts[4] else None
            warm = int(parts[5]) if len(parts) > 5 and parts[5] else 0
            toksel = parts[6] if len(parts) > 6 else ""
            thr = float(parts[7]) if len(parts) > 7 and parts[7] else None
            name = (
                f"msg_{score}_{f:g}_r{rep}"
                + (f"_w{wgt:g}" if len(parts) > 3 else "")
                + (f"_s{step:g}" if step else "")
                + (f"_wu{warm}" if warm else "")
                + (f"_t{toksel}" if toksel else "")
                + (f"_th{thr:g}" if thr is not None else "")
            )
            for seed in range(max(1, args.random_seeds) if score == "random" else 1):
                configs.append(
                    Config(
                        name + (f"_seed{seed}" if seed else ""),
                        neural=True,
                        gate_fraction=f,
                        topk=False,
                        message_gate=score,
                        replay=rep,
                        msg_weight=wgt,
                        gate_step_msg=step,
                        gate_seed=seed,
                        gate_warmup=warm,
                        gate_tokens=toksel,
                        gate_start_msg=thr,
                    )
                )
        for v in args.gate_variant:
            f, start, step = (float(x) for x in v.split(":"))
            configs.append(
                Config(
                    f"neural_gate_{f:g}_{start:g}_{step:g}",
                    neural=True,
                    gate_fraction=f,
                    topk=False,
                    gate_start_bits=start,
                    gate_step_bits=step,
                )
            )
    else:
        configs[2] = Config("twin", gate_counts=True, extras=True)
        configs += [Config(f"counts_gate_{f:g}", gate_counts=True, gate_fraction=f, topk=False) for f in args.fractions]
    wanted = set(args.modes.split(",")) if args.modes else None
    configs = [c for c in configs if wanted is None or c.name in wanted]
    jobs = [(c, s) for s in chosen for c in configs]  # sender-major: every configuration sees the same load
    results: list[Result] = []
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        work = [(args.prior, nn_data, s, c, args.ks_words) for c, s in jobs]
        for (c, s), r in zip(jobs, pool.imap(_star_job, work), strict=True):
            results.append(r)
            if args.job_lines:  # partial results survive a run stopped early (a loaded machine)
                print(f"twin.job {c.name} {s.uuid[:8]} {json.dumps(dataclasses.asdict(r))}", flush=True)
    pooled: dict[str, Result] = {c.name: Result() for c in configs}
    per_user: dict[str, list[tuple[str, Result]]] = {c.name: [] for c in configs}
    for (c, s), r in zip(jobs, results, strict=True):
        pooled[c.name].add(r)
        per_user[c.name].append((s.uuid, r))
    base = pooled.get("prior") or next(iter(pooled.values()))
    for c in configs:
        r = pooled[c.name]
        acc = f"top-1 {pct(r.top1, r.tokens)}, top-3 {pct(r.top3, r.tokens)}, " if c.topk else ""
        print(
            f"twin.accuracy.{c.name}: {acc}{r.bits / r.tokens:.3f} bits/token over {r.tokens} test tokens "
            f"(ratio of bits vs prior alone {r.bits / base.bits:.3f})"
        )
    _gate_lines_baseline(configs, pooled, args.baseline)
    _adapter_gain_lines(per_user, args.baseline)
    main_name = "twin"
    if main_name not in pooled:
        _gate_lines_neural(configs, pooled)
        print(f"twin.bench_time: {time.perf_counter() - t_start:.0f} s")
        return 0
    m = pooled[main_name]
    users = per_user[main_name]
    if args.per_user:
        for uuid, r in users:
            print(
                f"twin.user {uuid[:8]}: top-1 {pct(r.top1, r.tokens)} top-3 {pct(r.top3, r.tokens)} "
                f"{r.bits / r.tokens:.2f} bits, {r.tokens} tokens, state {r.size_bytes} B"
            )
    users_top1 = [r.top1 / r.tokens for _, r in users if r.tokens]
    print(
        f"twin.per_user.{main_name}: top-1 median {100 * statistics.median(users_top1):.1f} %, "
        f"min {100 * min(users_top1):.1f} %, max {100 * max(users_top1):.1f} % over {len(users_top1)} users"
    )
    print(
        f"twin.keystroke_savings: {pct(m.ks_full - m.ks_typed, m.ks_full)} of {m.ks_full} keystrokes "
        "(3 suggestions shown)"
    )
    sizes = [r.size_bytes for _, r in users]
    nn_size = len(nn_data) if nn_data else 0
    print(
        f"twin.disk: user state mean {statistics.mean(sizes) / 1024:.0f} KiB, max {max(sizes) / 1024:.0f} KiB; "
        f"shipped prior {prior.size_bytes / 1024:.0f} KiB + neural {nn_size / 1024:.0f} KiB"
    )
    lat = sorted(m.latencies)
    print(
        f"twin.suggest_latency: p50 {1000 * lat[len(lat) // 2]:.2f} ms, p99 "
        f"{1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.2f} ms over {len(lat)} calls"
    )
    print(
        f"twin.learn_cost: {1e6 * m.learn_s / m.learn_msgs:.0f} µs per message (predict every token + learn), "
        f"{m.learn_msgs} messages"
    )
    if nn_data is None:
        _gate_lines_counts(configs, pooled)
    elif {"static", "neural_frozen", "neural_always"} <= set(pooled):
        _gate_lines_neural(configs, pooled)
    print(f"twin.bench_time: {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
