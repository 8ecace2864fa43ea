"""The Oracle's method (sans-IO, no clock reads): forecasts from the node's own time series.

* :class:`Series` keeps ``(t_s, value)`` samples of one metric, bounded (:data:`MAX_SAMPLES`, oldest dropped).
* :func:`trend` fits ordinary least squares ``value = a + b * t`` over the last :data:`WINDOW` samples and
  reports the slope, the residual standard error ``s`` (the stated error: a forecast is given as value ± 2 s,
  about a 95 % band if the residuals were normal) and the number of samples used.
* :func:`forecast` extrapolates the line ``horizon_s`` ahead; :func:`time_to` solves it for a target level
  (e.g. an empty queue, an empty battery), or says the trend never gets there.
* :func:`wilson` is the Wilson score interval of a proportion (delivery success from the outbox's outcomes).

Metrics the service samples (``metrics.series``): ``outbox_pending`` (queued private messages), ``peers``
(reachable peers: churn), ``routes``, ``battery_percent`` (when known), ``delivery_latency_s`` (per delivered
message, from the outbox: created -> acknowledged).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SAMPLES = 2880  # per metric: a day at the default 30 s sampling interval
WINDOW = 120  # samples the trend is fitted on (an hour at 30 s)
MIN_SAMPLES = 3  # fewer: no trend, only the last value


class Series:
    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, t_s: float, value: float) -> None:
        if self.samples and t_s < self.samples[-1][0]:
            return  # time never goes backwards within one series
        self.samples.append((t_s, float(value)))

    def last(self, n: int) -> list[tuple[float, float]]:
        return list(self.samples)[-n:]


@dataclass(frozen=True, slots=True)
class Trend:
    n: int
    t_last_s: float
    value_last: float
    intercept: float  # value at t = 0 s
    slope_per_s: float
    residual_sd: float  # standard error of the regression (n - 2 degrees of freedom)

    def at(self, t_s: float) -> float:
        return self.intercept + self.slope_per_s * t_s


def trend(samples: Iterable[tuple[float, float]]) -> Trend | None:
    pts = list(samples)
    if not pts:
        return None
    t_last, v_last = pts[-1]
    n = len(pts)
    if n < MIN_SAMPLES:
        return Trend(n, t_last, v_last, v_last, 0.0, 0.0)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    sxx = sum((t - mt) ** 2 for t, _ in pts)
    if sxx == 0:
        return Trend(n, t_last, v_last, mv, 0.0, 0.0)
    b = sum((t - mt) * (v - mv) for t, v in pts) / sxx
    a = mv - b * mt
    sse = sum((v - (a + b * t)) ** 2 for t, v in pts)
    return Trend(n, t_last, v_last, a, b, math.sqrt(sse / (n - 2)) if n > 2 else 0.0)


def forecast(tr: Trend, horizon_s: float) -> tuple[float, float]:
    """(value, ± error) ``horizon_s`` after the last sample; the error is 2 residual standard errors."""
    return tr.at(tr.t_last_s + horizon_s), 2.0 * tr.residual_sd


def time_to(tr: Trend, level: float) -> float | None:
    """Seconds after the last sample until the fitted line reaches ``level``; 0 if already there; None if the
    trend is flat or goes the other way."""
    now = tr.at(tr.t_last_s)
    if abs(now - level) < 1e-9:
        return 0.0
    if (tr.slope_per_s < 0 and now <= level) or (tr.slope_per_s > 0 and now >= level):
        return 0.0
    if tr.slope_per_s == 0 or (level - now) / tr.slope_per_s < 0:
        return None
    return (level - now) / tr.slope_per_s


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float, float]:
    """(estimate, low, high) of a proportion: the Wilson score interval (95 % by default)."""
    if trials <= 0:
        return (0.0, 0.0, 1.0)
    p = successes / trials
    d = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / d
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / d
    return (p, max(0.0, centre - half), min(1.0, centre + half))


def median(values: Iterable[float]) -> float | None:
    v = sorted(values)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2
