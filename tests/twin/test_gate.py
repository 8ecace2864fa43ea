import random

import pytest

from node.twin.gate import SurpriseGate


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_threshold_adapts_to_the_target_fraction(fraction: float) -> None:
    rng = random.Random(1)
    gate = SurpriseGate(fraction)
    passed = sum(gate.check(rng.gauss(6.0, 3.0)) for _ in range(20_000))
    assert passed / 20_000 == pytest.approx(fraction, abs=0.03)


def test_threshold_follows_a_shift_in_surprisal() -> None:
    rng = random.Random(2)
    gate = SurpriseGate(0.3)
    for _ in range(5000):
        gate.check(rng.gauss(8.0, 2.0))
    high = gate.threshold_bits
    for _ in range(5000):
        gate.check(rng.gauss(3.0, 2.0))
    assert gate.threshold_bits < high - 3


def test_fraction_one_passes_everything_and_bad_fraction_refused() -> None:
    gate = SurpriseGate(1.0)
    assert all(gate.check(0.0) for _ in range(10))
    with pytest.raises(ValueError):
        SurpriseGate(0.0)
