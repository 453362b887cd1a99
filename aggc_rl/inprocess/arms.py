"""The experiments' arms: a clip method, optionally with the step guard, plus knob settings sized to the run.

An arm becomes Hydra overrides of our primary config (``actor_rollout_ref.actor.clip=...``,
``clip_config.<method>.<knob>=...``, ``clip_config.guard.<knob>=...``), so it is built exactly as a
training run with those settings would be. Warm-ups measured in steps (AdaGC's, ZClip's) default to end
two steps before ``LabSize.fault_step`` unless an arm sets them: short GRPO runs (the proxy's learning-rate
sweep) set their own, and the lab v2 arms (:mod:`aggc_rl.lab.twins`) keep each method's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aggc_rl.clipping import RULE_NAMES
from aggc_rl.clipping.switch import ACTOR_KEY
from aggc_rl.inprocess.size import LabSize

#: The warm-up knobs (in steps) of the rules that have one.
WARMUP_KNOBS = {"adagc": "warmup", "zclip": "warmup_steps"}


@dataclass(frozen=True)
class Arm:
    """``method`` (a rule name) with ``guard`` settings (None: no guard) and extra rule ``knobs``."""

    method: str
    guard: dict[str, Any] | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    grouping: str | None = None  # None: the method's own default scheme

    @property
    def name(self) -> str:
        if not self.guard:
            return self.method
        return self.method + "+guard." + ",".join(f"{k}={v}" for k, v in sorted(self.guard.items()))

    def resolved_knobs(self, size: LabSize) -> dict[str, Any]:
        knobs = dict(self.knobs)
        if self.method in WARMUP_KNOBS:
            knobs.setdefault(WARMUP_KNOBS[self.method], max(1, size.fault_step - 2))
        return knobs

    def resolved_guard(self, size: LabSize) -> dict[str, Any] | None:
        if not self.guard:
            return None
        guard = dict(self.guard)
        # OLMo-style: the window must hold at least max(2, window // 2) earlier values before it can skip.
        guard.setdefault("window", max(4, 2 * (size.fault_step - 1)))
        return guard

    def overrides(self, size: LabSize) -> list[str]:
        if self.method not in RULE_NAMES:
            raise ValueError(f"arm {self.name}: clip method {self.method!r} unknown; allowed: {RULE_NAMES}")
        out = [f"{ACTOR_KEY}.clip={self.method}"]
        if self.grouping is not None:
            out.append(f"{ACTOR_KEY}.clip_config.grouping={self.grouping}")
        for k, v in self.resolved_knobs(size).items():
            if self.method == "global" and k == "max_norm":  # global's one knob is verl's optim.clip_grad
                out.append(f"{ACTOR_KEY}.optim.clip_grad={v}")
            else:
                out.append(f"{ACTOR_KEY}.clip_config.{self.method}.{k}={v}")
        guard = self.resolved_guard(size)
        if guard:
            out += [f"{ACTOR_KEY}.clip_config.guard.{k}={_hydra(v)}" for k, v in guard.items()]
        return out

    def describe(self, size: LabSize) -> str:
        parts = [f"clip={self.method}"] + ([f"grouping={self.grouping}"] if self.grouping else [])
        parts += [f"{k}={v}" for k, v in self.resolved_knobs(size).items()]
        guard = self.resolved_guard(size)
        if guard:
            parts += [f"guard.{k}={v}" for k, v in guard.items()]
        return " ".join(parts)


def _hydra(value: Any) -> str:
    return "null" if value is None else str(value)


#: The control every experiment compares against: no clipping, as global-norm clipping whose threshold
#: (1e30) never binds, so the arm runs through the same engine and code path as every other arm.
NONE = Arm("global", knobs={"max_norm": 1e30})

#: The default set, in report order; arms whose method is not registered are left out.
DEFAULT_ARMS: tuple[Arm, ...] = (
    Arm("global"),
    Arm("aggc"),
    Arm("aggc_official"),
    Arm("adagc"),
    Arm("zclip"),
    Arm("global", guard={"skip_sigma": 6.0}),
)


def default_arms() -> list[Arm]:
    return [a for a in DEFAULT_ARMS if a.method in RULE_NAMES]


def parse_arm(spec: str) -> Arm:
    """``method`` or ``method+guard.k=v,k=v`` (the arm's own name), e.g. ``global+guard.skip_sigma=6``."""
    method, _, rest = spec.partition("+")
    guard: dict[str, Any] = {}
    if rest:
        if not rest.startswith("guard."):
            raise ValueError(f"arm {spec!r}: expected METHOD or METHOD+guard.KNOB=VALUE[,KNOB=VALUE]")
        for item in rest[len("guard.") :].split(","):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"arm {spec!r}: guard setting {item!r} has no '='")
            guard[key] = _number(value)
    arm = Arm(method, guard or None)
    if method not in RULE_NAMES:
        raise ValueError(f"arm {spec!r}: clip method {method!r} unknown; allowed: {', '.join(RULE_NAMES)}")
    return arm


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text in ("null", "None") else text
