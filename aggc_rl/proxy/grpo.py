"""One on-policy GRPO run on the proxy (:mod:`aggc_rl.proxy.policy`) through the project's update path, in process.

The shared in-process harness (:mod:`aggc_rl.inprocess.loop`): per step the current weights sample ``samples``
responses to each of ``prompts`` training puzzles (temperature 1, seed from (seed, step) only: every arm and learning
rate sees the same puzzles and random stream), the project's K&K reward scores them, verl's GRPO outcome
advantage normalises them per prompt, and verl's PPO loss plus one optimizer step of the ``aggc_fsdp2``
engine (via the lab's engine, no fault armed) update the policy. Greedy accuracy on the held-out puzzles
is measured at the start, every ``eval_every`` steps and at the end. A non-finite loss or gradient norm
ends the run (it counts as collapsed).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aggc_rl.inprocess.arms import Arm
from aggc_rl.proxy.policy import RESPONSE_LENGTH, finish_record, heldout_eval, train_puzzles
from aggc_rl.proxy.sampler import Sampler, score, stable_seed


@dataclass(frozen=True)
class GRPOSize:
    """Sizes of one proxy GRPO run."""

    steps: int = 60
    prompts: int = 16
    samples: int = 8
    response_length: int = RESPONSE_LENGTH
    eval_every: int = 20  # held-out greedy accuracy every this many steps (and at the start and end)
    people: int = 2

    def describe(self) -> str:
        return f"{self.steps} GRPO steps of {self.prompts} prompts x {self.samples} samples"

    def check(self) -> None:
        if self.steps < 2:
            raise ValueError(f"steps={self.steps} must be >= 2")
        if self.samples < 2:
            raise ValueError(f"samples={self.samples} must be >= 2 (GRPO normalises within a prompt's group)")
        if self.eval_every < 1:
            raise ValueError(f"eval_every={self.eval_every} must be >= 1")


def _finite(x: float) -> bool:
    return math.isfinite(x)


def run(
    model_path: Path,
    arm: Arm,
    lr: float,
    seed: int,
    size: GRPOSize,
    heldout,
    device: str = "cpu",
    log=print,
    start_eval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One (arm, lr, seed) run; returns its record (JSON-safe).

    ``start_eval``: the starting policy's held-out result when already measured (the same for every run of a
    sweep: same proxy, same puzzles), else it is measured here."""
    from aggc_rl.inprocess.loop import (
        LabSize,
        build_engine,
        ensure_process_group,
        grpo_advantages,
        padded_batch,
    )
    from verl_cpu import harness

    size.check()
    ensure_process_group(device)
    n = size.prompts * size.samples
    lab_size = LabSize(
        steps=size.steps,
        fault_step=1,
        prompts=size.prompts,
        samples=size.samples,
        response_length=size.response_length,
        lr=lr,
        people=size.people,
    )
    cfg, setup, engine, loss_fn = build_engine(model_path, arm, lab_size, batch_size=n)
    engine.arm(None)
    sampler = Sampler(model_path, device, compact=True)
    from aggc_rl.inprocess.shards import local_params

    sampler.load(local_params(engine))
    groups = engine.measure_groups
    clip_groups = list(engine.clipper.groups)

    record: dict[str, Any] = {
        "arm": arm.name,
        "arm_desc": arm.describe(lab_size),
        "lr": lr,
        "seed": seed,
        "size": dataclasses.asdict(size),
        "groups": list(groups),
        "clip_groups": clip_groups,
        "steps": [],
        "evals": [],
    }
    t0 = time.time()

    def evaluate(step: int) -> None:
        r = heldout_eval(sampler, heldout, max_new=size.response_length)
        record["evals"].append({"step": step, **r, "wall_s": time.time() - t0})
        log(f"    eval at step {step}: held-out acc {r['acc']:.3f} reward {r['reward']:+.3f}")

    if start_eval is None:
        evaluate(0)
    else:
        record["evals"].append({"step": 0, **start_eval, "wall_s": 0.0})
    nonfinite = False
    for t in range(size.steps):
        t_step = time.perf_counter()
        puzzles = train_puzzles("rl", seed, t, size.prompts, size.people)
        prompt_ids = [ids for ids in sampler.encode(puzzles) for _ in range(size.samples)]
        answers = [p.answer_text for p in puzzles for _ in range(size.samples)]
        gen = sampler.generate(prompt_ids, size.response_length, seed=stable_seed("proxy-sample", seed, t))
        sample_s = time.perf_counter() - t_step
        rewards, acc = score(sampler.texts(gen["responses"], gen["response_mask"]), answers)
        adv = grpo_advantages(rewards, gen["response_mask"], size.samples)
        batch = harness.make_ppo_batch(setup, cfg, padded_batch(gen, adv))
        metrics = harness.train_step(engine, batch, loss_fn)
        clip = engine.last_clip
        grad_norm = float(metrics["grad_norm"])
        loss = logged_loss(metrics)
        step = {
            "step": t,
            "reward": float(rewards.mean()),
            "acc": float(acc.mean()),
            "response_tokens": float(gen["response_mask"].sum(-1).float().mean()),
            "grad_norm": grad_norm,
            "loss": loss,
            "pre_norm": dict(engine.pre_norms),
            "scales": [float(s) for s in clip.scales.flatten()],
            "skipped": bool(clip.skipped),
            "clipped": bool((clip.scales < 1).any()) and not clip.skipped,
        }
        record["steps"].append(step)
        log(
            f"    step {t + 1:>3}/{size.steps} reward {step['reward']:+.3f} acc {step['acc']:.3f} "
            f"grad_norm {grad_norm:.3g} clipped {int(step['clipped'])}"
        )
        if not (_finite(grad_norm) and (loss is None or _finite(loss))):
            nonfinite = True
            log(f"    non-finite loss or grad norm at step {t + 1}: the run stops here (collapsed)")
            break
        sampler.load(local_params(engine))
        step["sample_s"], step["step_s"] = sample_s, time.perf_counter() - t_step  # with the weight sync
        if (t + 1) % size.eval_every == 0 and t + 1 < size.steps:
            evaluate(t + 1)
    return finish_record(record, nonfinite, lambda: evaluate(size.steps), t0)


def logged_loss(metrics: dict[str, Any]) -> float | None:
    """The policy loss verl logged for the step (``pg_loss`` or ``loss``), as a float."""
    for key in ("pg_loss", "actor/pg_loss", "loss"):
        if key in metrics:
            value = metrics[key]
            if hasattr(value, "aggregate"):  # verl's Metric
                value = value.aggregate()
            if isinstance(value, (list, tuple)):
                value = sum(float(v) for v in value) / max(1, len(value))
            elif isinstance(value, torch.Tensor):
                value = float(value.float().mean())
            return float(value)
    return None


def weighted_reward(
    sampler: Sampler, gen: dict[str, torch.Tensor], rewards: torch.Tensor, samples: int
) -> float:
    """The current policy's expected reward on a fixed sampled batch, estimated by self-normalised importance
    sampling: per prompt, its responses' rewards weighted by pi_now(y) / pi_sampled(y) (normalised over the
    group), averaged over prompts. For the sampling policy itself it is the batch's mean reward."""
    logp_all = sampler.response_logprobs(gen)
    token_lp = logp_all.gather(-1, gen["responses"][..., None]).squeeze(-1) * gen["response_mask"]
    log_ratio = (token_lp.double() - gen["log_probs"].double() * gen["response_mask"]).sum(-1)
    weights = torch.softmax(log_ratio.view(-1, samples), dim=-1)
    return float((weights * rewards.view(-1, samples).double()).sum(-1).mean())


def replay_fixed_batch(
    model_path: Path,
    arm: Arm,
    lr: float,
    steps: int,
    prompts: int,
    samples: int,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[float, float]:
    """``steps`` GRPO updates on one fixed sampled batch; its :func:`weighted_reward` before and after.

    The batch (puzzles, responses, rewards, advantages and the sampling log-probs verl's PPO loss uses as the
    old policy) is sampled once from the starting weights and replayed, so the only thing that changes
    between the two numbers is what the update path did to the weights.
    """
    from aggc_rl.inprocess.loop import (
        LabSize,
        build_engine,
        ensure_process_group,
        grpo_advantages,
        padded_batch,
    )
    from aggc_rl.inprocess.shards import local_params
    from verl_cpu import harness

    ensure_process_group(device)
    size = LabSize(steps=max(2, steps), fault_step=1, prompts=prompts, samples=samples, lr=lr)
    cfg, setup, engine, loss_fn = build_engine(model_path, arm, size, batch_size=prompts * samples)
    engine.arm(None)
    sampler = Sampler(model_path, device, compact=True)
    sampler.load(local_params(engine))
    puzzles = train_puzzles("replay", seed, 0, prompts)
    ids = [x for x in sampler.encode(puzzles) for _ in range(samples)]
    gen = sampler.generate(ids, RESPONSE_LENGTH, seed=stable_seed("proxy-replay", seed))
    answers = [p.answer_text for p in puzzles for _ in range(samples)]
    rewards, _ = score(sampler.texts(gen["responses"], gen["response_mask"]), answers)
    adv = grpo_advantages(rewards, gen["response_mask"], samples)
    before = weighted_reward(sampler, gen, rewards, samples)
    for _ in range(steps):
        harness.train_step(engine, harness.make_ppo_batch(setup, cfg, padded_batch(gen, adv)), loss_fn)
    sampler.load(local_params(engine))
    return before, weighted_reward(sampler, gen, rewards, samples)
