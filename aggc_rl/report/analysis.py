"""Pure functions over a run's metric Series: spikes, skipped steps, validation, reward checkpoints.

Definitions (the report's footnotes repeat them):

* **grad-norm spike**: a step whose finite ``actor/grad_norm`` exceeds ``factor`` (3) times the median
  of the previous ``window`` (20) finite logged values. A step is judged only once a full window exists
  (from the 21st finite value on), so the usual fall of the norm in the first steps is not a spike.
  Non-finite norms are never spikes (they are skipped steps) and do not enter the window; spike steps do
  (the median shrugs them off). Each spiking step counts, so a spike lasting 3 steps counts 3.
* **skipped step**: ``actor/clip/skipped`` == 1 (our clipper refused a non-finite gradient) or a
  non-finite ``actor/grad_norm`` (verl's stock engine skips those updates too).
* **validation accuracy**: ``val-core/<data_source>/acc/mean@N`` (verl's core validation metric; ``reward``
  instead of ``acc`` when the reward function returns no ``acc``).
* **reward at x% of training**: the reward at the first logged step >= x * (last step with a reward).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from aggc_rl import metrics as names

REWARD_KEYS = (names.SCORE_MEAN, names.REWARD_MEAN)
GRAD_NORM_KEY = names.GRAD_NORM.logged()
SKIPPED_KEY = names.SKIPPED.logged()
KL_KEYS = (names.KL_LOSS, names.PPO_KL)
ENTROPY_KEYS = (names.ENTROPY,)
PG_LOSS_KEYS = (names.PG_LOSS,)
GROUP_NORM_PREFIX = names.GROUP_NORM.logged_prefix
GROUP_SCALE_PREFIX = names.GROUP_SCALE.logged_prefix
FRACTIONS = (0.10, 0.25, 0.50, 0.75, 1.00)
SPIKE_FACTOR = 3.0
SPIKE_WINDOW = 20
# val-core/<data_source>/<var>/mean@N; the data source itself may contain "/" (openai/gsm8k).
_VAL_CORE = re.compile(r"^val-core/(?P<source>.+)/(?P<var>[^/]+)/mean@(?P<n>[0-9]+)$")

Metrics = Mapping[str, pd.Series]


def first_present(metrics: Metrics, keys: Sequence[str]) -> tuple[str, pd.Series] | None:
    """(key, series) of the first of ``keys`` the run logged, else None."""
    for key in keys:
        if key in metrics:
            return key, metrics[key]
    return None


def find_spikes(grad_norm: pd.Series, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> list[int]:
    """Steps where the norm exceeds ``factor`` x the median of the previous ``window`` finite values."""
    if factor <= 0 or window < 1:
        raise ValueError(f"spike factor must be > 0 and window >= 1, got factor={factor}, window={window}")
    finite = grad_norm[np.isfinite(grad_norm.to_numpy(dtype=float))].sort_index()
    baseline = finite.rolling(window, min_periods=window).median().shift(1)
    return [int(step) for step in finite.index[(finite > factor * baseline).to_numpy()]]


def skipped_steps(metrics: Metrics) -> list[int]:
    """Steps whose update was skipped: ``actor/clip/skipped`` == 1 or a non-finite ``actor/grad_norm``."""
    steps: set[int] = set()
    skipped = metrics.get(SKIPPED_KEY)
    if skipped is not None:
        steps.update(int(s) for s in skipped.index[(skipped >= 0.5).to_numpy()])
    grad_norm = metrics.get(GRAD_NORM_KEY)
    if grad_norm is not None:
        steps.update(int(s) for s in grad_norm.index[~np.isfinite(grad_norm.to_numpy(dtype=float))])
    return sorted(steps)


def validation_keys(metrics: Metrics) -> list[str]:
    """verl's core validation accuracy keys (``acc`` preferred over ``reward`` per data source), sorted."""
    by_source: dict[str, tuple[int, str]] = {}
    for key in metrics:
        match = _VAL_CORE.match(key)
        if match is None or match["var"] not in ("acc", "reward"):
            continue
        rank = 0 if match["var"] == "acc" else 1
        if match["source"] not in by_source or rank < by_source[match["source"]][0]:
            by_source[match["source"]] = (rank, key)
    return sorted(key for _, key in by_source.values())


@dataclass(frozen=True)
class StepValue:
    """A metric value and the step it was read at."""

    step: int
    value: float


def final_value(series: pd.Series) -> StepValue | None:
    """The value at the last logged step with a finite value."""
    finite = series[np.isfinite(series.to_numpy(dtype=float))]
    if finite.empty:
        return None
    return StepValue(int(finite.index[-1]), float(finite.iloc[-1]))


def best_value(series: pd.Series) -> StepValue | None:
    """The highest finite value (the earliest step on ties)."""
    finite = series[np.isfinite(series.to_numpy(dtype=float))]
    if finite.empty:
        return None
    step = finite.idxmax()
    return StepValue(int(step), float(finite.loc[step]))


def value_at_fractions(
    series: pd.Series, fractions: Sequence[float] = FRACTIONS
) -> dict[float, StepValue | None]:
    """fraction -> value at the first logged step >= fraction x last step (None when none qualifies)."""
    if series.empty:
        return dict.fromkeys(fractions)
    steps = series.index.to_numpy()
    last = steps.max()
    out: dict[float, StepValue | None] = {}
    for fraction in fractions:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction {fraction} is outside 0..1")
        at = np.nonzero(steps >= fraction * last - 1e-9)[0]
        step = int(steps[at[0]])
        out[fraction] = StepValue(step, float(series.iloc[at[0]]))
    return out


def group_names(metrics: Metrics, prefix: str) -> list[str]:
    """Group names under ``prefix`` in natural order (``layers.2`` before ``layers.10``)."""

    def natural(name: str) -> list[object]:
        return [int(part) if part.isdigit() else part for part in re.split(r"([0-9]+)", name)]

    return sorted((key[len(prefix) :] for key in metrics if key.startswith(prefix)), key=natural)


def group_matrix(metrics: Metrics, prefix: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(groups, steps, values[group, step]) over every step from the first to the last logged one.

    NaN where a group was not logged at a step; +inf where it was logged but not finite (``null``, NaN or
    inf), so a picture can tell "not logged" from "blew up".
    """
    groups = group_names(metrics, prefix)
    if not groups:
        return [], np.zeros(0, dtype=int), np.zeros((0, 0))
    series = [metrics[prefix + g] for g in groups]
    first = min(int(s.index.min()) for s in series if len(s))
    last = max(int(s.index.max()) for s in series if len(s))
    steps = np.arange(first, last + 1)
    values = np.full((len(groups), len(steps)), np.nan)
    for row, s in enumerate(series):
        logged = s.to_numpy(dtype=float)
        values[row, s.index.to_numpy(dtype=int) - first] = np.where(np.isfinite(logged), logged, np.inf)
    return groups, steps, values


def bin_columns(values: np.ndarray, max_columns: int, around: float | None = None) -> tuple[np.ndarray, int]:
    """Merge adjacent step columns into at most ``max_columns`` bins, keeping each bin's extreme value.

    A picture has fewer pixel columns than a long run has steps; plain resampling drops columns and with
    them one-step spikes. ``around=None`` keeps each bin's maximum (norms); ``around=c`` keeps the value
    farthest from ``c`` (scales, c = 1). NaN (not logged) is ignored unless the whole bin is NaN; +inf (not
    finite) wins its bin. Returns (binned values, bin size).
    """
    if max_columns < 1:
        raise ValueError(f"max_columns must be >= 1, got {max_columns}")
    groups, columns = values.shape
    size = max(1, -(-columns // max_columns))
    if size == 1:
        return values, 1
    bins = -(-columns // size)
    padded = np.full((groups, bins * size), np.nan)
    padded[:, :columns] = values
    blocks = padded.reshape(groups, bins, size)
    empty = np.all(np.isnan(blocks), axis=2)
    distance = blocks if around is None else np.abs(blocks - around)
    pick = np.argmax(np.where(np.isnan(blocks), -np.inf, distance), axis=2)
    out = np.take_along_axis(blocks, pick[..., None], axis=2)[..., 0]
    out[empty] = np.nan
    return out, size


@dataclass
class RunSummary:
    """What the report's tables say about one run."""

    label: str
    steps_logged: int
    first_step: int | None
    last_step: int | None
    reward_key: str | None
    reward_at: dict[float, StepValue | None]
    grad_norm_logged: bool
    spikes: list[int]
    skipped: list[int]
    max_grad_norm: StepValue | None
    median_grad_norm: float | None
    validation: dict[str, tuple[StepValue | None, StepValue | None]] = field(default_factory=dict)
    groups: int = 0
    #: from the log itself (aggc_rl.report.logs.RunLog): steps absent, and steps written twice (last kept)
    missing_steps: list[int] = field(default_factory=list)
    duplicate_steps: list[int] = field(default_factory=list)
    #: logged grad-norm steps, and how many of them were finite
    grad_norm_steps: int = 0
    finite_grad_norm_steps: int = 0


def summarize(
    label: str, metrics: Metrics, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW
) -> RunSummary:
    """Everything the markdown tables need, from the run's metrics alone."""
    all_steps = sorted({int(s) for series in metrics.values() for s in series.index})
    reward = first_present(metrics, REWARD_KEYS)
    grad_norm = metrics.get(GRAD_NORM_KEY)
    finite_norm = None if grad_norm is None else grad_norm[np.isfinite(grad_norm.to_numpy(dtype=float))]
    return RunSummary(
        label=label,
        steps_logged=len(all_steps),
        first_step=all_steps[0] if all_steps else None,
        last_step=all_steps[-1] if all_steps else None,
        reward_key=None if reward is None else reward[0],
        reward_at=dict.fromkeys(FRACTIONS) if reward is None else value_at_fractions(reward[1]),
        grad_norm_logged=grad_norm is not None,
        spikes=[] if grad_norm is None else find_spikes(grad_norm, factor, window),
        skipped=skipped_steps(metrics),
        max_grad_norm=None if grad_norm is None else best_value(grad_norm),
        median_grad_norm=None if finite_norm is None or finite_norm.empty else float(finite_norm.median()),
        validation={
            key: (final_value(metrics[key]), best_value(metrics[key])) for key in validation_keys(metrics)
        },
        groups=len(group_names(metrics, GROUP_NORM_PREFIX)),
        grad_norm_steps=0 if grad_norm is None else len(grad_norm),
        finite_grad_norm_steps=0 if finite_norm is None else len(finite_norm),
    )
