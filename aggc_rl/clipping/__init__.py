"""Gradient clipping rules (pure math) and the sharding-aware clipper that applies them.

Layers, each readable alone:
    rule.py / global_norm.py / aggc.py / adagc.py / zclip.py -- per-group norms -> scales, explicit state
    registry.py -- ``make_rule(name, **knobs)``
    grouping.py -- parameter name -> group key
    sharding.py -- which ranks sum which squares (DTensor / FSDP2 / HSDP)
    guard.py    -- the step guard: skip a non-finite or spiking step, stop after too many in a row
    clipper.py  -- ``GradClipper``: norms, one all-reduce, rule, guard, in-place scaling
    switch.py   -- the user-facing ``clip`` switch: names, knob blocks, override checks (no verl)

The exact semantics of every rule and of the guard: docs/algorithms.md.
"""

from aggc_rl.clipping.adagc import AdaGCRule
from aggc_rl.clipping.aggc import AGGCRule
from aggc_rl.clipping.clipper import ClipResult, ClipStateDamaged, ClipStateMismatch, GradClipper
from aggc_rl.clipping.global_norm import GlobalNormRule
from aggc_rl.clipping.grouping import SCHEMES, Grouping, group_of
from aggc_rl.clipping.guard import GuardConfig, SkippedStepsError
from aggc_rl.clipping.registry import RULE_NAMES, make_rule, rule_knobs
from aggc_rl.clipping.rule import ClipRule, State
from aggc_rl.clipping.switch import ACTOR_KEY, ClipConfig, ClipSpec, check_clip_overrides, resolve_clip
from aggc_rl.clipping.zclip import ZClipRule

__all__ = [
    "ACTOR_KEY",
    "RULE_NAMES",
    "SCHEMES",
    "AGGCRule",
    "AdaGCRule",
    "ClipConfig",
    "ClipResult",
    "ClipRule",
    "ClipSpec",
    "ClipStateDamaged",
    "ClipStateMismatch",
    "GlobalNormRule",
    "GradClipper",
    "Grouping",
    "GuardConfig",
    "SkippedStepsError",
    "State",
    "ZClipRule",
    "check_clip_overrides",
    "group_of",
    "make_rule",
    "resolve_clip",
    "rule_knobs",
]
