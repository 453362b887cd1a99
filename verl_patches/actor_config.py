"""Actor and engine config dataclasses that carry the clip switch to verl's FSDP2 engine.

Written for verl 0.9.1. verl converts ``actor_rollout_ref.actor`` into ``FSDPActorConfig`` (unknown
keys are rejected) and hands only ``actor.engine`` / ``actor.optim`` to the engine, so:

- :class:`ClipActorConfig` adds the user-facing ``clip`` / ``clip_config`` keys, validates them where
  the config is built (in the driver before Ray starts, and in every worker), and routes the actor
  to our engine backend while ``actor.strategy`` stays ``fsdp2`` (so the reference model, whose
  strategy follows the actor's, keeps verl's stock engine);
- :class:`ClipFSDPEngineConfig` is verl's engine config plus the resolved :class:`ClipSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verl_patches import require_verl

require_verl(__name__)

from verl.workers.config import FSDPActorConfig, FSDPEngineConfig  # noqa: E402

from aggc_rl.verl_adapter.clip_config import ClipConfig, ClipSpec, resolve_clip  # noqa: E402

#: The engine backend registered by verl_patches.clip_engine.
CLIP_BACKEND = "aggc_fsdp2"


@dataclass
class ClipFSDPEngineConfig(FSDPEngineConfig):
    """verl's FSDP engine config plus the clipping spec the actor config resolved."""

    _mutable_fields = FSDPEngineConfig._mutable_fields | {"clip"}

    clip: ClipSpec | None = None


@dataclass
class ClipActorConfig(FSDPActorConfig):
    """verl's FSDP actor config plus ``clip`` (the method) and ``clip_config`` (its knobs)."""

    clip: str = "global"
    clip_config: ClipConfig = field(default_factory=ClipConfig)

    def __post_init__(self) -> None:
        # Resolve the clip switch first: its errors are the ones users of this config can act on.
        spec = resolve_clip(self.clip, self.clip_config, max_norm=self.optim.clip_grad)
        super().__post_init__()
        if self.strategy != "fsdp2":
            raise ValueError(
                f"actor_rollout_ref.actor.clip needs FSDP2 (exact per-module norms of sharded DTensors), but "
                f"actor_rollout_ref.actor.strategy={self.strategy!r}; allowed: fsdp2"
            )
        if not isinstance(self.engine, ClipFSDPEngineConfig):
            raise TypeError(
                f"actor_rollout_ref.actor.fsdp_config must be built as {ClipFSDPEngineConfig.__module__}."
                f"{ClipFSDPEngineConfig.__name__} (set by configs/aggc_ppo_trainer.yaml), got "
                f"{type(self.engine).__name__}"
            )
        self.engine.clip = spec
        # Importing the engine registers its backend; a failure here is loud, unlike at plugin load.
        import verl_patches.clip_engine  # noqa: F401

        object.__setattr__(self.engine, "strategy", CLIP_BACKEND)
