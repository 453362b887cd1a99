"""AdaGC: adaptive per-tensor clipping (arXiv 2502.11034).

A warm-up of ordinary global clipping records each group's smallest positive clipped
norm; afterwards a group is cut only when its norm exceeds ``lambda_rel`` times an EMA
of its own capped norms. A zero norm is no evidence: a group gets its threshold from its
first positive norm and is never clipped before it has one. Rule text and defaults:
docs/algorithms.md.
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


@dataclass(frozen=True)
class AdaGCRule:
    """Per-group (by default per-tensor) threshold ``lambda_rel * gamma``.

    ``warmup`` counts updates of global clipping at ``lambda_abs``; ``gamma`` is the
    running minimum of the positive clipped norms seen so far. After warm-up a group
    with norm ``n`` is scaled by ``t / (n + eps)`` only when ``n > t = lambda_rel * gamma``,
    and ``gamma`` moves towards ``min(n, t)``. ``gamma == 0`` means "no threshold yet":
    such a group is not clipped, and its first positive norm becomes its ``gamma``
    (so with ``warmup=0`` the first update has scale 1). A zero norm leaves ``gamma``
    unchanged at every step.
    """

    lambda_rel: float = 1.04
    beta: float = 0.99
    warmup: int = 100
    lambda_abs: float = 1.0
    eps: float = 1e-6
    name: str = "adagc"
    default_scheme: ClassVar[str] = "tensor"

    def __post_init__(self) -> None:
        n = self.name
        for knob in ("lambda_rel", "beta", "lambda_abs", "eps"):
            require_number(n, knob, getattr(self, knob))
        require(self.lambda_rel > 0, n, "lambda_rel", self.lambda_rel, "a number > 0")
        require(0.0 <= self.beta < 1.0, n, "beta", self.beta, "a number in [0, 1)")
        ok_int = isinstance(self.warmup, int) and not isinstance(self.warmup, bool)
        require(ok_int and self.warmup >= 0, n, "warmup", self.warmup, "an integer number of updates >= 0")
        require(self.lambda_abs > 0, n, "lambda_abs", self.lambda_abs, "a number > 0")
        require(self.eps > 0, n, "eps", self.eps, "a number > 0")

    def init(
        self, num_groups: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> State:
        state = new_step_state(num_groups, device)
        state["gamma"] = torch.zeros(num_groups, dtype=dtype, device=device)
        return state

    def update(
        self, norms: torch.Tensor, state: State, *, progress: float = 0.0
    ) -> tuple[torch.Tensor, State]:
        check_progress(progress)
        check_norms(norms, state["gamma"].numel())
        dtype = compute_dtype(norms, state["gamma"])
        n = norms.to(dtype)
        gamma = state["gamma"].to(device=n.device, dtype=dtype)
        t = state["step"].to(n.device) + 1  # this update's 1-based index
        one = torch.ones_like(n)
        evidence = n > 0  # a zero norm says nothing about the tensor's scale
        has_threshold = gamma > 0

        # Warm-up: global clip at lambda_abs; gamma = running min of the positive clipped norms.
        global_factor = global_clip_factor(n, self.lambda_abs, eps=self.eps)
        clipped = global_factor * n
        seeded_min = torch.where(has_threshold, torch.minimum(gamma, clipped), clipped)
        gamma_warm = torch.where(evidence, seeded_min, gamma)

        # After warm-up: cut only above the threshold; the EMA takes the capped norm min(n, t).
        threshold = self.lambda_rel * gamma
        cut = has_threshold & (n > threshold)
        h = torch.where(cut, threshold / (n + self.eps), one)
        ema = self.beta * gamma + (1 - self.beta) * torch.minimum(n, threshold)
        gamma_post = torch.where(evidence, torch.where(has_threshold, ema, n), gamma)

        warm = t <= self.warmup
        scale = torch.where(warm, global_factor.expand_as(n), h)
        new_gamma = torch.where(warm, gamma_warm, gamma_post)
        return scale.to(norms.dtype), {"step": t, "gamma": new_gamma.to(state["gamma"].dtype)}

    @property
    def uses_progress(self) -> bool:
        return False

    def stats(self, state: State, *, progress: float = 0.0) -> dict[str, torch.Tensor]:
        del progress
        return {"ema": state["gamma"]}
