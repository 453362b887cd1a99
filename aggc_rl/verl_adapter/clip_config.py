"""The ``actor_rollout_ref.actor.clip`` switch and its knob blocks, resolved into one validated spec.

Users pick a method with ``actor_rollout_ref.actor.clip=global|aggc|aggc_official|adagc`` and tune it
with ``actor_rollout_ref.actor.clip_config.<method>.<knob>=...``. Every block lists every knob with its
default (see configs/aggc_ppo_trainer.yaml), so overrides need no ``+``; only the selected block is used.
``clip=global`` takes its max_norm from verl's own ``actor_rollout_ref.actor.optim.clip_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aggc_rl.clipping import RULE_NAMES, SCHEMES, ClipRule, make_rule, rule_knobs

CLIP_KEY = "actor_rollout_ref.actor.clip"
CLIP_CONFIG_KEY = "actor_rollout_ref.actor.clip_config"
#: Methods whose knobs live in a clip_config block (global has one knob, verl's optim.clip_grad).
BLOCK_METHODS = tuple(m for m in RULE_NAMES if m != "global")


@dataclass
class ClipConfig:
    """``actor_rollout_ref.actor.clip_config``: per-method knobs, grouping and logging."""

    grouping: str | None = None  # None: the method's default (adagc: tensor, others: module_type)
    log_per_group: bool = True  # per-group norm/scale/EMA metrics (off for huge per-tensor runs)
    aggc: dict[str, Any] = field(default_factory=lambda: rule_knobs("aggc"))
    aggc_official: dict[str, Any] = field(default_factory=lambda: rule_knobs("aggc_official"))
    adagc: dict[str, Any] = field(default_factory=lambda: rule_knobs("adagc"))


@dataclass(frozen=True)
class ClipSpec:
    """Everything the engine needs to build its clipper; validated on construction."""

    method: str
    knobs: tuple[tuple[str, Any], ...]
    grouping: str | None
    log_per_group: bool = True

    def __post_init__(self) -> None:
        self.build_rule()

    def build_rule(self) -> ClipRule:
        block = "optim.clip_grad" if self.method == "global" else f"clip_config.{self.method}"
        try:
            return make_rule(self.method, **dict(self.knobs))
        except (TypeError, ValueError) as err:
            raise type(err)(f"actor_rollout_ref.actor.{block}: {err}") from err


def resolve_clip(method: str, config: ClipConfig | dict | None, max_norm: float) -> ClipSpec:
    """Turn the user's switch and blocks into a :class:`ClipSpec`, refusing anything invalid."""
    if method not in RULE_NAMES:
        raise ValueError(f"{CLIP_KEY}={method!r} is invalid; allowed: {', '.join(RULE_NAMES)}")
    if config is None:
        config = ClipConfig()
    elif isinstance(config, dict):
        config = ClipConfig(**config)
    if config.grouping is not None and config.grouping not in SCHEMES:
        raise ValueError(
            f"{CLIP_CONFIG_KEY}.grouping={config.grouping!r} is invalid; allowed: null (the method's default) "
            f"or one of {', '.join(SCHEMES)}"
        )
    knobs = {"max_norm": max_norm} if method == "global" else dict(getattr(config, method))
    return ClipSpec(method, tuple(sorted(knobs.items())), config.grouping, bool(config.log_per_group))
