"""The contract every clipping rule follows, and the checks they share.

A rule is pure tensor math with explicit state, in the spirit of optax's
``GradientTransformation``: ``init`` builds the state, ``update`` maps this
step's per-group gradient norms to per-group scale factors and a new state.
Rules never read parameters, never communicate and never mutate their inputs,
so each one can be tested on a laptop against a few lines of reference code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

State = dict[str, torch.Tensor]


@runtime_checkable
class ClipRule(Protocol):
    """Everything a caller (the clipper, an engine, a logger) may ask of a rule; nobody probes for more.

    - ``name`` and ``default_scheme``: the preset's name and the grouping it is meant for;
    - ``uses_progress``: whether ``update`` depends on ``progress`` (then the caller must supply the real
      fraction of training done; a rule that ignores it may be given 0);
    - ``init`` / ``update``: the pure state transition;
    - ``stats``: what to log about the state after a step, as tensors on the state's device (per-group
      ones of shape ``(num_groups,)``, single values of shape ``()``), keyed by names that
      :data:`aggc_rl.metrics.RULE_STATS` knows. The clipper moves them to the host with the norms, in its
      one host transfer.
    """

    name: str
    default_scheme: ClassVar[str]

    @property
    def uses_progress(self) -> bool: ...

    def init(
        self, num_groups: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> State: ...

    def update(
        self, norms: torch.Tensor, state: State, *, progress: float = 0.0
    ) -> tuple[torch.Tensor, State]: ...

    def stats(self, state: State, *, progress: float = 0.0) -> dict[str, torch.Tensor]: ...


def knob_names(rule_cls: type) -> tuple[str, ...]:
    """The user-settable fields of a rule dataclass (``name`` is the preset, not a knob)."""
    return tuple(f.name for f in dataclasses.fields(rule_cls) if f.name != "name")


def knob_values(rule: Any) -> dict[str, Any]:
    return {k: getattr(rule, k) for k in knob_names(type(rule))}


def require(ok: bool, rule: str, knob: str, value: Any, allowed: str) -> None:
    """Raise a ValueError that names the knob, the bad value and what is allowed."""
    if not ok:
        raise ValueError(f"clip rule {rule!r}: {knob}={value!r} is invalid; allowed: {allowed}")


def require_number(rule: str, knob: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    require(ok, rule, knob, value, "a finite number")


def check_progress(progress: float) -> float:
    """``progress`` is the fraction of training done; anything outside [0, 1] is a wiring bug."""
    try:
        p = float(progress)
    except (TypeError, ValueError) as err:
        raise TypeError(f"progress={progress!r} is not a number; allowed: a float in [0, 1]") from err
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"progress={progress!r} is out of range; allowed: a float in [0, 1]")
    return p


def check_norms(norms: torch.Tensor, num_groups: int) -> None:
    if not isinstance(norms, torch.Tensor) or norms.dim() != 1 or not norms.is_floating_point():
        raise TypeError(f"norms must be a 1-D floating tensor of per-group L2 norms, got {norms!r}")
    if norms.numel() != num_groups:
        raise ValueError(f"norms has {norms.numel()} entries but the state holds {num_groups} groups")


def new_step_state(num_groups: int, device: torch.device | str | None) -> State:
    """The step counter every rule carries (int64, a 0-d tensor so updates stay on device)."""
    del num_groups
    return {"step": torch.zeros((), dtype=torch.int64, device=device)}


def compute_dtype(norms: torch.Tensor, state_value: torch.Tensor) -> torch.dtype:
    return torch.promote_types(norms.dtype, state_value.dtype)
