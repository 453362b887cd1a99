"""The step guard: skip a bad update instead of shrinking it, and stop a run that only skips.

Composed into :class:`aggc_rl.clipping.GradClipper` (``guard=GuardConfig(...)``), so it works with every rule.
It decides on the host, from the total norm the clipper already moved there (no extra device sync):

- a non-finite group norm always skips the step (reason ``non_finite``);
- ``skip_above``: the pre-clip total norm is above this value (reason ``above``, Megatron-LM's threshold);
- ``skip_sigma``: the total is more than ``skip_sigma`` standard deviations above the mean of the previous
  totals in the window (reason ``sigma``; the test starts once the window holds ``max(2, window // 2)``
  values, as OLMo-core's ``SkipStepOptimizer``);
- ``max_consecutive_skips`` skipped steps in a row (for any reason) stop training with
  :class:`SkippedStepsError` (0: never stop).

The guard's state (the window and the counters) is plain host data, saved with the clipper's state and
restored exactly. Full semantics: docs/algorithms.md ("The step guard").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

NON_FINITE = "non_finite"
ABOVE = "above"
SIGMA = "sigma"
REASONS = (NON_FINITE, ABOVE, SIGMA)
#: The window's standard deviation is floored at this fraction of its mean: a window of identical norms
#: (std 0) would otherwise call any larger norm an infinite z-score.
STD_FLOOR = 1e-3


class SkippedStepsError(RuntimeError):
    """Too many optimizer steps in a row were skipped: training would go on without learning anything."""


def _positive_number_or_none(value: Any) -> bool:
    if value is None:
        return True
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok and math.isfinite(value) and value > 0


def _int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


@dataclass(frozen=True)
class GuardConfig:
    """``clip_config.guard``: both spike tests off by default; the stop after 10 skips in a row on."""

    skip_above: float | None = None
    skip_sigma: float | None = None
    window: int = 128
    max_consecutive_skips: int = 10

    def __post_init__(self) -> None:
        checks = (
            ("skip_above", _positive_number_or_none(self.skip_above), "null (off) or a finite number > 0"),
            ("skip_sigma", _positive_number_or_none(self.skip_sigma), "null (off) or a finite number > 0"),
            ("window", _int_at_least(self.window, 2), "an integer number of steps >= 2"),
            (
                "max_consecutive_skips",
                _int_at_least(self.max_consecutive_skips, 0),
                "an integer >= 0 (0: never stop)",
            ),
        )
        for knob, ok, allowed in checks:
            if not ok:
                raise ValueError(f"guard.{knob}={getattr(self, knob)!r} is invalid; allowed: {allowed}")

    @property
    def min_history(self) -> int:
        """How many previous totals the sigma test needs before it starts."""
        return max(2, self.window // 2)

    @classmethod
    def knobs(cls) -> dict[str, Any]:
        """Knob names and defaults (the yaml block lists exactly these)."""
        return {f.name: f.default for f in fields(cls)}


#: What a clipper without a guard does: never skips for size, never stops (counters are still kept).
NO_GUARD = GuardConfig(max_consecutive_skips=0)


@dataclass
class GuardState:
    """The guard's memory: previous totals (oldest first) and the skip counters."""

    window: list[float] = field(default_factory=list)
    calls: int = 0  # clip_ calls seen (taken and skipped optimizer steps)
    consecutive: int = 0  # skipped steps in a row, up to now
    non_finite_total: int = 0  # steps skipped because a norm was not finite
    spike_total: int = 0  # steps skipped by skip_above / skip_sigma

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": torch.tensor(self.window, dtype=torch.float64),
            "calls": self.calls,
            "consecutive": self.consecutive,
            "non_finite_total": self.non_finite_total,
            "spike_total": self.spike_total,
        }

    @classmethod
    def from_state_dict(cls, saved: dict[str, Any], config: GuardConfig) -> GuardState:
        """Restore a saved guard state; a shorter window than the saved one keeps the newest values."""
        window = [float(v) for v in saved["window"].tolist()][-config.window :]
        return cls(
            window=window,
            calls=int(saved["calls"]),
            consecutive=int(saved["consecutive"]),
            non_finite_total=int(saved["non_finite_total"]),
            spike_total=int(saved["spike_total"]),
        )


@dataclass(frozen=True)
class GuardDecision:
    reasons: tuple[str, ...]  # empty: take the step
    z: float | None  # the total's z-score against the window (None until the window is ready)

    @property
    def skip(self) -> bool:
        return bool(self.reasons)


def window_z(window: list[float], total: float, config: GuardConfig) -> float | None:
    """(total - mean) / std over the previous totals (sample std, floored), or None before the window is ready."""
    if len(window) < config.min_history or not math.isfinite(total):
        return None
    values = torch.tensor(window, dtype=torch.float64)
    std, mean = torch.std_mean(values)
    spread = max(float(std), STD_FLOOR * abs(float(mean)), 1e-300)
    return (total - float(mean)) / spread


def decide(
    config: GuardConfig, state: GuardState, total: float, finite: bool
) -> tuple[GuardDecision, GuardState]:
    """Whether to skip this step, and the guard state after it (pure: ``state`` is not modified)."""
    z = window_z(state.window, total, config) if finite else None
    reasons: list[str] = []
    if not finite:
        reasons.append(NON_FINITE)
    else:
        if config.skip_above is not None and total > config.skip_above:
            reasons.append(ABOVE)
        if config.skip_sigma is not None and z is not None and z > config.skip_sigma:
            reasons.append(SIGMA)
    window = list(state.window)
    if finite and total > 0:  # a zero total (no gradient) says nothing about the norm's scale
        window = [*window, total][-config.window :]
    skip = bool(reasons)
    new_state = GuardState(
        window=window,
        calls=state.calls + 1,
        consecutive=state.consecutive + 1 if skip else 0,
        non_finite_total=state.non_finite_total + (not finite),
        spike_total=state.spike_total + (finite and skip),
    )
    return GuardDecision(tuple(reasons), z), new_state


def stop_message(
    config: GuardConfig, state: GuardState, reasons: tuple[str, ...], total: float, bad_groups: list[str]
) -> str:
    """The error of a run stopped by ``max_consecutive_skips``: the step, the reason, the non-finite groups."""
    bad = ", ".join(bad_groups) if bad_groups else "none"
    return (
        f"{state.consecutive} optimizer steps in a row were skipped (guard.max_consecutive_skips="
        f"{config.max_consecutive_skips}); the last, optimizer step {state.calls}, was skipped because "
        f"{' and '.join(_describe(r, config) for r in reasons)} (total norm {total:.6g}; groups with "
        f"non-finite norms: {bad}). Training stops instead of training on nothing; {_advice(reasons)}, or set "
        "guard.max_consecutive_skips=0 to never stop."
    )


def _advice(reasons: tuple[str, ...]) -> str:
    """What to look at for these reasons: a threshold only helps against the skips it caused."""
    if NON_FINITE in reasons:
        # No threshold lets a NaN/inf gradient through: the cause is upstream of the clip.
        return (
            "a non-finite gradient is not a threshold problem: look for its source (the loss and its "
            "coefficients, the learning rate, the data of these steps, bf16/fp16 overflow)"
        )
    knobs = [
        f"guard.{knob}"
        for reason, knob in ((ABOVE, "skip_above"), (SIGMA, "skip_sigma"))
        if reason in reasons
    ]
    return f"look at the data and the learning rate of these steps, or raise {' / '.join(knobs)}"


def _describe(reason: str, config: GuardConfig) -> str:
    if reason == NON_FINITE:
        return "a gradient norm was not finite"
    if reason == ABOVE:
        return f"the total norm was above guard.skip_above={config.skip_above}"
    return f"the total norm was more than guard.skip_sigma={config.skip_sigma} standard deviations above the window"
