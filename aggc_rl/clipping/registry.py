"""Rule names users type (``actor_rollout_ref.actor.clip=...``) and their construction."""

from __future__ import annotations

from typing import Any

from aggc_rl.clipping.adagc import AdaGCRule
from aggc_rl.clipping.aggc import AGGCRule
from aggc_rl.clipping.global_norm import GlobalNormRule
from aggc_rl.clipping.rule import ClipRule, knob_names
from aggc_rl.clipping.zclip import ZClipRule

#: name -> (rule class, preset knob values that differ from the class defaults)
PRESETS: dict[str, tuple[type, dict[str, Any]]] = {
    "global": (GlobalNormRule, {}),
    "aggc": (AGGCRule, {}),
    # What the official GRPO run did in practice: its schedule never ran.
    "aggc_official": (AGGCRule, {"schedule": "none"}),
    # The official LoRA scripts' knobs (AGGC's SFT recipe); unlike its GRPO run, the schedule runs.
    "aggc_lora": (
        AGGCRule,
        {
            "beta": 0.95,
            "low": 0.95,
            "low_late": 0.98,
            "high": 0.6,
            "high_late": 0.7,
            "switch": 0.4,
            "transition": 0.3,
            "min_norm": 0.01,
            "raise_small": False,
        },
    ),
    "adagc": (AdaGCRule, {}),
    "zclip": (ZClipRule, {}),
}
RULE_NAMES = tuple(PRESETS)


def rule_knobs(name: str) -> dict[str, Any]:
    """The knobs of a preset with their default values (for docs and config validation)."""
    cls, preset = _preset(name)
    defaults = cls.__dataclass_fields__
    return {k: preset.get(k, defaults[k].default) for k in knob_names(cls)}


def make_rule(name: str, /, **overrides: Any) -> ClipRule:
    """Build the rule called ``name`` with some knobs overridden.

    Unknown names and knobs raise (naming what is allowed); invalid values are
    refused by the rule itself.
    """
    cls, preset = _preset(name)
    allowed = knob_names(cls)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise TypeError(
            f"clip rule {name!r} has no knob {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )
    return cls(**{**preset, **overrides, "name": name})


def _preset(name: str) -> tuple[type, dict[str, Any]]:
    if name not in PRESETS:
        raise ValueError(f"unknown clip rule {name!r}; allowed: {', '.join(RULE_NAMES)}")
    return PRESETS[name]
