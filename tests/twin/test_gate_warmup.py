"""The message gate's warm-up (node/twin/gate.py MessageGate.warmup_tokens): every message passes until the gate
has seen that many tokens, the threshold untouched; then the score and the budget decide as before."""

from __future__ import annotations

from node.twin.gate import MessageGate


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
