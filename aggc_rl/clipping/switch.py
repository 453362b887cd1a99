"""The ``clip`` switch users type, resolved into one validated :class:`ClipSpec` (no verl here).

Users pick a method with ``<prefix>.clip=global|aggc|...`` and tune it with
``<prefix>.clip_config.<method>.<knob>=...``; in RL the prefix is ``actor_rollout_ref.actor``. Every
block lists every knob with its default (configs/aggc_ppo_trainer.yaml), so overrides need no ``+``; only
the selected block is used. ``clip=global`` takes its max_norm from verl's own ``optim.clip_grad``.

Both the command-line check (:func:`check_clip_overrides`, before Hydra composes anything) and the verl
config classes (``verl_patches.engine.config``) use this module, so a rule name, knob or grouping is
known in exactly one place: the rules themselves (:mod:`aggc_rl.clipping.registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from aggc_rl.clipping.clipper import MISMATCH_MODES
from aggc_rl.clipping.grouping import SCHEMES
from aggc_rl.clipping.guard import GuardConfig
from aggc_rl.clipping.registry import RULE_NAMES, make_rule, rule_knobs
from aggc_rl.clipping.rule import ClipRule

#: Where the switch lives in the RL config (verl's ``actor_rollout_ref.actor``).
ACTOR_KEY = "actor_rollout_ref.actor"
CLIP_KEY = f"{ACTOR_KEY}.clip"
CLIP_CONFIG_KEY = f"{ACTOR_KEY}.clip_config"
#: Methods whose knobs live in a clip_config block (global has one knob, verl's optim.clip_grad).
BLOCK_METHODS = tuple(m for m in RULE_NAMES if m != "global")


@dataclass
class ClipConfig:
    """``clip_config``: per-method knobs, grouping, logging, the step guard and the resume policy.

    ``guard`` holds the :class:`GuardConfig` knobs as a plain block, like the method blocks, so that
    :func:`resolve_clip` can name the full key of a bad value.
    """

    grouping: str | None = (
        None  # None: the method's default (adagc: tensor, zclip: global, others: module_type)
    )
    log_per_group: bool = True  # per-group norm/scale/EMA metrics (off for huge per-tensor runs)
    aggc: dict[str, Any] = field(default_factory=lambda: rule_knobs("aggc"))
    aggc_official: dict[str, Any] = field(default_factory=lambda: rule_knobs("aggc_official"))
    aggc_lora: dict[str, Any] = field(default_factory=lambda: rule_knobs("aggc_lora"))
    adagc: dict[str, Any] = field(default_factory=lambda: rule_knobs("adagc"))
    zclip: dict[str, Any] = field(default_factory=lambda: rule_knobs("zclip"))
    guard: dict[str, Any] = field(default_factory=GuardConfig.knobs)
    resume_mismatch: str = (
        "refuse"  # or "reset": a checkpoint's clipper state for other settings starts fresh
    )


@dataclass(frozen=True)
class ClipSpec:
    """Everything an engine needs to build its clipper; validated on construction.

    ``prefix`` is the config path the settings came from, so that errors name the key users typed.
    """

    method: str
    knobs: tuple[tuple[str, Any], ...]
    grouping: str | None
    log_per_group: bool = True
    prefix: str = ACTOR_KEY
    guard: GuardConfig = field(default_factory=GuardConfig)
    resume_mismatch: str = "refuse"

    def __post_init__(self) -> None:
        self.build_rule()
        if not isinstance(self.guard, GuardConfig):
            raise TypeError(f"{self.prefix}.clip_config.guard must be a GuardConfig, got {self.guard!r}")
        if self.resume_mismatch not in MISMATCH_MODES:
            raise ValueError(
                f"{self.prefix}.clip_config.resume_mismatch={self.resume_mismatch!r} is invalid; allowed: "
                f"{', '.join(MISMATCH_MODES)}"
            )

    def build_rule(self) -> ClipRule:
        block = "optim.clip_grad" if self.method == "global" else f"clip_config.{self.method}"
        try:
            return make_rule(self.method, **dict(self.knobs))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{self.prefix}.{block}: {err}") from err


def check_method(method: str, key: str) -> None:
    """Refuse a clip method that is not registered; ``key`` is the config key it was given under."""
    if method not in RULE_NAMES:
        raise ValueError(f"{key}={method!r} is invalid; allowed: {', '.join(RULE_NAMES)}")


def resolve_clip(
    method: str, config: ClipConfig | dict | None, max_norm: float, prefix: str = ACTOR_KEY
) -> ClipSpec:
    """Turn the user's switch and blocks into a :class:`ClipSpec`, refusing anything invalid."""
    check_method(method, f"{prefix}.clip")
    if config is None:
        config = ClipConfig()
    elif isinstance(config, dict):
        # A plain copy of the composed config still carries Hydra's instantiation key.
        config = ClipConfig(**{k: v for k, v in config.items() if k != "_target_"})
    if config.grouping is not None and config.grouping not in SCHEMES:
        raise ValueError(
            f"{prefix}.clip_config.grouping={config.grouping!r} is invalid; allowed: null (the method's "
            f"default) or one of {', '.join(SCHEMES)}"
        )
    knobs = {"max_norm": max_norm} if method == "global" else dict(getattr(config, method))
    return ClipSpec(
        method,
        tuple(sorted(knobs.items())),
        config.grouping,
        bool(config.log_per_group),
        prefix,
        guard=build_guard(config.guard, prefix),
        resume_mismatch=config.resume_mismatch,
    )


def build_guard(block: GuardConfig | dict | None, prefix: str = ACTOR_KEY) -> GuardConfig:
    """The guard block as a validated :class:`GuardConfig`; errors name the full key and what is allowed."""
    if block is None:
        return GuardConfig()
    if isinstance(block, GuardConfig):
        return block
    allowed = list(GuardConfig.knobs())
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise TypeError(
            f"{prefix}.clip_config.guard has no knob {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )
    try:
        return GuardConfig(**dict(block))
    except ValueError as err:
        raise ValueError(f"{prefix}.clip_config.{err}") from err


# -- the command line, before Hydra --------------------------------------------------------------------------
# Hydra refuses an unknown key with "Key 'x' is not in struct", which names the key but not what is allowed;
# for our keys we say both, before any config is composed or worker started.


def check_clip_overrides(argv: Sequence[str], prefix: str = ACTOR_KEY) -> None:
    """Raise ValueError for an override of an unknown clip key or method."""
    clip_key, config_key = f"{prefix}.clip", f"{prefix}.clip_config"
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key == clip_key:
            check_method(value, clip_key)
        elif key.startswith(config_key + "."):
            parts = key[len(config_key) + 1 :].split(".")
            _check_clip_config_key(key, config_key, parts)
            _check_clip_config_value(key, parts, value)


def _check_clip_config_key(full_key: str, config_key: str, parts: list[str]) -> None:
    top = [f.name for f in fields(ClipConfig)]
    if parts[0] not in top:
        raise ValueError(f"unknown key {full_key!r}; allowed under {config_key}: {', '.join(top)}")
    if parts[0] in BLOCK_METHODS and len(parts) > 1:
        knobs = list(rule_knobs(parts[0]))
        if parts[1] not in knobs or len(parts) > 2:
            raise ValueError(f"unknown knob {full_key!r}; allowed for {parts[0]}: {', '.join(knobs)}")
    if parts[0] == "guard" and len(parts) > 1:
        knobs = list(GuardConfig.knobs())
        if parts[1] not in knobs or len(parts) > 2:
            raise ValueError(f"unknown knob {full_key!r}; allowed for guard: {', '.join(knobs)}")


def _check_clip_config_value(full_key: str, parts: list[str], value: str) -> None:
    if parts == ["resume_mismatch"] and value not in MISMATCH_MODES:
        raise ValueError(f"{full_key}={value!r} is invalid; allowed: {', '.join(MISMATCH_MODES)}")
