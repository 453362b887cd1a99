"""AGGC: adaptive group-wise gradient clipping (arXiv 2601.11864).

Each group's norm is pushed into a band [low * S, high * S] around the group's
own EMA S of past (scaled) norms. The band's multipliers can move linearly from
their early to their late values over training; the official code never ran
that schedule, which is why ``aggc_official`` turns it off. Rule text and
defaults: docs/algorithms.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from aggc_rl.clipping.global_norm import global_clip_factor
from aggc_rl.clipping.rule import (
    State,
    check_norms,
    check_progress,
    compute_dtype,
    new_step_state,
    require,
    require_number,
)

#: Guards the band tests and the divisions, as in the reference rule.
AGGC_EPS = 1e-12
SCHEDULES = ("linear", "none")
EMA_INITS = ("zero", "first")


@dataclass(frozen=True)
class AGGCRule:
    """Per-group band clipping against an EMA of effective norms.

    ``max_down`` floors a down-scale and ``max_up`` caps an up-scale (0 turns
    either cap off). ``ema_init="first"`` seeds the EMA with the first norm
    instead of 0. ``global_max_norm`` adds a global clip of the AGGC-scaled
    norms; the EMA still tracks the AGGC-scaled norm.
    """

    beta: float = 0.99
    low: float = 0.98
    high: float = 0.7
    low_late: float = 0.98
    high_late: float = 0.999
    switch: float = 0.6
    transition: float = 0.2
    schedule: str = "linear"
    raise_small: bool = True
    max_up: float = 1.1
    max_down: float = 0.9
    min_norm: float = 0.0
    ema_init: str = "zero"
    global_max_norm: float | None = None
    name: str = "aggc"
    default_scheme: ClassVar[str] = "module_type"

    def __post_init__(self) -> None:
        n = self.name
        for knob in ("beta", "low", "high", "low_late", "high_late", "switch", "transition"):
            require_number(n, knob, getattr(self, knob))
        for knob in ("max_up", "max_down", "min_norm"):
            require_number(n, knob, getattr(self, knob))
        require(0.0 <= self.beta < 1.0, n, "beta", self.beta, "a number in [0, 1)")
        require(self.low >= 0, n, "low", self.low, "a number >= 0")
        require(self.high >= 0, n, "high", self.high, "a number >= 0")
        # A late multiplier <= 0 means "same as the early one".
        require(0.0 <= self.switch <= 1.0, n, "switch", self.switch, "a fraction of training in [0, 1]")
        require(self.transition >= 0, n, "transition", self.transition, "a fraction of training >= 0")
        require(self.schedule in SCHEDULES, n, "schedule", self.schedule, " or ".join(map(repr, SCHEDULES)))
        require(isinstance(self.raise_small, bool), n, "raise_small", self.raise_small, "true or false")
        require(
            self.max_up == 0 or self.max_up >= 1, n, "max_up", self.max_up, "0 (uncapped) or a number >= 1"
        )
        require(0 <= self.max_down <= 1, n, "max_down", self.max_down, "0 (uncapped) or a number in (0, 1]")
        require(self.min_norm >= 0, n, "min_norm", self.min_norm, "a number >= 0")
        require(self.ema_init in EMA_INITS, n, "ema_init", self.ema_init, " or ".join(map(repr, EMA_INITS)))
        if self.global_max_norm is not None:
            require_number(n, "global_max_norm", self.global_max_norm)
            require(
                self.global_max_norm > 0, n, "global_max_norm", self.global_max_norm, "null or a number > 0"
            )

    def multipliers(self, progress: float) -> tuple[float, float]:
        """(low, high) at this point of training."""
        p = check_progress(progress)
        lo0, hi0 = self.low, self.high
        lo1 = self.low_late if self.low_late > 0 else lo0
        hi1 = self.high_late if self.high_late > 0 else hi0
        if self.schedule == "none" or p <= self.switch:
            return lo0, hi0
        if self.transition == 0 or p >= self.switch + self.transition:
            return lo1, hi1
        w = (p - self.switch) / self.transition
        return lo0 + w * (lo1 - lo0), hi0 + w * (hi1 - hi0)

    def init(
        self, num_groups: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> State:
        state = new_step_state(num_groups, device)
        state["ema"] = torch.zeros(num_groups, dtype=dtype, device=device)
        return state

    def update(
        self, norms: torch.Tensor, state: State, *, progress: float = 0.0
    ) -> tuple[torch.Tensor, State]:
        lo, hi = self.multipliers(progress)
        check_norms(norms, state["ema"].numel())
        dtype = compute_dtype(norms, state["ema"])
        n = norms.to(dtype)
        ema = state["ema"].to(device=n.device, dtype=dtype)
        step = state["step"].to(n.device)
        one = torch.ones_like(n)

        lower = torch.clamp(lo * ema, min=self.min_norm)
        upper = torch.clamp(hi * ema, min=0.0)
        # Upper test first: a group above its band is scaled down ...
        down = (upper > 0) & (n > upper + AGGC_EPS)
        scale_down = upper / (n + AGGC_EPS)
        if self.max_down > 0:
            scale_down = torch.clamp(scale_down, min=self.max_down)
        scale = torch.where(down, scale_down, one)
        # ... and only otherwise may one below its band be scaled up.
        if self.raise_small:
            up = ~down & (lower > 0) & (n < lower - AGGC_EPS)
            scale_up = torch.where(n == 0, one, lower / (n + AGGC_EPS))
            if self.max_up > 0:
                scale_up = torch.clamp(scale_up, max=self.max_up)
            scale = torch.where(up, scale_up, scale)

        new_ema = self.beta * ema + (1 - self.beta) * scale * n
        if self.ema_init == "first":
            first = step == 0
            scale = torch.where(first, one, scale)
            new_ema = torch.where(first, n, new_ema)

        if self.global_max_norm is not None:
            scale = scale * global_clip_factor(scale * n, self.global_max_norm)

        new_state = {"step": step + 1, "ema": new_ema.to(state["ema"].dtype)}
        return scale.to(norms.dtype), new_state

    @property
    def uses_progress(self) -> bool:
        return self.schedule != "none"

    def stats(self, state: State, *, progress: float = 0.0) -> dict[str, torch.Tensor]:
        low, high = self.multipliers(progress)
        ema = state["ema"]
        return {
            "ema": ema,
            # new_full fills on the device: no host-to-device copy in the step.
            "band_low": ema.new_full((), low),
            "band_high": ema.new_full((), high),
        }
