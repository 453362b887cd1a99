"""verl's FSDP2 engine with our GradClipper in ``optimizer_step``, registered as backend ``aggc_fsdp2``.

Written for verl 0.9.1 (workers/engine/fsdp/transformer_impl.py): ``optimizer_step`` mirrors the stock
one (unscale, clip, skip a non-finite step, step, QAT scale invalidation) with the clipper in place of
``fsdp2_clip_grad_norm_``, and the step guard's skips (a non-finite norm, ``clip_config.guard.skip_above`` /
``skip_sigma``: the optimizer is not called and the gradients are zeroed; ``max_consecutive_skips`` stops
training); ``train_batch`` adds the clipper's metrics (named in :mod:`aggc_rl.metrics`; verl's trainer logs
them as ``actor/clip/...``); checkpoints carry the clipper state in ``clip_state_world_size_W_rank_R.pt``
beside verl's per-rank files, and a resume refuses a state saved for other clip settings (or a damaged
file) before it loads anything, unless ``clip_config.resume_mismatch=reset``. The training schedule's progress is
verl's own LR-scheduler step count over ``optim.total_training_steps`` (the trainer sets both), so it is
also restored on resume.

The clip settings travel in the engine config (:class:`ClipFSDPEngineConfig`): any verl config that builds
an FSDP engine config can carry them (the RL actor's, through ``verl_patches.engine.config``; SFT's engine
config directly). Importing this module registers the engine for every device.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from verl_patches.version import require_verl

require_verl(__name__)

from verl.utils.metric.utils import Metric  # noqa: E402
from verl.workers.config import FSDPEngineConfig  # noqa: E402
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead  # noqa: E402

from aggc_rl import metrics as names  # noqa: E402
from aggc_rl.clipping import (  # noqa: E402
    ClipConfig,
    ClipResult,
    ClipSpec,
    ClipStateDamaged,
    ClipStateMismatch,
    GradClipper,
    SkippedStepsError,
    resolve_clip,
)
from aggc_rl.preflight.clip_state import CLIP_STATE_PATTERN, step_folder, ways_out  # noqa: E402
from verl_patches.engine.backend import CLIP_BACKEND, for_module_builder, route_to_clip_engine  # noqa: E402
from verl_patches.engine.registry import register_engine  # noqa: E402

logger = logging.getLogger(__name__)

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
        self.clipper = GradClipper(
            self.module.named_parameters(), rule, grouping=self.clip_spec.grouping, guard=self.clip_spec.guard
        )
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

    def training_step(self) -> int:
        """The 1-based training step being run (verl steps the LR scheduler once per training step)."""
        return int(self.lr_scheduler.last_epoch) + 1

    def optimizer_step(self) -> float:
        """Clip with our rule; on a skipped step do not call the optimizer and zero the gradients; else step.

        A skip (non-finite norm, or the guard's skip_above / skip_sigma) leaves the parameters, the
        optimizer's moments and step count and the rule's state as they were; verl's LR scheduler and the
        training progress still advance. Returns the PRE-clip total norm, so ``actor/grad_norm`` means
        the same in every arm.
        """
        if self.clipper is None:
            raise RuntimeError("optimizer_step on an engine built with forward_only=True")
        scaler = getattr(self, "scaler", None)
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        try:
            result = self.clipper.clip_(progress=self.training_progress())
        except SkippedStepsError as err:
            raise SkippedStepsError(
                f"{self.clip_spec.prefix}.clip_config.guard stopped training at training step "
                f"{self.training_step()}: {err}"
            ) from err
        self.last_clip = result
        if result.skipped:
            logger.warning(
                "training step %d: skipping this optimizer step (%s; total norm %.6g; non-finite groups: %s)",
                self.training_step(),
                ", ".join(result.skip_reasons),
                result.total_norm,
                result.non_finite_groups or "none",
            )
            self.optimizer.zero_grad()
            if scaler is not None:
                scaler.update()  # lowers the loss scale after an overflow, as scaler.step would have
        elif scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
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
        # Read and check our file first: a mismatch or a damaged file stops the resume before anything is
        # loaded, and verl may delete the local copy after loading its own files.
        restore = self._read_clip_state(local_path) if self.clipper is not None else None
        super().load_checkpoint(local_path, hdfs_path, del_local_after_load, **kwargs)
        if restore is not None:
            restore()

    def _read_clip_state(self, local_path: str):
        """Read, check and return a function that restores the clipper state (None-safe under reset)."""
        reset = self.clip_spec.resume_mismatch == "reset"
        key = f"{self.clip_spec.prefix}.clip_config.resume_mismatch"

        def refuse_unless_reset(message: str, error: Exception) -> Callable[[], None]:
            """The one policy for a state we cannot use: raise ``error``, or with reset start afresh (logged)."""
            if not reset:
                raise error
            logger.warning("%s; %s=reset: starting a fresh clipper state", message, key)
            return lambda: None

        step = checkpoint_step(local_path)
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        path = clip_state_path(local_path, world, rank)
        if not os.path.exists(path):
            # The state is replicated on every rank, so a checkpoint from another world size is fine.
            others = sorted(
                glob.glob(os.path.join(local_path, CLIP_STATE_PATTERN.format(world="*", rank="*")))
            )
            if not others:
                message = (
                    f"no clipper state in {local_path} (expected {os.path.basename(path)}): this checkpoint was not "
                    f"written by the {CLIP_BACKEND} engine, and resuming without it would restart the clip EMA at 0"
                )
                return refuse_unless_reset(
                    message,
                    FileNotFoundError(
                        f"{message}; set {key}=reset to start a fresh clipper state on purpose"
                    ),
                )
            path = others[0]
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            differences = self.clipper.check_state_dict(saved)
        except Exception as err:  # a truncated zip, a pickle error, a dict that is not ours
            message = (
                f"the clipper state {path} of checkpoint step {step} is damaged and cannot be read ({err})"
            )
            damaged = ClipStateDamaged(f"{message}. {ways_out(step_folder(local_path), key)}")
            damaged.__cause__ = err
            return refuse_unless_reset(message, damaged)
        if differences and not reset:
            lines = "\n".join(f"  - {d}" for d in differences)
            raise ClipStateMismatch(
                differences,
                f"the clipper state {path} of checkpoint step {step} was saved for other clip settings "
                f"than this run's ({self.clip_spec.prefix}.clip={self.clip_spec.method}):\n{lines}\nResume with the "
                f"checkpoint's settings, or set {key}=reset to start a fresh clipper state on purpose",
            )

        def restore() -> None:
            self.clipper.load_state_dict(saved, on_mismatch=self.clip_spec.resume_mismatch)

        return restore


def checkpoint_step(local_path: str) -> str:
    """The N of ``.../global_step_N/...`` for messages ("unknown" when the path does not say)."""
    found = re.findall(r"global_step_(\d+)", str(local_path))
    return found[-1] if found else "unknown"


register_engine(ClipFSDPEngine, model_type="language_model", backends=(CLIP_BACKEND,), devices=DEVICES)
