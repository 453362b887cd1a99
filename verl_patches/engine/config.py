"""The RL actor config that carries the clip switch to the ``aggc_fsdp2`` engine (written for verl 0.9.1).

verl converts ``actor_rollout_ref.actor`` into ``FSDPActorConfig`` (unknown keys are rejected) and hands
only ``actor.engine`` / ``actor.optim`` to the engine, so :class:`ClipActorConfig` adds the user-facing
``clip`` / ``clip_config`` keys, validates them where the config is built (in the driver before Ray
starts, and in every worker), and attaches them to its engine config, which routes the actor to our
engine while ``actor.strategy`` stays ``fsdp2`` (so the reference model, whose strategy follows the
actor's, keeps verl's stock engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from verl_patches.version import require_verl

require_verl(__name__)

from verl.workers.config import FSDPActorConfig  # noqa: E402

from aggc_rl.clipping import ACTOR_KEY, ClipConfig, resolve_clip  # noqa: E402
from verl_patches.engine.backend import BUILDER_STRATEGY  # noqa: E402
from verl_patches.engine.clip_engine import ClipFSDPEngineConfig, attach_clip  # noqa: E402


@dataclass
class ClipActorConfig(FSDPActorConfig):
    """verl's FSDP actor config plus ``clip`` (the method) and ``clip_config`` (its knobs)."""

    clip: str = "global"
    clip_config: ClipConfig = field(default_factory=ClipConfig)

    def __post_init__(self) -> None:
        # Resolve the clip switch first: its errors are the ones users of this config can act on.
        if isinstance(self.clip_config, dict):
            self.clip_config = ClipConfig(**self.clip_config)
        check_unread_grad_clip(self.grad_clip)
        resolve_clip(self.clip, self.clip_config, max_norm=self.optim.clip_grad, prefix=ACTOR_KEY)
        super().__post_init__()
        if self.strategy != BUILDER_STRATEGY:
            raise ValueError(
                f"{ACTOR_KEY}.clip needs FSDP2 (exact per-module norms of sharded DTensors), but "
                f"{ACTOR_KEY}.strategy={self.strategy!r}; allowed: {BUILDER_STRATEGY}"
            )
        if not isinstance(self.engine, ClipFSDPEngineConfig):
            raise TypeError(
                f"{ACTOR_KEY}.fsdp_config must be built as {ClipFSDPEngineConfig.__module__}."
                f"{ClipFSDPEngineConfig.__name__} (set by configs/aggc_ppo_trainer.yaml), got "
                f"{type(self.engine).__name__}"
            )
        attach_clip(self.engine, self.clip, self.clip_config, prefix=ACTOR_KEY)


#: verl's default for ``actor.grad_clip``, a key that verl 0.9.1's engines never read.
GRAD_CLIP_DEFAULT = next(f.default for f in fields(FSDPActorConfig) if f.name == "grad_clip")


def check_unread_grad_clip(value: object) -> None:
    """``actor.grad_clip`` is read by nothing in verl 0.9.1: a changed value would silently do nothing."""
    same = isinstance(value, (int, float)) and not isinstance(value, bool) and value == GRAD_CLIP_DEFAULT
    if not same or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(
            f"{ACTOR_KEY}.grad_clip={value!r} is set, but verl 0.9.1 never reads it (its engines clip with "
            f"optim.clip_grad), so it would do nothing; set {ACTOR_KEY}.optim.clip_grad (the max_norm of "
            f"clip=global) instead and leave grad_clip at its default {GRAD_CLIP_DEFAULT}"
        )
