"""The sizes of one lab run, in a module of their own: the arms and the run loop both read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabSize:
    """Sizes of one lab run (``--quick`` and the CI test shrink these)."""

    steps: int = 8  # optimizer steps per run
    fault_step: int = 3  # 0-based step the fault hits (steps before it are identical in every fault)
    prompts: int = 4  # puzzles per step
    samples: int = 4  # responses per puzzle (the GRPO group)
    response_length: int = 40
    lr: float = 1e-3
    people: int = 2  # inhabitants per puzzle
    probe: int = 8  # probe prompts for the KL at the fault step
    eval_prompts: int = 16  # held-out puzzles for the final greedy accuracy
    warm_start_steps: int = 100  # supervised steps of the tiny policy (ignored with a real model)
    compact: bool = True  # the lab's compact prompt (False: the project's system prompt; real models)

    def check(self) -> None:
        if not 1 <= self.fault_step < self.steps:
            raise ValueError(f"fault_step={self.fault_step} must be in [1, steps={self.steps})")
        if self.samples < 2:
            raise ValueError("samples must be >= 2 (GRPO normalises within a prompt's group)")
