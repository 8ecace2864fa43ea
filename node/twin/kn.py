"""Interpolated modified Kneser-Ney (Chen & Goodman 1998), shared arithmetic.

For an n-gram order with counts ``c(h w)`` (raw counts at the highest order, continuation counts
``N1+(• h w)`` below it) the interpolated estimate is::

    p(w | h) = max(c(h w) - D(c(h w)), 0) / c(h) + gamma(h) * p_lower(w | h')
    gamma(h) = (D1 N1(h) + D2 N2(h) + D3 N3+(h)) / c(h)

with three discounts per order from the count-of-counts ``n1..n4``::

    Y = n1 / (n1 + 2 n2);  D1 = 1 - 2Y n2/n1;  D2 = 2 - 3Y n3/n2;  D3+ = 3 - 4Y n4/n3

The unigram level interpolates with the uniform distribution over the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_DISCOUNTS = (0.6, 1.0, 1.3)  # used until an order has seen enough n-grams to estimate its own


def discounts(n1: int, n2: int, n3: int, n4: int) -> tuple[float, float, float]:
    """Modified-KN discounts from count-of-counts; DEFAULT_DISCOUNTS when they cannot be estimated."""
    if min(n1, n2, n3, n4) <= 0:
        return DEFAULT_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    d1 = 1 - 2 * y * n2 / n1
    d2 = 2 - 3 * y * n3 / n2
    d3 = 3 - 4 * y * n4 / n3
    # Small samples can give out-of-range values; clamp to (0, k] so every discount stays a valid subtraction.
    return (min(max(d1, 0.05), 1.0), min(max(d2, 0.05), 2.0), min(max(d3, 0.05), 3.0))


def discount_for(count: int, d: Sequence[float]) -> float:
    if count <= 0:
        return 0.0
    return d[0] if count == 1 else d[1] if count == 2 else d[2]
