"""Global-norm clipping: verl's default and the baseline every adaptive rule is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from aggc_rl.clipping.rule import State, check_norms, check_progress, new_step_state, require, require_number

#: Added to the total norm before dividing, as torch.nn.utils.clip_grad_norm_ and verl do.
GLOBAL_EPS = 1e-6


def global_clip_factor(norms: torch.Tensor, max_norm: float, eps: float = GLOBAL_EPS) -> torch.Tensor:
    """min(1, max_norm / (||norms||_2 + eps)) as a 0-d tensor (no host sync)."""
    total = torch.linalg.vector_norm(norms)
    return torch.clamp(max_norm / (total + eps), max=1.0)


@dataclass(frozen=True)
class GlobalNormRule:
    """Every group scaled by min(1, max_norm / (total + 1e-6)), total = sqrt(sum n_j^2)."""

    max_norm: float = 1.0
    name: str = "global"
    default_scheme: ClassVar[str] = "module_type"

    def __post_init__(self) -> None:
        require_number(self.name, "max_norm", self.max_norm)
        require(self.max_norm > 0, self.name, "max_norm", self.max_norm, "a number > 0")

    def init(
        self, num_groups: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> State:
        del dtype
        return new_step_state(num_groups, device)

    def update(
        self, norms: torch.Tensor, state: State, *, progress: float = 0.0
    ) -> tuple[torch.Tensor, State]:
        check_progress(progress)
        check_norms(norms, norms.numel())
        factor = global_clip_factor(norms, self.max_norm)
        scales = factor.expand(norms.shape).clone()
        return scales, {"step": state["step"].to(norms.device) + 1}

    @property
    def uses_progress(self) -> bool:
        return False

    def stats(self, state: State, *, progress: float = 0.0) -> dict[str, torch.Tensor]:
        del state, progress
        return {}
