"""Spike and skipped-step detection, validation picks and reward checkpoints: exact on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggc_rl.report import analysis
from aggc_rl.report.synthetic import SyntheticRun, records


def _series(values: list[float], start: int = 1) -> pd.Series:
    return pd.Series(values, index=range(start, start + len(values)), dtype=float)


def test_a_spike_needs_a_full_window_and_more_than_three_times_the_median() -> None:
    values = [1.0] * 40
    values[9] = 50.0  # step 10: only 9 earlier values, not judged
    values[20] = 3.0  # step 21: exactly 3x the median is not above it
    values[24] = 3.01  # step 25: a spike
    values[25] = 2.9  # step 26: not
    assert analysis.find_spikes(_series(values)) == [25]


def test_the_window_is_the_previous_twenty_values_not_including_the_step() -> None:
    values = [1.0] * 20 + [10.0]
    assert analysis.find_spikes(_series(values)) == [21]
    assert analysis.find_spikes(_series(values[1:])) == []  # only 19 values before it


def test_consecutive_spikes_each_count_and_do_not_lift_the_median() -> None:
    values = [1.0] * 30 + [8.0, 9.0, 10.0] + [1.0] * 5
    assert analysis.find_spikes(_series(values)) == [31, 32, 33]


def test_non_finite_norms_are_skipped_not_spikes_and_stay_out_of_the_window() -> None:
    values = [1.0] * 19 + [math.nan] + [5.0]
    assert analysis.find_spikes(_series(values)) == []  # the NaN does not complete the window
    values = [1.0] * 20 + [math.nan, math.inf, 5.0]
    assert analysis.find_spikes(_series(values)) == [23]
    metrics = {analysis.GRAD_NORM_KEY: _series(values)}
    assert analysis.skipped_steps(metrics) == [21, 22]


def test_skipped_counts_the_clip_flag_and_non_finite_norms_once() -> None:
    metrics = {
        analysis.SKIPPED_KEY: _series([0.0, 1.0, 0.0, 1.0]),
        analysis.GRAD_NORM_KEY: _series([1.0, math.nan, math.nan, 1.0]),
    }
    assert analysis.skipped_steps(metrics) == [2, 3, 4]
    assert analysis.skipped_steps({}) == []


def test_spike_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="factor=0"):
        analysis.find_spikes(_series([1.0]), factor=0)


def _naive_spikes(steps: list[int], values: list[float], factor: float, window: int) -> list[int]:
    history: list[float] = []
    found = []
    for step, value in zip(steps, values, strict=True):
        if not math.isfinite(value):
            continue
        if len(history) >= window and value > factor * float(np.median(history[-window:])):
            found.append(step)
        history.append(value)
    return found


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(0.01, 100.0), st.just(math.nan), st.just(math.inf)), min_size=0, max_size=80
    ),
    st.sampled_from([1.5, 3.0]),
    st.sampled_from([1, 5, 20]),
)
def test_find_spikes_matches_a_plain_loop(values: list[float], factor: float, window: int) -> None:
    steps = [3 * i + 1 for i in range(len(values))]  # irregular step numbers: windows count values, not steps
    series = pd.Series(values, index=steps, dtype=float)
    assert analysis.find_spikes(series, factor, window) == _naive_spikes(steps, values, factor, window)


def test_synthetic_log_spikes_and_skips_are_found_exactly() -> None:
    run = SyntheticRun(steps=150, spikes=(30, 31, 90, 149), skipped=(60, 61), seed=5)
    metrics = _metrics(records(run))
    summary = analysis.summarize("x", metrics)
    assert summary.spikes == [30, 31, 90, 149]
    assert summary.skipped == [60, 61]
    assert summary.first_step == 0 and summary.last_step == 150
    assert summary.groups == len(run.groups)


def _metrics(recs: list[tuple[int, dict]]) -> dict[str, pd.Series]:
    columns: dict[str, dict[int, float]] = {}
    for step, data in recs:
        for key, value in data.items():
            columns.setdefault(key, {})[step] = math.nan if value is None else value
    return {k: pd.Series(v, dtype=float).sort_index() for k, v in columns.items()}


def test_reward_at_fractions_reads_the_first_step_at_or_past_each_fraction() -> None:
    reward = pd.Series([0.1 * s for s in range(1, 101)], index=range(1, 101), dtype=float)
    at = analysis.value_at_fractions(reward)
    assert {f: v.step for f, v in at.items()} == {0.1: 10, 0.25: 25, 0.5: 50, 0.75: 75, 1.0: 100}
    assert at[0.25].value == pytest.approx(2.5)
    sparse = pd.Series([1.0, 2.0, 3.0], index=[4, 8, 40], dtype=float)  # logged every few steps
    assert {f: v.step for f, v in analysis.value_at_fractions(sparse).items()} == {
        0.1: 4,
        0.25: 40,
        0.5: 40,
        0.75: 40,
        1.0: 40,
    }


def test_validation_prefers_acc_per_data_source_and_final_best_ignore_nan() -> None:
    metrics = {
        "val-core/openai/gsm8k/acc/mean@1": _series([0.2, 0.6, 0.5], start=0),
        "val-core/openai/gsm8k/reward/mean@1": _series([0.0, 0.0, 0.0], start=0),
        "val-core/knights_knaves/reward/mean@4": _series([-1.0, math.nan], start=0),
        "val-aux/openai/gsm8k/acc/std@4": _series([0.1], start=0),
    }
    assert analysis.validation_keys(metrics) == [
        "val-core/knights_knaves/reward/mean@4",
        "val-core/openai/gsm8k/acc/mean@1",
    ]
    summary = analysis.summarize("x", metrics)
    final, best = summary.validation["val-core/openai/gsm8k/acc/mean@1"]
    assert (final.step, final.value, best.step, best.value) == (2, 0.5, 1, 0.6)
    final, best = summary.validation["val-core/knights_knaves/reward/mean@4"]
    assert final.step == 0 and best.value == -1.0
    assert summary.reward_key is None and all(v is None for v in summary.reward_at.values())
    assert not summary.grad_norm_logged and summary.spikes == []


def test_group_matrix_orders_groups_naturally_and_tells_gaps_from_blow_ups() -> None:
    metrics = {
        "actor/clip/norm/layers.10.q_proj": _series([1.0, 2.0]),
        "actor/clip/norm/layers.2.q_proj": pd.Series([3.0, math.nan], index=[1, 4], dtype=float),
        "actor/clip/scale/layers.2.q_proj": _series([1.0]),
    }
    groups, steps, values = analysis.group_matrix(metrics, analysis.GROUP_NORM_PREFIX)
    assert groups == ["layers.2.q_proj", "layers.10.q_proj"]
    assert steps.tolist() == [1, 2, 3, 4]
    # NaN: not logged; inf: logged but not finite.
    np.testing.assert_array_equal(values, [[3.0, np.nan, np.nan, np.inf], [1.0, 2.0, np.nan, np.nan]])


def test_binning_long_runs_keeps_one_step_extremes() -> None:
    values = np.ones((2, 5000))
    values[0, 4321] = 50.0  # a one-step norm spike
    values[1, 17] = 0.2  # a one-step hard cut
    values[1, 18] = 1.05
    values[:, 4990:] = np.nan
    binned, size = analysis.bin_columns(values, 600)
    assert size == 9 and binned.shape == (2, 556)
    assert binned[0, 4321 // 9] == 50.0 and np.nanmax(np.delete(binned[0], 4321 // 9)) == 1.0
    scales, _ = analysis.bin_columns(values, 600, around=1.0)
    assert scales[1, 17 // 9] == 0.2  # farther from 1 than 1.05 in the same bin
    assert np.isnan(binned[0, -1]) and binned[0, -2] == 1.0  # the all-NaN tail bin stays NaN
    values[1, 100] = np.inf  # a non-finite norm wins its bin over the spike-free neighbours
    assert np.isinf(analysis.bin_columns(values, 600)[0][1, 100 // 9])
    same, size = analysis.bin_columns(values[:, :600], 600)
    assert size == 1 and same is not None and same.shape == (2, 600)
