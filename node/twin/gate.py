"""Surprise gating: decide per event whether the expensive update runs.

Every event is first predicted and its surprisal ``s`` (bits) recorded; cheap statistics are always updated;
the expensive update runs only when ``s > threshold``. The threshold adapts so that about ``target_fraction``
of events pass: it follows the ``1 - target_fraction`` quantile of recent surprisals by stochastic
approximation (Robbins-Monro)::

    threshold += step_bits * (1[s > threshold] - target_fraction)

so a user whose text becomes more predictable gets a lower threshold (still the most surprising events are
learned) and a burst of novel text raises it (bounded work). ``target_fraction = 1`` disables gating.

:meth:`SurpriseGate.sample` is the variant the neural tier uses. A hard threshold trains the model only on
its worst predictions, which skews it towards rare tokens (measured: adapting on the top 30 % by surprisal made
the neural tier *worse* than not adapting at all). ``sample`` keeps every event above the threshold (weight 1)
and keeps one below it with probability ``s / threshold``, weighted ``threshold / s`` (capped at
:data:`MAX_WEIGHT`): surprising events are always learned, and the expected update equals the always-update
one (importance sampling, with the gradient's size roughly growing with surprisal).

Measured (bench/README.md, session 4): sampling by surprisal keeps about the share of the neural tier's gain
that it keeps of its steps (it acts like random subsampling, not like picking the useful updates), so what
makes the gated learning cheap is the update itself: the neural step runs as one sparse mini-batch per message
from the forward passes the predictions already computed (``NeuralLM.adapt_batch``), and the shipped fraction
is 0.8 (``[twin] gate_fraction``).

What is shipped now (session 8, bench/README.md "session 8 (gate6)"): the daemon's gate is :class:`MessageGate`
with score ``edgec`` at ``[twin] gate_fraction`` 0.5 and a fixed cost of 4 tokens, no warm-up — with the GRU tier
(output bias c at its own step, always on) it keeps ~99 % of the always-update gain at ~64 % of its update CPU.
The goal (>= 90 % at <= 30 %) is not met. What was learned: the adapter step (A, a) is ~75-80 % of the update
CPU but only ~18 % of the gain (bias only keeps ~82 %); its gain sits in a few users (one tuning sender of 8
holds over half of it; two lose by it) and accrues with every message learned, so subsampling messages — by any
score tried, or by importance weights (which overshoot) — keeps it about in proportion to the steps taken.
:attr:`MessageGate.warmup_tokens` (learn every message until the gate has seen that many tokens, then the score
decides) looked efficient on tuning senders (200 tokens: ~88 % at ~30 %) but not on the confirmation ones (85 % at
33 %: there the gain accrues with every message); :attr:`MessageGate.token_select` ``"pos"`` (a passed message
teaches the adapter only its tokens where the neural tier beat the mixture — all of the adapter's gain comes from
those; ``"neg"`` alone keeps nothing) is ~1.2-1.5x as efficient per CPU point, yet as the shipped gate's option
it costs 0.014 bits/token on the confirmation senders. Both are bench options (``--msg-gate ...:WARMUP:TOKENS``,
``--gate-tokens``), off in the daemon (the warm-up's count is not saved with the state either).

Session 9 (bench/README.md "Session 9 — the lead's gate runs"): on the 38 held-out report users, whose histories are
~2.5x the tuning senders', the always-on statistics carry ~94 % of the gain, and ``edgec`` at a 5 % budget
(``[twin] gate_fraction = 0.05``) keeps 95.3 % of the always-update gain at 25.8 % of its update CPU (the goal: 90 %
at 30 %); on the dev senders the same budget keeps ~85 %. Tried and not kept: a score on the won tokens only
(``edgep``), a fixed threshold (per-user selection), a running sum of the bias rows and the counts learned before
the neural passes (no measurable CPU saved).
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_WEIGHT = 4.0  # the largest importance weight of a sampled low-surprise update (bounds one step's size)
# Every surprisal the model reports is capped: -log2(model.MIN_P = 1e-12) = 39.86 bits, so a message's score lies
# in [-40, 40] bits (a difference of two surprisals for edge/useful, one for mixture/neural). A threshold outside
# that range passes every message or none; the gate's threshold is kept inside it at run time and a stored one
# outside it is refused on load (at ±64 it pinned the gate open or shut for ~600-1,500 messages).
MAX_SURPRISAL_BITS = 40.0
MIN_THRESHOLD_BITS = 0.0
MAX_THRESHOLD_BITS = MAX_SURPRISAL_BITS


@dataclass(slots=True)
class SurpriseGate:
    target_fraction: float = 0.3
    threshold_bits: float = 8.0  # start: a typical surprisal of chat text under the prior is ~6-7 bits
    step_bits: float = 0.2  # tuned on dev senders: 0.05 let small users pass 36 % of steps at a target of 30 %
    seen: int = 0
    passed: int = 0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.target_fraction <= 1.0:
            raise ValueError("target_fraction must be in (0, 1]")
        self._rng = random.Random(self.seed)

    def sample(self, surprisal_bits: float) -> float:
        """The weight of this event's expensive update: 0 (skip), 1 (surprising), or > 1 (sampled below)."""
        self.seen += 1
        if self.target_fraction >= 1.0:
            self.passed += 1
            return 1.0
        theta = max(self.threshold_bits, 1e-3)
        s = max(surprisal_bits, 0.0)
        keep = 1.0 if s >= theta else s / theta
        hit = keep >= 1.0 or self._rng.random() < keep
        self.threshold_bits += self.step_bits * ((1.0 if hit else 0.0) - self.target_fraction)
        if not hit:
            return 0.0
        self.passed += 1
        return min(1.0 / keep, MAX_WEIGHT) if keep > 0 else MAX_WEIGHT

    def check(self, surprisal_bits: float) -> bool:
        """True when the event is surprising enough to learn from (and adapt the threshold)."""
        self.seen += 1
        if self.target_fraction >= 1.0:
            self.passed += 1
            return True
        hit = surprisal_bits > self.threshold_bits
        self.threshold_bits += self.step_bits * ((1.0 if hit else 0.0) - self.target_fraction)
        if hit:
            self.passed += 1
        return hit

    @property
    def pass_rate(self) -> float:
        return self.passed / self.seen if self.seen else 0.0


MESSAGE_MIN_THRESHOLD_BITS = -MAX_SURPRISAL_BITS  # a message score (a difference of surprisals) can be negative
SHIPPED_SCORE = "edgec"  # chosen on tuning senders (bench/README.md, sessions 5 and 6)
SHIPPED_FIXED_COST_TOKENS = 4.0  # the W/b step's per-message cost, in tokens (~50 us fixed, ~12 us per token)
SCORES = ("useful", "edge", "mixture", "neural", "random", "resp", "grad", "edgec")
START_BITS = {
    "useful": 0.5,
    "edge": -0.5,
    "mixture": 6.0,
    "neural": 7.0,
    "random": 0.0,
    "resp": 0.3,
    "grad": 0.2,
    "edgec": -0.3,
}
EDGEC_FIXED_TOKENS = 4.0  # "edgec" without a fixed cost of its own: the step's per-message cost, in tokens
# A message the gate passes adapts the neural tier on its first MAX_GATED_TOKENS tokens only (the forward passes
# the prediction kept for the batched step; model.MAX_SEEN): a longer message costs what that many do, and the
# budget counts it so (before, every later token took a full per-token step while the budget counted 32).
MAX_GATED_TOKENS = 128
MAX_MESSAGE_WEIGHT_TOKENS = MAX_GATED_TOKENS  # the budget's weight of a message: its learned tokens + fixed cost
# A stored threshold further than this from its score's start value is not one the score's own messages could
# have driven it to (edge scores lie within a few bits of 0): on load the gate alone starts again from START_BITS.
SANE_THRESHOLD_SPAN_BITS = {"edge": 4.0, "edgec": 4.0, "useful": 4.0, "resp": 1.0, "grad": 1.0}


def sane_threshold(score: str, threshold_bits: float) -> bool:
    """Whether a loaded threshold is one the ``score``'s messages could have moved its gate to."""
    if not MESSAGE_MIN_THRESHOLD_BITS <= threshold_bits <= MAX_THRESHOLD_BITS:
        return False
    span = SANE_THRESHOLD_SPAN_BITS.get(score)
    return span is None or abs(threshold_bits - START_BITS[score]) <= span


def token_usefulness(neural_bits: float, mixture_bits: float) -> float:
    """How much the neural tier lags the mixture on one token (bits; > 0: the other tiers knew it better)."""
    return neural_bits - mixture_bits


@dataclass(slots=True)
class MessageGate:
    """Decide per message whether the neural tier's W/b step learns it: all of its tokens or none.

    Shipped (session 6): score ``edgec`` = the message's summed edge over its step cost ``n + fixed_cost_tokens``
    (the edge per unit of compute: a short message pays the step's fixed cost for few tokens), with the budget
    counted in the same cost units.

    Skipping a whole message skips its share of the step and of the replay buffer's fixed cost, and the
    decision costs nothing: the score comes from the surprisals the prediction already computed. ``score`` is
    the message's mean per-token score (:data:`SCORES`: ``useful`` = the neural tier's surprisal minus the
    mixture's, :func:`token_usefulness`; ``mixture`` / ``neural`` = that tier's surprisal; ``random`` = a
    uniform draw, the control that shows what the score adds over subsampling; ``resp`` / ``grad`` = the mean
    responsibility of the neural tier for the tokens in the final mixture, alone or times ``1 - p_neural``).

    The threshold targets a compute budget: about ``target_fraction`` of the step's cost passes, a message
    costing the tokens it adapts on (its length, at most :data:`MAX_GATED_TOKENS`: the model learns no more of
    a message) plus ``fixed_cost_tokens`` (0: a budget of tokens, as in session 5). Robbins-Monro::

        w = (min(n, MAX_GATED_TOKENS) + fixed_cost_tokens) / 10
        threshold += step_bits * w * (1[score > threshold] - target_fraction)

    bounded to ``[MESSAGE_MIN_THRESHOLD_BITS, MAX_THRESHOLD_BITS]`` (a score can be negative)."""

    target_fraction: float = 0.5
    score: str = SHIPPED_SCORE
    threshold_bits: float = math.nan  # nan: START_BITS[score]
    step_bits: float = 0.1
    seen_tokens: int = 0
    passed_tokens: int = 0
    seed: int = 0
    fixed_cost_tokens: float = 0.0  # the step's per-message cost in tokens: the budget counts n + this per message
    warmup_tokens: int = 0  # every message passes until the gate has seen this many tokens (the threshold stays)
    # Token selection inside a passed message (bench option): "pos" learns only the tokens where the neural tier
    # beat the mixture (edge > 0), "neg" only the others; "" every token (shipped).
    token_select: str = ""
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.target_fraction <= 1.0:
            raise ValueError("target_fraction must be in (0, 1]")
        if not 0.0 <= self.fixed_cost_tokens <= 1000.0:
            raise ValueError("fixed_cost_tokens must be in [0, 1000]")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}")
        if self.token_select not in ("", "pos", "neg"):
            raise ValueError("token_select must be '', 'pos' or 'neg'")
        if math.isnan(self.threshold_bits):
            self.threshold_bits = START_BITS[self.score]
        self._rng = random.Random(self.seed)

    def message_score(self, mixture_bits: list[float], neural_bits: list[float], resp: Sequence[float] = ()) -> float:
        if self.score in ("resp", "grad") and len(resp) == len(mixture_bits) == len(neural_bits):
            if self.score == "resp":
                return sum(resp) / len(resp) if resp else 0.0
            vals = [r * (1.0 - math.pow(2.0, -n)) for r, n in zip(resp, neural_bits, strict=True)]
        elif self.score == "mixture" or not neural_bits:
            vals = mixture_bits
        elif self.score == "neural":
            vals = neural_bits
        elif self.score in ("edge", "edgec"):
            # -token_usefulness per token, summed in token order without a list (the same float sum)
            k = min(len(neural_bits), len(mixture_bits))
            if not k:
                return 0.0
            edge: float = sum(map(operator.sub, mixture_bits, neural_bits))
            if self.score == "edgec":  # the mean edge per unit of the step's cost (n tokens + fixed)
                return edge / (k + (self.fixed_cost_tokens or EDGEC_FIXED_TOKENS))
            return edge / k
        else:
            vals = [token_usefulness(n, m) for n, m in zip(neural_bits, mixture_bits, strict=False)]
        return sum(vals) / len(vals) if vals else 0.0

    def token_weights(self, mixture_bits: Sequence[float], neural_bits: Sequence[float]) -> list[float]:
        """The step's weight of each token of a passed message (:attr:`token_select`)."""
        if not self.token_select or len(neural_bits) != len(mixture_bits):
            return [1.0] * len(mixture_bits)
        pos = self.token_select == "pos"
        return [1.0 if (m - n > 0.0) == pos else 0.0 for m, n in zip(mixture_bits, neural_bits, strict=True)]

    def decide(self, mixture_bits: list[float], neural_bits: list[float], resp: Sequence[float] = ()) -> bool:
        """True when this message's tokens go to the expensive update (and adapt the threshold)."""
        n = len(mixture_bits)
        if n == 0:
            return False
        warm = self.seen_tokens < self.warmup_tokens
        self.seen_tokens += n
        if self.target_fraction >= 1.0 or warm:
            self.passed_tokens += n
            return True
        if self.score == "random":  # the control: plain subsampling at the budget
            hit = self._rng.random() < self.target_fraction
        else:
            hit = self.message_score(mixture_bits, neural_bits, resp) > self.threshold_bits
        w = (min(n, MAX_MESSAGE_WEIGHT_TOKENS) + self.fixed_cost_tokens) / 10.0
        t = self.threshold_bits + self.step_bits * w * ((1.0 if hit else 0.0) - self.target_fraction)
        self.threshold_bits = min(MAX_THRESHOLD_BITS, max(MESSAGE_MIN_THRESHOLD_BITS, t))
        if hit:
            self.passed_tokens += n
        return hit

    @property
    def pass_rate(self) -> float:
        return self.passed_tokens / self.seen_tokens if self.seen_tokens else 0.0
