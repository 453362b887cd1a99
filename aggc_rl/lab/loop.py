"""One lab run: on-policy GRPO through the project's engine, with a fault at one step.

Per step: the current weights sample ``samples`` responses to each of ``prompts`` procedurally generated
Knights-and-Knaves puzzles (in-process Hugging Face generation, temperature 1, sampling seed derived from
(seed, step) only, so every arm and fault sees the same random stream and the same puzzles); the
project's scorer (:mod:`aggc_rl.rewards`) scores them; verl's GRPO outcome advantage
(``core_algos.compute_grpo_outcome_advantage``) normalises them per prompt; the batch goes through
verl's PPO loss and one optimizer step of the lab engine (``aggc_fsdp2`` + fault hooks, world size 1),
composed from our primary config exactly as the trainer's. After every step the per-group weight change
(what AdamW actually applied) is measured; around the fault step also the KL between the policies
before and after on a fixed probe set; at the end the greedy accuracy on fixed held-out puzzles.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from aggc_rl.lab.arms import Arm
from aggc_rl.lab.faults import MEASURE_SCHEME, Fault
from aggc_rl.lab.policy import REWARD_RANGE, Sampler, probe_kl, puzzles_for, score, stable_seed
from aggc_rl.lab.size import LabSize

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
    from aggc_rl.lab.engine import LAB_BACKEND, register_lab_engine
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


def local_params(engine) -> dict[str, torch.Tensor]:
    """Copies of the engine's weights (world size 1: the local shard is the whole tensor)."""
    return {
        n: (p.to_local() if hasattr(p, "to_local") else p).detach().clone()
        for n, p in engine.module.named_parameters()
    }


def group_update_norms(before: dict, after: dict, groups: dict[str, list[str]]) -> dict[str, float]:
    return {
        g: float(
            torch.linalg.vector_norm(torch.stack([(after[n] - before[n]).double().norm() for n in names]))
        )
        for g, names in groups.items()
    }


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


def run(
    model_path: Path,
    arm: Arm,
    fault: Fault,
    seed: int,
    size: LabSize,
    device: str = "cpu",
    log=print,
) -> dict[str, Any]:
    """One (arm, fault, seed) run; returns its record (JSON-safe)."""
    size.check()
    ensure_process_group(device)
    from verl_cpu import harness

    n = size.prompts * size.samples
    cfg, setup, engine, loss_fn = build_engine(model_path, arm, size, batch_size=n)
    engine.arm(fault)
    sampler = Sampler(model_path, device, compact=size.compact)
    weights = local_params(engine)
    sampler.load(weights)
    groups = engine.measure_groups

    probe_puzzles = puzzles_for(0, 0, size.probe, size.people, split="probe")
    probe = sampler.generate(
        sampler.encode(probe_puzzles), size.response_length, seed=None
    )  # initial policy, greedy
    record: dict[str, Any] = {
        "arm": arm.name,
        "fault": dataclasses.asdict(fault),
        "seed": seed,
        "size": dataclasses.asdict(size),
        "groups": list(groups),
        "steps": [],
    }
    for t in range(size.steps):
        puzzles = puzzles_for(seed, t, size.prompts, size.people)
        prompt_ids = [ids for ids in sampler.encode(puzzles) for _ in range(size.samples)]
        answers = [p.answer_text for p in puzzles for _ in range(size.samples)]
        gen = sampler.generate(prompt_ids, size.response_length, seed=stable_seed("sample", seed, t))
        rewards, acc = score(sampler.texts(gen["responses"], gen["response_mask"]), answers)
        true_reward = float(rewards.mean())
        if fault.kind == "reward_noise" and t == fault.step:
            g = torch.Generator().manual_seed(stable_seed("noise", seed, t))
            rewards = torch.empty(len(rewards)).uniform_(*REWARD_RANGE, generator=g)
        adv = grpo_advantages(rewards, gen["response_mask"], size.samples)
        batch = harness.make_ppo_batch(setup, cfg, padded_batch(gen, adv))
        if t == fault.step:
            before_lp = sampler.response_logprobs(probe)
        metrics = harness.train_step(engine, batch, loss_fn)
        new = local_params(engine)
        clip = engine.last_clip
        step = {
            "step": t,
            "reward": true_reward,
            "acc": float(acc.mean()),
            "response_tokens": float(gen["response_mask"].sum(-1).float().mean()),
            "grad_norm": float(metrics["grad_norm"]),
            "pre_norm": dict(engine.pre_norms),
            "update": group_update_norms(weights, new, groups),
            "skipped": bool(clip.skipped),
            "clipped": bool((clip.scales < 1).any()) and not clip.skipped,
            "min_scale": float(clip.scales.min()),
            "fault_fired": bool(engine.fault_fired) or (fault.kind == "reward_noise" and t == fault.step),
        }
        weights = new
        sampler.load(weights)
        if t == fault.step:
            step["probe_kl"] = probe_kl(before_lp, sampler.response_logprobs(probe), probe["response_mask"])
        record["steps"].append(step)
        log(
            f"    step {t + 1:>2}/{size.steps} reward {true_reward:+.3f} grad_norm {step['grad_norm']:.3g}"
            f" clipped {int(step['clipped'])} skipped {int(step['skipped'])}"
            + ("  <- fault" if step["fault_fired"] else "")
        )
    eval_puzzles = puzzles_for(0, 0, size.eval_prompts, size.people, split="eval")
    greedy = sampler.generate(sampler.encode(eval_puzzles), size.response_length, seed=None)
    _, eval_acc = score(
        sampler.texts(greedy["responses"], greedy["response_mask"]), [p.answer_text for p in eval_puzzles]
    )
    record["greedy_acc"] = float(eval_acc.mean())
    record["measure_scheme"] = MEASURE_SCHEME
    return record
