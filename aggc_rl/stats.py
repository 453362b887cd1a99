"""The statistics every report shares: intervals over seeds, paired comparisons, geometric means, proportions.

Pure: floats in, floats out; no torch, verl or Ray. The quantiles come from scipy (exact at any degrees of
freedom); the formulas that remain are a few lines each and tested against scipy where it has the same thing.

* :func:`t_interval`: mean and 95% Student-t half-width over independent values (seeds).
* :func:`paired_difference`: the same over per-seed differences ``a[s] - b[s]`` of the seeds both arms ran
  (same seed: same start, data and random stream, so the difference removes what the seeds share).
* :func:`geomean`, :func:`log_interval`, :func:`paired_log_ratio`: positive ratios and divergences live on a
  log scale; their centre is the geometric mean and their interval the t-interval of the logs, mapped back.
* :func:`wilson_interval`: a proportion's interval that stays inside [0, 1] and behaves at 0% and 100%.
  Written out rather than taken from scipy: ``scipy.stats.binomtest`` needs an integer count, and a mean@k
  over prompts is a fraction of one (statsmodels would take it, at the cost of a large dependency).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple

from scipy.stats import norm
from scipy.stats import t as student_t

#: Two-sided confidence of every interval here unless a caller asks for another.
CONFIDENCE = 0.95


class Estimate(NamedTuple):
    """A mean with the half-width of its two-sided interval over ``n`` values (nan when ``n`` is 1)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


class Ratio(NamedTuple):
    """A geometric mean with its interval on the ratio scale (``low`` = ``high`` = nan when ``n`` is 1)."""

    centre: float
    low: float
    high: float
    n: int


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile for ``df`` degrees of freedom (12.706 for df 1 at 95%)."""
    _check_confidence(confidence)
    if df < 1:
        raise ValueError(f"degrees of freedom {df} must be >= 1")
    return float(student_t.ppf(0.5 + confidence / 2, df))


def z_quantile(confidence: float = CONFIDENCE) -> float:
    """The two-sided normal quantile (1.959964 at 95%)."""
    _check_confidence(confidence)
    return float(norm.ppf(0.5 + confidence / 2))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student-t half-width of independent ``values``; the half-width is nan for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval of no values")
    mean = statistics.fmean(values)
    if n == 1:
        return Estimate(mean, math.nan, 1)
    return Estimate(mean, t_quantile(n - 1, confidence) * statistics.stdev(values) / math.sqrt(n), n)


def paired_difference(
    a: Mapping[Hashable, float], b: Mapping[Hashable, float], confidence: float = CONFIDENCE
) -> Estimate | None:
    """The t-interval of ``a[s] - b[s]`` over the keys (seeds) both have; None when they share none."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return t_interval([a[s] - b[s] for s in common], confidence)


def _logs(values: Sequence[float]) -> list[float]:
    """The logs of positive values; empty or non-positive input is refused."""
    if not values:
        raise ValueError("geomean of no values")
    bad = [v for v in values if not v > 0]
    if bad:
        raise ValueError(f"geomean needs positive values, got {bad[:3]}")
    return [math.log(v) for v in values]


def geomean(values: Sequence[float]) -> float:
    """The geometric mean of positive values."""
    logs = _logs(values)
    return math.exp(math.fsum(logs) / len(logs))


def _ratio(logs: Sequence[float], confidence: float) -> Ratio:
    m, hw, n = t_interval(logs, confidence)
    if n == 1:
        return Ratio(math.exp(m), math.nan, math.nan, 1)
    return Ratio(math.exp(m), math.exp(m - hw), math.exp(m + hw), n)


def log_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Ratio:
    """The geometric mean of positive ``values`` with the t-interval of their logs, mapped back."""
    return _ratio(_logs(values), confidence)


def paired_log_ratio(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Ratio:
    """The geometric mean of the per-seed ratios ``a[i] / b[i]`` (positive, same seeds in the same order) with
    the t-interval of the log-ratios, mapped back: how many times larger ``a`` is than ``b``."""
    if len(a) != len(b):
        raise ValueError(f"paired_log_ratio needs the same seeds on both sides, got {len(a)} and {len(b)}")
    return _ratio([x - y for x, y in zip(_logs(a), _logs(b), strict=True)], confidence)


def wilson_interval(p: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed over ``n`` trials (``p`` may be a mean of
    per-trial fractions, e.g. mean@k over prompts)."""
    if n < 1:
        raise ValueError(f"Wilson interval needs n >= 1 trials, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"proportion {p} is outside 0..1")
    z = z_quantile(confidence)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)
