"""Gradient clipping rules (pure math) and the sharding-aware clipper that applies them.

Layers, each readable alone:
    rule.py / global_norm.py / aggc.py / adagc.py -- per-group norms -> scales, explicit state
    registry.py -- ``make_rule(name, **knobs)``
    grouping.py -- parameter name -> group key
    sharding.py -- which ranks sum which squares (DTensor / FSDP2 / HSDP)
    clipper.py  -- ``GradClipper``: norms, one all-reduce, rule, in-place scaling
    switch.py   -- the user-facing ``clip`` switch: names, knob blocks, override checks (no verl)
"""

from aggc_rl.clipping.adagc import AdaGCRule
from aggc_rl.clipping.aggc import AGGCRule
from aggc_rl.clipping.clipper import ClipResult, GradClipper
from aggc_rl.clipping.global_norm import GlobalNormRule
from aggc_rl.clipping.grouping import SCHEMES, Grouping, group_of
from aggc_rl.clipping.registry import RULE_NAMES, make_rule, rule_knobs
from aggc_rl.clipping.rule import ClipRule, State
from aggc_rl.clipping.switch import ACTOR_PREFIX, ClipConfig, ClipSpec, check_clip_overrides, resolve_clip

__all__ = [
    "ACTOR_PREFIX",
    "RULE_NAMES",
    "SCHEMES",
    "AGGCRule",
    "AdaGCRule",
    "ClipConfig",
    "ClipResult",
    "ClipRule",
    "ClipSpec",
    "GlobalNormRule",
    "GradClipper",
    "Grouping",
    "State",
    "check_clip_overrides",
    "group_of",
    "make_rule",
    "resolve_clip",
    "rule_knobs",
]
