"""Gradient clipping rules (pure math) and the sharding-aware clipper that applies them.

Layers, each readable alone:
    rule.py / global_norm.py / aggc.py / adagc.py -- per-group norms -> scales, explicit state
    registry.py -- ``make_rule(name, **knobs)``
    grouping.py -- parameter name -> group key
    sharding.py -- which ranks sum which squares (DTensor / FSDP2 / HSDP)
    clipper.py  -- ``GradClipper``: norms, one all-reduce, rule, in-place scaling
"""

from aggc_rl.clipping.adagc import AdaGCRule
from aggc_rl.clipping.aggc import AGGCRule
from aggc_rl.clipping.clipper import ClipResult, GradClipper
from aggc_rl.clipping.global_norm import GlobalNormRule
from aggc_rl.clipping.grouping import SCHEMES, Grouping, group_of
from aggc_rl.clipping.registry import RULE_NAMES, make_rule, rule_knobs
from aggc_rl.clipping.rule import ClipRule, State

__all__ = [
    "RULE_NAMES",
    "SCHEMES",
    "AGGCRule",
    "AdaGCRule",
    "ClipResult",
    "ClipRule",
    "GlobalNormRule",
    "GradClipper",
    "Grouping",
    "State",
    "group_of",
    "make_rule",
    "rule_knobs",
]
