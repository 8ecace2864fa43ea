"""The message gate's warm-up (node/twin/gate.py MessageGate.warmup_tokens): every message passes until the gate
has seen that many tokens, the threshold untouched; then the score and the budget decide as before."""

from __future__ import annotations

import random

import pytest

from node.twin.gate import MessageGate
from node.twin.model import TwinLM

from .helpers import tiny_prior
from .test_rnn import TEXTS, model


def test_every_message_passes_during_the_warm_up_then_the_gate_decides() -> None:
    warm = MessageGate(0.1, score="edgec", fixed_cost_tokens=4.0, warmup_tokens=50)
    cold = MessageGate(0.1, score="edgec", fixed_cost_tokens=4.0)
    useless = ([1.0] * 10, [3.0] * 10)  # the neural tier 2 bits worse than the mixture on every token
    start = warm.threshold_bits
    passed = [warm.decide(*useless) for _ in range(5)]  # 50 tokens: all inside the warm-up
    assert passed == [True] * 5 and warm.threshold_bits == start and warm.passed_tokens == 50
    assert not cold.decide(*useless)
    assert not warm.decide(*useless)  # past the warm-up: the score decides
    assert warm.threshold_bits != start and warm.passed_tokens == 50 and warm.seen_tokens == 60


def _session7_score(gate: MessageGate, mixture_bits: list[float], neural_bits: list[float]) -> float:
    """The edge scores as session 7 computed them (a list of per-token edges, then its sum)."""
    if not neural_bits:
        return sum(mixture_bits) / len(mixture_bits) if mixture_bits else 0.0
    vals = [m - n for n, m in zip(neural_bits, mixture_bits, strict=False)]
    if gate.score == "edgec" and vals:
        return sum(vals) / (len(vals) + (gate.fixed_cost_tokens or 4.0))
    return sum(vals) / len(vals) if vals else 0.0


def test_the_edge_scores_are_the_same_floats_as_before() -> None:
    """The score is summed without a per-token list now: the same float, bit for bit, on many random messages."""
    rng = random.Random(3)
    gates = [MessageGate(0.3, score=s, fixed_cost_tokens=f) for s in ("edge", "edgec") for f in (0.0, 4.0)]
    for _ in range(5000):
        n = rng.randint(0, 140)
        mb = [rng.uniform(0, 40) for _ in range(n)]
        nb = [rng.uniform(0, 40) for _ in range(rng.choice((n, n, 0, max(0, n - 1))))]
        for g in gates:
            assert g.message_score(mb, nb) == _session7_score(g, mb, nb)


def test_token_selection_learns_only_the_chosen_tokens_of_a_passed_message() -> None:
    mb, nb = [3.0, 1.0, 5.0, 2.0], [1.0, 2.0, 4.0, 2.0]  # edges +2, -1, +1, 0
    assert MessageGate(0.5, token_select="pos").token_weights(mb, nb) == [1.0, 0.0, 1.0, 0.0]
    assert MessageGate(0.5, token_select="neg").token_weights(mb, nb) == [0.0, 1.0, 0.0, 1.0]
    assert MessageGate(0.5).token_weights(mb, nb) == [1.0] * 4  # shipped: every token
    assert MessageGate(0.5, token_select="pos").token_weights(mb, nb[:2]) == [1.0] * 4  # no neural bits: all
    with pytest.raises(ValueError, match="token_select"):
        MessageGate(0.5, token_select="positive")


def test_a_passed_message_teaches_the_adapter_only_its_positive_edge_tokens() -> None:
    """With ``token_select="pos"`` the W/b step learns exactly the tokens where the neural tier beat the mixture."""
    pr = tiny_prior()
    for select in ("pos", ""):
        nn = model(pr)
        lm = TwinLM(pr, neural=nn)
        gate = MessageGate(1.0, token_select=select)
        learned, expected, total = 0, 0, 0
        for text in TEXTS:
            before = nn.updates
            bits = lm.observe(text, gate=gate)
            learned += nn.updates - before
            pos = sum(m - n > 0 for m, n in zip(bits, lm.msg_neural_bits, strict=True))
            expected += pos if select else len(bits)
            total += len(bits)
        assert learned == expected > 0
        assert (expected < total) == bool(select)  # some tokens were left out by the selection
