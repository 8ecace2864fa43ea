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
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MAX_WEIGHT = 4.0  # the largest importance weight of a sampled low-surprise update (bounds one step's size)
# The range a threshold can reach: surprisals are at most -log2(1e-12) ~ 40 bits, and the threshold moves by a
# fraction of a bit per event. A stored threshold outside it is refused on load (it would pin the gate open or
# shut: 0 passes every event, a huge one only the importance-sampled ones).
MIN_THRESHOLD_BITS = 0.0
MAX_THRESHOLD_BITS = 64.0


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
