"""ZClip: z-score clipping against running statistics of the norm (arXiv 2504.02507).

The official ZClip watches one number, the total gradient norm. Here every group is an independent
ZClip: under the default grouping ``global`` there is one group, the total, and the rule is the
official one; under any other grouping each group keeps its own mean, variance and warm-up buffer
(per-group ZClip, which the official code does not offer). Rule text and defaults: docs/algorithms.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from aggc_rl.clipping.rule import (
    State,
    check_norms,
    check_progress,
    compute_dtype,
    new_step_state,
    require,
    require_number,
)

MODES = ("zscore", "percentile")
CLIP_OPTIONS = ("adaptive_scaling", "mean")
#: Added to the norm before dividing when a group is scaled to its clip value (as the official code).
ZCLIP_SCALE_EPS = 1e-6


@dataclass(frozen=True)
class ZClipRule:
    """Per-group ZClip with the official knobs and defaults.

    - ``warmup_steps`` updates fill a buffer of norms (only ``max_grad_norm`` clips then); at the last of
      them the mean and the population variance of the buffer start the running statistics.
    - ``mode="zscore"``: with ``z = (n - mean) / (std + eps)``, a spike is ``z > z_thresh``; its threshold is
      ``(mean + z_thresh * std / (z / z_thresh)) * clip_factor`` (``clip_option="adaptive_scaling"``) or
      ``mean`` (``clip_option="mean"``).
    - ``mode="percentile"``: a spike is ``n > mean + z_thresh * std``, and that sum is its threshold.
    - the clip value is the threshold on a spike, else ``n``, capped at ``max_grad_norm`` (null: no cap);
      a group above its clip value is scaled by ``clip / (n + 1e-6)``.
    - the statistics then take the threshold (on a spike) or ``n``: ``mean <- alpha*mean + (1-alpha)*x``,
      ``var <- alpha*var + (1-alpha)*(x - mean)^2`` with the new mean; ``skip_update_on_spike`` leaves
      them unchanged on a spike.
    """

    alpha: float = 0.97
    z_thresh: float = 2.5
    max_grad_norm: float | None = 1.0
    eps: float = 1e-6
    warmup_steps: int = 25
    mode: str = "zscore"
    clip_option: str = "adaptive_scaling"
    clip_factor: float = 1.0
    skip_update_on_spike: bool = False
    name: str = "zclip"
    default_scheme: ClassVar[str] = "global"

    def __post_init__(self) -> None:
        n = self.name
        for knob in ("alpha", "z_thresh", "eps", "clip_factor"):
            require_number(n, knob, getattr(self, knob))
        require(0.0 <= self.alpha < 1.0, n, "alpha", self.alpha, "a number in [0, 1)")
        require(self.z_thresh > 0, n, "z_thresh", self.z_thresh, "a number > 0")
        require(self.eps > 0, n, "eps", self.eps, "a number > 0")
        require(self.clip_factor > 0, n, "clip_factor", self.clip_factor, "a number > 0")
        ok_int = isinstance(self.warmup_steps, int) and not isinstance(self.warmup_steps, bool)
        require(
            ok_int and self.warmup_steps >= 1,
            n,
            "warmup_steps",
            self.warmup_steps,
            "an integer number of updates >= 1",
        )
        require(self.mode in MODES, n, "mode", self.mode, " or ".join(map(repr, MODES)))
        require(
            self.clip_option in CLIP_OPTIONS,
            n,
            "clip_option",
            self.clip_option,
            " or ".join(map(repr, CLIP_OPTIONS)),
        )
        require(
            isinstance(self.skip_update_on_spike, bool),
            n,
            "skip_update_on_spike",
            self.skip_update_on_spike,
            "true or false",
        )
        if self.max_grad_norm is not None:
            ok = (
                isinstance(self.max_grad_norm, (int, float))
                and not isinstance(self.max_grad_norm, bool)
                and self.max_grad_norm == self.max_grad_norm
                and 0 < self.max_grad_norm < float("inf")
            )
            require(ok, n, "max_grad_norm", self.max_grad_norm, "null (no cap) or a finite number > 0")

    def init(
        self, num_groups: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> State:
        state = new_step_state(num_groups, device)
        state["buffer"] = torch.zeros(self.warmup_steps, num_groups, dtype=dtype, device=device)
        state["mean"] = torch.zeros(num_groups, dtype=dtype, device=device)
        state["var"] = torch.zeros(num_groups, dtype=dtype, device=device)
        return state

    def _cap(self, clip: torch.Tensor) -> torch.Tensor:
        return clip if self.max_grad_norm is None else torch.clamp(clip, max=self.max_grad_norm)

    def update(
        self, norms: torch.Tensor, state: State, *, progress: float = 0.0
    ) -> tuple[torch.Tensor, State]:
        check_progress(progress)
        check_norms(norms, state["mean"].numel())
        dtype = compute_dtype(norms, state["mean"])
        n = norms.to(dtype)
        buffer = state["buffer"].to(device=n.device, dtype=dtype)
        mean = state["mean"].to(device=n.device, dtype=dtype)
        var = state["var"].to(device=n.device, dtype=dtype)
        t = state["step"].to(n.device) + 1  # this update's 1-based index
        one = torch.ones_like(n)
        warm = t <= self.warmup_steps

        # Warm-up: record n in row t-1 of the buffer; the last warm-up update starts the statistics.
        row = torch.clamp(t - 1, max=self.warmup_steps - 1).reshape(1)
        kept = buffer.index_select(0, row)
        new_buffer = buffer.index_copy(0, row, torch.where(warm, n.unsqueeze(0), kept))
        start_mean = new_buffer.mean(dim=0)
        start_var = (new_buffer - start_mean).square().mean(dim=0)
        if self.max_grad_norm is None:
            warm_scale = one
        else:
            warm_scale = torch.clamp(self.max_grad_norm / (n + ZCLIP_SCALE_EPS), max=1.0)

        # After warm-up: detect a spike and pick its threshold.
        std = var.sqrt()
        if self.mode == "zscore":
            z = (n - mean) / (std + self.eps)
            spike = z > self.z_thresh
            if self.clip_option == "adaptive_scaling":
                threshold = (mean + self.z_thresh * std / (z / self.z_thresh)) * self.clip_factor
            else:
                threshold = mean
        else:
            threshold = mean + self.z_thresh * std
            spike = n > threshold
        clip = self._cap(torch.where(spike, threshold, n))
        scale_after = torch.where(n > clip, clip / (n + ZCLIP_SCALE_EPS), one)
        x = torch.where(spike, threshold, n)
        mean_after = self.alpha * mean + (1 - self.alpha) * x
        var_after = self.alpha * var + (1 - self.alpha) * (x - mean_after).square()
        if self.skip_update_on_spike:
            mean_after = torch.where(spike, mean, mean_after)
            var_after = torch.where(spike, var, var_after)

        starts = t == self.warmup_steps
        new_mean = torch.where(warm, torch.where(starts, start_mean, mean), mean_after)
        new_var = torch.where(warm, torch.where(starts, start_var, var), var_after)
        scale = torch.where(warm, warm_scale, scale_after)
        keep = state["mean"].dtype
        new_state = {
            "step": t,
            "buffer": new_buffer.to(state["buffer"].dtype),
            "mean": new_mean.to(keep),
            "var": new_var.to(keep),
        }
        return scale.to(norms.dtype), new_state

    @property
    def uses_progress(self) -> bool:
        return False

    def stats(self, state: State, *, progress: float = 0.0) -> dict[str, torch.Tensor]:
        del progress
        return {"ema": state["mean"], "std": state["var"].sqrt()}
