"""The sizes of one in-process GRPO run through the lab engine, in a module of their own: the arms, the engine
config and the loops (the fault lab's replay, the proxy's GRPO and SFT) all read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabSize:
    """Sizes of one run: the engine's total steps (the lr schedule and the rules' progress), the batch, the lr."""

    steps: int = 8  # optimizer steps per run
    fault_step: int = 3  # 0-based step the fault hits (steps before it are identical in every fault)
    prompts: int = 4  # puzzles per step
    samples: int = 4  # responses per puzzle (the GRPO group)
    response_length: int = 40
    lr: float = 1e-3
    people: int = 2  # inhabitants per puzzle

    def check(self) -> None:
        if not 1 <= self.fault_step < self.steps:
            raise ValueError(f"fault_step={self.fault_step} must be in [1, steps={self.steps})")
        if self.samples < 2:
            raise ValueError("samples must be >= 2 (GRPO normalises within a prompt's group)")
