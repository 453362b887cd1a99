"""``reward/unscored`` and ``reward/timeouts`` in the metrics of every training step.

Written for verl 0.9.1, whose v1 trainer logs the reward's per-sample extra info only for validation
(``val-aux/...``). One wrapper, around ``verl.trainer.ppo.v1.trainer_base.PPOTrainer._compute_metrics``:

* ``PPOTrainer.fit`` (trainer_base.py line 503) calls ``self._compute_metrics(batch, metrics, timing_raw,
  global_steps=..., epoch=...)`` exactly once per training step, after the step and its validation, before
  ``tq.kv_clear(keys=batch.keys, ...)`` (line 511) and before ``self.logger.log(data=metrics, step=...)``
  (line 514), which hands the same dict to every logger (console, file, wandb, ...). Nothing else in 0.9.1
  overrides it (``trainer_sync``, ``trainer_colocate_async`` and ``trainer_separate_async`` inherit it).
* ``batch`` is a ``transfer_queue.KVBatchMeta``: the step's sample keys, ``partition_id`` and ``tags``
  (``is_padding`` marks the rows verl duplicated to fill the data-parallel batch; verl's own metrics skip
  them, so do we).
* Each sample's reward extra info is in its TransferQueue field ``extra_fields`` as
  ``extra_fields["reward_extra_info"]``, put there by the agent loop
  (``verl.trainer.ppo.v1.agent_loop_tq.AgentLoopWorkerTQ._agent_loop_postprocess``, from the reward-loop
  worker's result); verl's ``_validate`` (line ~1131) and its replay buffer's DAPO filter read it the same way.
  We fetch that one field with ``trainer_base.tq.kv_batch_get`` (the module's own TransferQueue client).

The wrapper runs verl's ``_compute_metrics`` unchanged, then adds :func:`aggc_rl.rewards.event_metrics` of
the step's non-padding samples: how many our reward router marked ``unscored`` (0 when none) and, of those,
``timeouts``. When no sample's reward info carries the router's flags at all (another reward function, or a
colocated reward model, whose verl path writes the info elsewhere), both are logged as NaN, with one
warning: unknown, never a made-up 0.

trainer_base is heavy (Ray, TransferQueue, the agent loop), and the plugin runs in every process on
``import verl``; so :func:`install` does not import it: it patches it right after its first import (an
import hook), or at once when it is already imported. Idempotent.
"""

from __future__ import annotations

from verl_patches.version import require_verl

require_verl(__name__)

import functools  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

from aggc_rl import metrics as names  # noqa: E402
from aggc_rl.rewards import event_metrics  # noqa: E402
from verl_patches.import_hooks import patch_after_import  # noqa: E402

logger = logging.getLogger(__name__)

TRAINER_MODULE = "verl.trainer.ppo.v1.trainer_base"
#: Set on the wrapper, so that installing twice never wraps twice.
MARK = "_aggc_rl_reward_events"
#: The router's per-sample flags (aggc_rl.rewards.RESULT_KEYS) that the counts are made of.
FLAGS = ("unscored", "timeouts")
_warned_no_flags = False


def _reward_infos(extra_fields: Any) -> list[Mapping[str, Any]]:
    rows = extra_fields.tolist() if hasattr(extra_fields, "tolist") else list(extra_fields)
    infos = []
    for row in rows:
        info = row.get("reward_extra_info") if isinstance(row, Mapping) else None
        infos.append(info if isinstance(info, Mapping) else {})
    return infos


def step_reward_events(batch: Any, kv_batch_get: Callable[..., Any]) -> dict[str, float]:
    """``reward/unscored`` and ``reward/timeouts`` of one training step's ``KVBatchMeta``.

    Padding rows (``tags[i]["is_padding"]``) are left out. NaN for both when no sample carries the
    router's flags (see the module docstring); a fetch that fails raises (verl's own metrics fail too).
    """
    global _warned_no_flags
    keep = [i for i, tag in enumerate(batch.tags) if not (tag or {}).get("is_padding", False)]
    if not keep:
        return event_metrics([])
    data = kv_batch_get(
        keys=list(batch.keys), partition_id=batch.partition_id, select_fields=["extra_fields"]
    )
    infos = _reward_infos(data["extra_fields"])
    if len(infos) != len(batch.keys):
        raise ValueError(
            f"TransferQueue returned {len(infos)} extra_fields for {len(batch.keys)} keys of the training step"
        )
    infos = [infos[i] for i in keep]
    if not any(flag in info for info in infos for flag in FLAGS):
        if not _warned_no_flags:
            _warned_no_flags = True
            logger.warning(
                "no sample's reward info carries %s (not aggc_rl.rewards.compute_score, or a colocated reward "
                "model): %s are logged as NaN",
                "/".join(FLAGS),
                " and ".join(names.REWARD_EVENTS),
            )
        return dict.fromkeys(names.REWARD_EVENTS, math.nan)
    return event_metrics(infos)


def wrap_compute_metrics(
    original: Callable[..., Any], kv_batch_get: Callable[[], Callable[..., Any]]
) -> Callable[..., Any]:
    """``original`` (``PPOTrainer._compute_metrics``) followed by the step's reward-event counts.

    ``kv_batch_get`` is called at each step for the fetch function (trainer_base's ``tq.kv_batch_get``).
    A function that is already our wrapper is returned as it is.
    """
    if getattr(original, MARK, False):
        return original

    @functools.wraps(original)
    def _compute_metrics(self: Any, batch: Any, metrics: dict, *args: Any, **kwargs: Any) -> Any:
        result = original(self, batch, metrics, *args, **kwargs)
        metrics.update(step_reward_events(batch, kv_batch_get()))
        return result

    setattr(_compute_metrics, MARK, True)
    return _compute_metrics


def patch_trainer_base(module: ModuleType) -> None:
    """Wrap ``module.PPOTrainer._compute_metrics`` (``module`` is verl's trainer_base); idempotent."""
    cls = module.PPOTrainer
    cls._compute_metrics = wrap_compute_metrics(cls._compute_metrics, lambda: module.tq.kv_batch_get)


def install() -> None:
    """Patch verl's trainer_base now if it is imported, else right after its import; idempotent."""
    patch_after_import(TRAINER_MODULE, patch_trainer_base, imported=lambda m: hasattr(m, "PPOTrainer"))
