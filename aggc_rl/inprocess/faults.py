"""The faults the harness can inject (the fault lab picks them): what, at which optimizer step, how hard (no verl).

* ``none``: the clean reference of every arm and seed;
* ``loss_spike``: the loss of one optimizer step x ``scale`` (AdaGC's scenario: abnormal gradients
  contaminate Adam's moments);
* ``group_spike``: the gradient of one functional group (``module_type`` grouping, default ``v_proj``)
  x ``scale`` after backward, before the clipper (AGGC's spill-over scenario);
* ``reward_noise``: one step's rewards replaced by uniform random ones over the scorer's range.

The engine's kinds (:data:`ENGINE_FAULTS`) are injected by the lab-only engine (:mod:`aggc_rl.inprocess.engine`),
the batch's (``reward_noise``, ``outlier_sequence``) by the fault lab's replay (:mod:`aggc_rl.lab.replay`);
nothing in a normal training run can trigger any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The grouping every measurement uses (the functional groups of AGGC).
MEASURE_SCHEME = "module_type"

FAULT_KINDS = (
    "none", "loss_spike", "group_spike", "reward_noise", "outlier_sequence", "random_direction", "inf_group",
)  # fmt: skip
#: The fields of :class:`Fault` each kind uses (a record's other fields hold the dataclass's defaults).
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "loss_spike": ("scale", "duration"),
    "group_spike": ("group", "scale", "duration"),
    "reward_noise": (),
    "outlier_sequence": ("scale",),
    "random_direction": ("scale",),
    "inf_group": ("group",),
}
assert set(KIND_FIELDS) == set(FAULT_KINDS)
#: Faults the lab engine injects between backward and the clipper (or into the loss).
ENGINE_FAULTS = ("loss_spike", "group_spike", "random_direction", "inf_group")


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` from optimizer step ``step`` (0-based) for ``duration`` steps, ``scale`` x, on
    ``group`` (group_spike, inf_group).

    * ``outlier_sequence``: one sequence's advantages x ``scale`` (a single outlier sample; lab v2 replay);
    * ``random_direction``: a random gradient of ``scale`` x the step's gradient norm added to it;
    * ``inf_group``: one element of ``group``'s gradient set to inf (a bf16 overflow);
    * ``duration`` > 1 repeats an engine fault on consecutive steps (a sustained drift, e.g. a group x5 for 20);
    * ``seed``: the random draws' seed (random_direction's noise), so seeds are independent draws of the fault.
    """

    kind: str
    step: int
    scale: float = 100.0
    group: str = "v_proj"
    duration: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault {self.kind!r} is unknown; allowed: {', '.join(FAULT_KINDS)}")
        if self.step < 1:
            raise ValueError(f"fault step {self.step} must be >= 1 (step 0 has no clean history)")
        if self.duration < 1:
            raise ValueError(f"fault duration {self.duration} must be >= 1")

    @property
    def in_engine(self) -> bool:
        return self.kind in ENGINE_FAULTS

    def active(self, step: int) -> bool:
        return self.step <= step < self.step + self.duration


def describe(fault: dict) -> str:
    """A recorded fault (``dataclasses.asdict``) with the fields its kind uses, its step counted from 1 as the
    plan says: ``loss_spike at optimizer step 151 (scale 100, duration 1)`` for the record of step 150."""
    fields = ", ".join(f"{k} {fault[k]:g}" if isinstance(fault[k], float) else f"{k} {fault[k]}"
                       for k in KIND_FIELDS[fault["kind"]])  # fmt: skip
    return f"`{fault['kind']}` at optimizer step {fault['step'] + 1}" + (f" ({fields})" if fields else "")
