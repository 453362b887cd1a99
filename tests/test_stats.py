"""aggc_rl.stats: every interval against scipy or a value worked by hand, and the refusals."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from aggc_rl import stats


def test_t_interval_matches_student_t():
    mean, half, n = stats.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)  # the printed table's 4.303 at df 2
    assert math.isnan(stats.t_interval([5.0])[1])
    with pytest.raises(ValueError, match="no values"):
        stats.t_interval([])


def test_t_quantiles_are_exact_past_thirty_degrees_of_freedom():
    """The hand-typed table this replaced jumped to the normal 1.96 after df 30; at df 31 the t quantile is 2.04."""
    assert stats.t_quantile(1) == pytest.approx(12.7062047, rel=1e-8)
    assert stats.t_quantile(31) == pytest.approx(2.0395134, rel=1e-7)
    assert stats.t_quantile(10**6) == pytest.approx(stats.z_quantile(), rel=1e-5)
    assert stats.t_quantile(4, confidence=0.9) == pytest.approx(2.1318468, rel=1e-7)
    with pytest.raises(ValueError, match="degrees of freedom 0"):
        stats.t_quantile(0)
    with pytest.raises(ValueError, match=r"confidence=1\.0 must be in \(0, 1\)"):
        stats.t_interval([1.0, 2.0], confidence=1.0)


@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12).filter(lambda v: statistics.stdev(v) > 1e-6))
def test_t_interval_is_scipys_confidence_interval(values):
    mean, half, n = stats.t_interval(values)
    low, high = scipy_stats.t.interval(0.95, n - 1, loc=mean, scale=scipy_stats.sem(values))
    assert (mean - half, mean + half) == pytest.approx((low, high), rel=1e-9, abs=1e-9)


def test_estimate_reads_as_a_tuple_and_by_name():
    est = stats.t_interval([1.0, 3.0])
    m, hw, n = est
    assert (est.mean, est.half_width, est.n) == (m, hw, n) == (2.0, est.half_width, 2)
    assert (est.low, est.high) == (2.0 - hw, 2.0 + hw)


def test_paired_difference_uses_the_seeds_both_arms_ran_and_pairs_them():
    a = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.99}
    b = {0: 0.40, 1: 0.50, 2: 0.61}  # seed 3 is missing: not a pair
    diff = stats.paired_difference(a, b)
    assert diff.n == 3 and diff.mean == pytest.approx((0.10 + 0.10 + 0.09) / 3)
    # Pairing removes what the seeds share: the unpaired interval of the same values is far wider.
    unpaired = (
        stats.t_interval([a[s] for s in range(3)]).half_width + stats.t_interval(list(b.values())).half_width
    )
    assert diff.half_width < unpaired / 10
    assert stats.paired_difference({0: 1.0}, {1: 1.0}) is None


def test_geomean_and_the_log_interval_are_scale_free():
    assert stats.geomean([1.0, 100.0]) == pytest.approx(10.0)
    r = stats.log_interval([1.0, 10.0, 100.0])
    assert r.centre == pytest.approx(10.0) and r.n == 3
    half = stats.t_quantile(2) * 1.0 / math.sqrt(3)  # the logs (base 10) are 0, 1, 2: stdev 1
    assert (r.low, r.high) == pytest.approx((10 ** (1 - half), 10 ** (1 + half)))
    scaled = stats.log_interval([5.0, 50.0, 500.0])
    assert (scaled.low, scaled.high) == pytest.approx((5 * r.low, 5 * r.high))
    one = stats.log_interval([7.0])
    assert one.centre == pytest.approx(7.0) and math.isnan(one.low) and math.isnan(one.high)
    for bad in ([], [1.0, 0.0], [-2.0]):
        with pytest.raises(ValueError, match="geomean"):
            stats.log_interval(bad)


def test_paired_log_ratio_is_the_geometric_mean_of_per_seed_ratios():
    a, b = [2.0, 8.0, 3.0], [1.0, 4.0, 1.0]  # ratios 2, 2, 3
    r = stats.paired_log_ratio(a, b)
    assert r.centre == pytest.approx((2 * 2 * 3) ** (1 / 3))
    logs = [math.log(2), math.log(2), math.log(3)]
    m, hw, _ = stats.t_interval(logs)
    assert (r.low, r.high) == pytest.approx((math.exp(m - hw), math.exp(m + hw)))
    assert r.low < r.centre < r.high
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_log_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        stats.paired_log_ratio([1.0, 0.0], [1.0, 1.0])


@pytest.mark.parametrize(
    ("p", "n", "low", "high"),
    [
        (0.5, 100, 0.403832, 0.596168),  # textbook values
        (0.0, 10, 0.0, 0.277533),
        (1.0, 10, 0.722467, 1.0),
        (0.8, 20, 0.583983, 0.919342),  # 16/20 by hand: centre 0.751662, half-width 0.167680
    ],
)
def test_wilson_interval_matches_known_values(p: float, n: int, low: float, high: float) -> None:
    got = stats.wilson_interval(p, n)
    assert got == pytest.approx((low, high), abs=1e-6)


def test_wilson_interval_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        stats.wilson_interval(0.5, 0)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        stats.wilson_interval(1.5, 10)


@pytest.mark.parametrize(("k", "n"), [(0, 7), (3, 10), (16, 20), (500, 1000), (1000, 1000)])
def test_wilson_interval_is_scipys_for_whole_counts(k: int, n: int) -> None:
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson_interval(k / n, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_interval_takes_a_fraction_of_a_count_and_another_confidence() -> None:
    """mean@4 over 3 prompts can be 5/12: no whole count, which scipy's binomtest refuses."""
    low, high = stats.wilson_interval(5 / 12, 3)
    assert 0.0 < low < 5 / 12 < high < 1.0
    narrow = stats.wilson_interval(5 / 12, 3, confidence=0.5)
    assert low < narrow[0] < narrow[1] < high
