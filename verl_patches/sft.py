"""verl 0.9.1's SFT trainer with the clip switch: what it needs beyond the engine, and how it is run.

verl's ``verl.trainer.sft_trainer`` builds its model through the same ``TrainingWorker`` and ``EngineRegistry``
as the RL actor, so the ``aggc_fsdp2`` engine serves it unchanged: the primary config
(configs/aggc_sft_trainer.yaml) makes ``engine`` a ``ClipFSDPEngineConfig`` that carries ``engine.clip``.
Two things in the trainer itself are patched, only in processes started by ``aggc_rl.sft``:

* ``SFTTrainer.fit`` hands the worker's metric dict to the loggers as it is, and its values are verl ``Metric``
  objects (and, with data parallelism, lists of them): the console logger drops them and the file logger
  crashes (``TypeError: Type is not JSON serializable: Metric``). :class:`ReducingTracking` reduces every
  value to a plain number, the way verl's RL trainer does (``Metric.aggregate_dp``), and puts our clip
  metrics under ``train/`` like the trainer's own (``train/clip/...``), so every logger gets numbers.
* On the CPU platform the process group is gloo; that is :mod:`verl_cpu.platform`'s job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from verl_patches.version import require_verl

require_verl(__name__)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from verl.utils.metric.utils import Metric  # noqa: E402
from verl.utils.tracking import Tracking  # noqa: E402

from aggc_rl import metrics as names  # noqa: E402

#: Where verl's SFT trainer puts its own metrics (train/loss, train/grad_norm, ...); ours join them.
SFT_PREFIX = "train/"


def to_number(key: str, value: Any) -> float:
    """One logged value as a float: a ``Metric``, a list of them (one per data-parallel rank), or numbers."""
    if isinstance(value, Metric):
        return float(value.aggregate())
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, Metric) for v in value):
            return float(Metric.aggregate_dp(list(value)))
        flat = [to_number(key, v) for v in value]
        if not flat:
            raise ValueError(f"metric {key!r} has no values")
        return float(np.max(flat) if "max" in key else np.min(flat) if "min" in key else np.mean(flat))
    if isinstance(value, int | float | np.number):
        return float(value)
    raise TypeError(f"metric {key!r} has a value of type {type(value).__name__}, which no logger can take")


def reduce_for_loggers(data: Mapping[str, Any]) -> dict[str, float]:
    """Plain numbers for every logger; our ``clip/...`` keys become ``train/clip/...``."""
    out = {}
    for key, value in data.items():
        logged = SFT_PREFIX + key if key.startswith(names.CLIP_PREFIX) else key
        out[logged] = to_number(key, value)
    return out


class ReducingTracking(Tracking):
    """verl's ``Tracking`` that reduces metric values to numbers before any logger sees them."""

    def log(self, data, step, backend=None):
        super().log(data=reduce_for_loggers(data), step=step, backend=backend)


def install_sft_patches() -> None:
    """Make verl's SFT trainer log through :class:`ReducingTracking`; idempotent."""
    from verl.trainer import sft_trainer

    sft_trainer.Tracking = ReducingTracking


def single_process_env() -> None:
    """``python -m aggc_rl.sft`` without torchrun: the rank variables verl's process-group setup reads."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])


def run_sft(config) -> None:
    """verl's ``run_sft`` (process group, ``SFTTrainer``, fit) with the patches above.

    A run whose resumed checkpoint is already at the last step stops here: verl's ``fit`` would train one
    step past ``total_training_steps`` and save it. The preflight stops such a run before anything starts
    when ``trainer.total_training_steps`` is given; when verl computes it (epochs x batches), only the
    trainer knows it, after loading the checkpoint.
    """
    from verl.trainer import sft_trainer
    from verl.utils.device import auto_set_device
    from verl.utils.distributed import destroy_global_process_group, initialize_global_process_group

    install_sft_patches()
    auto_set_device(config)
    initialize_global_process_group()
    trainer = sft_trainer.SFTTrainer(config=config)
    if trainer.resume_global_step >= trainer.total_training_steps:
        if torch.distributed.get_rank() == 0:
            print(
                f"the run is finished: the resumed checkpoint is at step {trainer.resume_global_step} of "
                f"{trainer.total_training_steps} training steps; nothing is trained or saved",
                flush=True,
            )
    else:
        trainer.fit()
    destroy_global_process_group()
