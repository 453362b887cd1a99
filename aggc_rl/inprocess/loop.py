"""The GRPO pieces every in-process loop shares: verl's advantage, the lab engine, the padded batch.

The lab engine is ``aggc_fsdp2`` + fault hooks at world size 1, composed from our primary config exactly as
the trainer's; batches go through verl's PPO loss (:mod:`verl_cpu.harness`). Used by the fault lab's
replay (:mod:`aggc_rl.lab.replay`), the proxy's GRPO (:mod:`aggc_rl.proxy.grpo`) and its LoRA SFT.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from aggc_rl.inprocess.arms import Arm
from aggc_rl.inprocess.size import LabSize

# -- rewards and advantages ------------------------------------------------------------------------------------


def grpo_advantages(rewards: torch.Tensor, response_mask: torch.Tensor, samples: int) -> torch.Tensor:
    """verl's GRPO outcome advantage: the reward on the last response token, normalised per prompt."""
    import numpy as np
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    token_rewards = torch.zeros(response_mask.shape, dtype=torch.float32)
    last = (response_mask.sum(-1) - 1).clamp(min=0)
    token_rewards[torch.arange(len(rewards)), last] = rewards
    index = np.repeat(np.arange(len(rewards) // samples), samples)
    adv, _ = compute_grpo_outcome_advantage(token_rewards, response_mask.float(), index)
    return adv


# -- the engine ------------------------------------------------------------------------------------------------


#: ``--device`` -> the platform name verl 0.9.1 registers for it (``verl/plugin/platform``: NVIDIA GPUs are
#: ``nvidia``, not ``cuda``; ``cpu`` is ours, registered by the CPU backend).
VERL_PLATFORMS = {"cpu": "cpu", "cuda": "nvidia"}


def ensure_process_group(device: str) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ["VERL_PLATFORM"] = os.environ.get("VERL_PLATFORM", VERL_PLATFORMS[device])
    if device == "cpu":
        from verl_cpu import harness

        harness.use_cpu_platform()
    init = Path(tempfile.mkdtemp(prefix="aggc_lab_pg_")) / "init"
    dist.init_process_group(
        "gloo" if device == "cpu" else "nccl", init_method=f"file://{init}", rank=0, world_size=1
    )


def build_engine(model_path: Path, arm: Arm, size: LabSize, batch_size: int, extra: tuple[str, ...] = ()):
    """The lab engine for ``arm``, composed from configs/aggc_ppo_trainer.yaml as the trainer does;
    ``extra``: more Hydra overrides (the SFT sweep's LoRA settings)."""
    from aggc_rl.inprocess.engine import LAB_BACKEND, register_lab_engine
    from verl_cpu import harness

    register_lab_engine()
    cfg = harness.clip_ppo_config(
        str(model_path),
        size.steps,
        f"actor_rollout_ref.actor.optim.lr={size.lr}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={size.prompts}",
        f"actor_rollout_ref.rollout.n={size.samples}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={batch_size}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch_size}",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.model.use_remove_padding=false",
        *arm.overrides(size),
        *extra,
    )
    setup = harness.engine_setup(cfg)
    engine = harness.build_engine(setup, backend=LAB_BACKEND)
    return cfg, setup, engine, harness.ppo_loss_fn(setup)


def padded_batch(gen: dict[str, torch.Tensor], advantages: torch.Tensor):
    from tensordict import TensorDict
    from verl.utils.model import compute_position_id_with_mask

    attention = torch.cat([gen["prompt_mask"], gen["response_mask"]], dim=1)
    input_ids = torch.cat([gen["prompts"], gen["responses"]], dim=1)
    return TensorDict(
        {
            "input_ids": input_ids,
            "attention_mask": attention,
            "position_ids": compute_position_id_with_mask(attention),
            "prompts": gen["prompts"],
            "responses": gen["responses"],
            "response_mask": gen["response_mask"],
            "old_log_probs": gen["log_probs"],
            "advantages": advantages * gen["response_mask"],
        },
        batch_size=[input_ids.shape[0]],
    )


# -- one run ---------------------------------------------------------------------------------------------------
