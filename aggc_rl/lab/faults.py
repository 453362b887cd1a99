"""The faults the lab injects: what, at which optimizer step, how hard (no verl here).

* ``none``: the clean reference of every arm and seed;
* ``loss_spike``: the loss of one optimizer step x ``scale`` (AdaGC's scenario: abnormal gradients
  contaminate Adam's moments);
* ``group_spike``: the gradient of one functional group (``module_type`` grouping, default ``v_proj``)
  x ``scale`` after backward, before the clipper (AGGC's spill-over scenario);
* ``reward_noise``: one step's rewards replaced by uniform random ones over the scorer's range.

The first two are injected by the lab-only engine (:mod:`aggc_rl.lab.engine`), the last by the lab's
loop (:mod:`aggc_rl.lab.loop`); nothing in a normal training run can trigger any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The grouping every measurement uses (the functional groups of AGGC).
MEASURE_SCHEME = "module_type"

FAULT_KINDS = ("none", "loss_spike", "group_spike", "reward_noise")


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` at optimizer step ``step`` (0-based), ``scale`` x, on ``group`` (group_spike)."""

    kind: str
    step: int
    scale: float = 100.0
    group: str = "v_proj"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault {self.kind!r} is unknown; allowed: {', '.join(FAULT_KINDS)}")
        if self.step < 1:
            raise ValueError(f"fault step {self.step} must be >= 1 (step 0 has no clean history)")

    @property
    def in_engine(self) -> bool:
        return self.kind in ("loss_spike", "group_spike")
