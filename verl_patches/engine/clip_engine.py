"""verl's FSDP2 engine with our GradClipper in ``optimizer_step``, registered as backend ``aggc_fsdp2``.

Written for verl 0.9.1 (workers/engine/fsdp/transformer_impl.py): ``optimizer_step`` mirrors the stock
one (unscale, clip, skip a non-finite step, step, QAT scale invalidation) with the clipper in place of
``fsdp2_clip_grad_norm_``; ``train_batch`` adds the clipper's metrics (named in :mod:`aggc_rl.metrics`;
verl's trainer logs them as ``actor/clip/...``); checkpoints carry the clipper state in
``clip_state_world_size_W_rank_R.pt`` beside verl's per-rank files. The training schedule's progress is
verl's own LR-scheduler step count over ``optim.total_training_steps`` (the trainer sets both), so it is
also restored on resume.

The clip settings travel in the engine config (:class:`ClipFSDPEngineConfig`): any verl config that builds
an FSDP engine config can carry them (the RL actor's, through ``verl_patches.engine.config``; SFT's engine
config directly). Importing this module registers the engine for every device.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from dataclasses import dataclass, field

import torch

from verl_patches.version import require_verl

require_verl(__name__)

from verl.utils.metric.utils import Metric  # noqa: E402
from verl.workers.config import FSDPEngineConfig  # noqa: E402
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead  # noqa: E402

from aggc_rl import metrics as names  # noqa: E402
from aggc_rl.clipping import ClipConfig, ClipResult, ClipSpec, GradClipper, resolve_clip  # noqa: E402
from verl_patches.engine.backend import CLIP_BACKEND, for_module_builder, route_to_clip_engine  # noqa: E402
from verl_patches.engine.registry import register_engine  # noqa: E402

logger = logging.getLogger(__name__)

CLIP_STATE_PATTERN = "clip_state_world_size_{world}_rank_{rank}.pt"
#: Devices the engine is registered for: verl's FSDP engine devices, plus our CPU platform's.
DEVICES = ("cuda", "npu", "cpu")


@dataclass
class ClipFSDPEngineConfig(FSDPEngineConfig):
    """verl's FSDP engine config plus the clip settings (``clip``, ``clip_config``).

    ``clip=None`` means "not attached yet": the RL actor config attaches its own keys after building this
    (:func:`attach_clip`); a config that has no actor (SFT) sets them here directly and is attached on
    construction. ``clip_prefix`` is where the settings live in the user's config, for error messages.
    """

    _mutable_fields = FSDPEngineConfig._mutable_fields | {"clip", "clip_config", "clip_prefix"}

    clip: str | None = None
    clip_config: ClipConfig = field(default_factory=ClipConfig)
    clip_prefix: str = "engine"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.clip_config, dict):
            self.clip_config = ClipConfig(**self.clip_config)
        if self.clip is not None:
            attach_clip(self, self.clip, self.clip_config, prefix=self.clip_prefix)

    def clip_spec(self, max_norm: float) -> ClipSpec:
        """The validated spec; ``max_norm`` is ``optim.clip_grad`` (what ``clip=global`` uses)."""
        if self.clip is None:
            raise ValueError(
                f"engine backend {CLIP_BACKEND!r} needs clip settings; run through `python -m aggc_rl.train` "
                "(configs/aggc_ppo_trainer.yaml) so the actor config provides them"
            )
        return resolve_clip(self.clip, self.clip_config, max_norm=max_norm, prefix=self.clip_prefix)


def attach_clip(engine_config: ClipFSDPEngineConfig, clip: str, clip_config: ClipConfig, prefix: str) -> None:
    """Give ``engine_config`` the clip settings and route it to this engine (validated before, by the caller)."""
    engine_config.clip = clip
    engine_config.clip_config = clip_config
    engine_config.clip_prefix = prefix
    route_to_clip_engine(engine_config)


def clip_state_path(local_path: str, world: int, rank: int) -> str:
    return os.path.join(local_path, CLIP_STATE_PATTERN.format(world=world, rank=rank))


class ClipFSDPEngine(FSDPEngineWithLMHead):
    """FSDP2 actor engine whose gradient clipping is a :class:`GradClipper` (any of our rules)."""

    def __init__(self, model_config, engine_config, optimizer_config, checkpoint_config, **kwargs) -> None:
        if not isinstance(engine_config, ClipFSDPEngineConfig):
            raise TypeError(
                f"engine backend {CLIP_BACKEND!r} needs a {ClipFSDPEngineConfig.__qualname__}, got "
                f"{type(engine_config).__name__}; run through `python -m aggc_rl.train` (configs/aggc_ppo_trainer.yaml)"
            )
        self.clip_spec = engine_config.clip_spec(max_norm=optimizer_config.clip_grad)
        super().__init__(
            model_config,
            for_module_builder(engine_config, FSDPEngineConfig),
            optimizer_config,
            checkpoint_config,
            **kwargs,
        )
        self.clipper: GradClipper | None = None
        self.last_clip: ClipResult | None = None

    def initialize(self) -> None:
        super().initialize()
        if self.engine_config.forward_only:
            return
        rule = self.clip_spec.build_rule()
        if rule.uses_progress and not (self.optimizer_config.total_training_steps or 0) > 0:
            raise ValueError(
                f"clip={self.clip_spec.method} follows training progress (its schedule) and needs the number of training steps, "
                f"but optim.total_training_steps={self.optimizer_config.total_training_steps}; verl's trainer "
                "sets it, other callers must"
            )
        self.clipper = GradClipper(self.module.named_parameters(), rule, grouping=self.clip_spec.grouping)
        logger.info(
            "clip=%s: %d groups %s", self.clip_spec.method, len(self.clipper.groups), self.clipper.groups
        )

    # -- the step --------------------------------------------------------------------------------------------

    def training_progress(self) -> float:
        """Fraction of training done: completed training steps (LR-scheduler steps) over the total."""
        total = self.optimizer_config.total_training_steps or 0
        if total <= 0:
            return 0.0
        return min(1.0, max(0.0, self.lr_scheduler.last_epoch / total))

    def optimizer_step(self) -> float:
        """Clip with our rule, skip the update on a non-finite norm (as verl does), step.

        Returns the PRE-clip total norm, so ``actor/grad_norm`` means the same in every arm.
        """
        if self.clipper is None:
            raise RuntimeError("optimizer_step on an engine built with forward_only=True")
        scaler = getattr(self, "scaler", None)
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        result = self.clipper.clip_(progress=self.training_progress())
        self.last_clip = result
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        elif result.skipped:
            bad = [
                g for g, n in zip(result.groups, result.norms.tolist(), strict=True) if not math.isfinite(n)
            ]
            logger.warning("non-finite gradient norm in groups %s: skipping this optimizer step", bad)
            self.optimizer.zero_grad()
        else:
            self.optimizer.step()
        if getattr(self, "_qat_enabled", False):
            from verl.utils.qat.core import invalidate_all_scales

            invalidate_all_scales(self.module)
        return result.total_norm

    def clip_metrics(self) -> dict[str, float]:
        """This step's clip metrics, named by :mod:`aggc_rl.metrics` (verl adds ``actor/``)."""
        result = self.last_clip
        if result is None:
            return {}
        metrics = result.metrics(per_group=self.clip_spec.log_per_group)
        metrics[names.PROGRESS.key()] = self.training_progress()
        return metrics

    def train_batch(self, data, loss_function):
        outputs = super().train_batch(data, loss_function)
        if self.is_mp_src_rank_with_outputs():
            for key, value in self.clip_metrics().items():
                outputs["metrics"][key] = Metric(names.reduction_of(key), value)
        return outputs

    # -- checkpoints -----------------------------------------------------------------------------------------

    def save_checkpoint(
        self, local_path: str, hdfs_path=None, global_step: int = 0, max_ckpt_to_keep=None, **kwargs
    ):
        super().save_checkpoint(local_path, hdfs_path, global_step, max_ckpt_to_keep, **kwargs)
        if self.clipper is not None:
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
            torch.save(self.clipper.state_dict(), clip_state_path(local_path, world, rank))

    def load_checkpoint(self, local_path: str, hdfs_path=None, del_local_after_load: int = True, **kwargs):
        # Read our file first: verl may delete the local copy after loading its own.
        state = self._read_clip_state(local_path) if self.clipper is not None else None
        super().load_checkpoint(local_path, hdfs_path, del_local_after_load, **kwargs)
        if state is not None:
            self.clipper.load_state_dict(state)

    def _read_clip_state(self, local_path: str) -> dict:
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        path = clip_state_path(local_path, world, rank)
        if not os.path.exists(path):
            # The state is replicated on every rank, so a checkpoint from another world size is fine.
            others = sorted(
                glob.glob(os.path.join(local_path, CLIP_STATE_PATTERN.format(world="*", rank="*")))
            )
            if not others:
                raise FileNotFoundError(
                    f"no clipper state in {local_path} (expected {os.path.basename(path)}): this checkpoint was not "
                    f"written by the {CLIP_BACKEND} engine, and resuming without it would restart the clip EMA at 0"
                )
            path = others[0]
        return torch.load(path, map_location="cpu", weights_only=True)


register_engine(ClipFSDPEngine, model_type="language_model", backends=(CLIP_BACKEND,), devices=DEVICES)
