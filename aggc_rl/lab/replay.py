"""Lab v2's core: a warm, shared state per seed, and twins that replay the same recorded batches.

Why (issue 22): a fault that lands on a fresh AdamW (step 4) is hidden by bias correction, and a faulted run
that resamples from its own weights mixes the optimizer's memory with different data. So, per seed:

1. Warm-up: on-policy GRPO from the proxy for ``warmup`` steps under arm ``none`` (no clipping), AdamW with
   ``beta2`` such that ``warmup >= 1 / (1 - beta2)``: the second moment has left its bias-corrected start.
   Every step's pre-clip gradient is recorded. The weights and Adam's moments after it are the warm state.
2. Clean continuation: ``replay + 1`` more on-policy steps under ``none``; their PPO batches (prompts,
   responses, old log-probs, advantages) are recorded. These are the batches every branch trains on.
3. A branch (arm, fault): the warm weights and Adam state, the arm's rule warmed by running the recorded
   warm-up gradients through it (the rule's EMA / windows see the same history in every arm), then the
   recorded batches, the fault at the first. Clean and faulted twins of an arm therefore differ only by what
   the optimizer and the rule remember of the fault.

This module runs branches and returns trajectories; :mod:`aggc_rl.lab.errors` turns twins into measurements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aggc_rl.inprocess.arms import NONE, Arm
from aggc_rl.inprocess.shards import local, local_params
from aggc_rl.inprocess.size import LabSize
from aggc_rl.proxy.policy import RESPONSE_LENGTH, train_puzzles
from aggc_rl.proxy.sampler import Sampler, score, stable_seed

#: Faults that change the replayed batch itself (the others are injected by the lab engine).
BATCH_FAULTS = ("outlier_sequence", "reward_noise")


@dataclass(frozen=True)
class ReplaySize:
    """Sizes of one seed's warm-up and replay."""

    warmup: int = 50
    beta2: float = 0.98
    replay: int = 50
    prompts: int = 4
    samples: int = 4
    lr: float = 1e-4
    response_length: int = RESPONSE_LENGTH
    people: int = 2

    def check(self) -> None:
        if not 0.0 < self.beta2 < 1.0:
            raise ValueError(f"beta2={self.beta2} must be in (0, 1)")
        if self.warmup < 1.0 / (1.0 - self.beta2) - 1e-9:
            raise ValueError(
                f"warmup={self.warmup} < 1/(1-beta2) = {1 / (1 - self.beta2):.0f}: Adam's second moment would still "
                "be in its bias-corrected start at the fault"
            )
        if self.replay < 1 or self.samples < 2 or self.prompts < 1:
            raise ValueError(
                f"replay={self.replay}, prompts={self.prompts}, samples={self.samples}: need >=1, >=1, >=2"
            )

    @property
    def total(self) -> int:
        """Optimizer steps of a branch's whole life (warm-up, fault step, replay): the progress denominator."""
        return self.warmup + 1 + self.replay

    def lab_size(self) -> LabSize:
        return LabSize(steps=self.total, fault_step=1, prompts=self.prompts, samples=self.samples,
                       response_length=self.response_length, lr=self.lr, people=self.people)  # fmt: skip


@dataclass
class WarmState:
    """One seed's shared start: weights, Adam state, the warm-up's gradients and the clean batches."""

    seed: int
    weights: dict[str, torch.Tensor]
    adam: dict[str, dict[str, torch.Tensor]]
    warm_grads: list[dict[str, torch.Tensor]]
    batches: list[Any]  # PPO batches (TensorDict) of the clean continuation, fault step first
    rewards: list[float] = field(default_factory=list)


def build(model_path: Path, arm: Arm, size: ReplaySize):
    """The lab engine for ``arm`` with the replay's AdamW betas (cfg, setup, engine, loss_fn)."""
    from aggc_rl.inprocess.loop import build_engine

    n = size.prompts * size.samples
    return build_engine(model_path, arm, size.lab_size(), batch_size=n,
                        extra=(f"actor_rollout_ref.actor.optim.betas=[0.9,{size.beta2}]",))  # fmt: skip


def adam_state(engine) -> dict[str, dict[str, torch.Tensor]]:
    """Copies of AdamW's per-parameter state by parameter name (exp_avg, exp_avg_sq, step)."""
    by_param = engine.optimizer.state
    out = {}
    for name, p in engine.module.named_parameters():
        if p in by_param:
            out[name] = {k: local(v).detach().clone() for k, v in by_param[p].items()}
    return out


@torch.no_grad()
def restore(engine, state: WarmState, size: ReplaySize) -> None:
    """Put ``state``'s weights and Adam state into ``engine`` (in place), reset its rule and warm it with
    the recorded warm-up gradients; the LR scheduler and step counters as after the warm-up."""
    named = dict(engine.module.named_parameters())
    for name, p in named.items():
        local(p).copy_(state.weights[name])
    opt_state = engine.optimizer.state
    for name, saved in state.adam.items():
        p = named[name]
        current = opt_state.setdefault(p, {})
        for key, value in saved.items():
            if key not in current:  # a new engine: Adam's state is created on the first step, shaped like p
                current[key] = value.clone() if key == "step" else torch.zeros_like(p)
            local(current[key]).copy_(value)
    engine.clipper.reset_state()
    engine.optimizer.zero_grad(set_to_none=False)
    for t, grads in enumerate(state.warm_grads):
        for name, g in grads.items():
            p = named[name]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            local(p.grad).copy_(g)
        engine.clipper.clip_(progress=t / size.total)  # the rule's state sees the warm-up; nothing is applied
    engine.optimizer.zero_grad(set_to_none=False)
    scheduler = engine.lr_scheduler
    scheduler.last_epoch = size.warmup
    # The lr itself, as the schedule has it after the warm-up (setting last_epoch alone leaves the lr of the
    # previous branch in place; verl's schedules are LambdaLR).
    for group, base, factor in zip(
        engine.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(size.warmup)
    engine.steps_done = size.warmup


def sample_batch(sampler: Sampler, setup, cfg, seed: int, t: int, size: ReplaySize):
    """The on-policy PPO batch of step ``t`` of ``seed``'s stream, sampled from ``sampler``'s weights: the
    prompts and the sampling seed depend on (seed, t) only, so equal weights give an equal batch."""
    from aggc_rl.inprocess.loop import grpo_advantages, padded_batch
    from verl_cpu import harness

    puzzles = train_puzzles("lab", seed, t, size.prompts, size.people)
    ids = [x for x in sampler.encode(puzzles) for _ in range(size.samples)]
    answers = [p.answer_text for p in puzzles for _ in range(size.samples)]
    gen = sampler.generate(ids, size.response_length, seed=stable_seed("lab-sample", seed, t))
    r, _ = score(sampler.texts(gen["responses"], gen["response_mask"]), answers)
    batch = harness.make_ppo_batch(
        setup, cfg, padded_batch(gen, grpo_advantages(r, gen["response_mask"], size.samples))
    )
    return batch, float(r.mean())


def warm_state(model_path: Path, seed: int, size: ReplaySize, log=print) -> WarmState:
    """Steps 1 and 2 of the module docstring, under arm ``none``."""
    from verl_cpu import harness

    size.check()
    cfg, setup, engine, loss_fn = build(model_path, NONE, size)
    engine.arm(None)
    sampler = Sampler(model_path, compact=True)
    sampler.load(local_params(engine))
    warm_grads: list[dict[str, torch.Tensor]] = []
    batches, rewards = [], []
    engine.record_grads = warm_grads
    for t in range(size.warmup + 1 + size.replay):
        if t == size.warmup:
            engine.record_grads = None
            weights, adam = local_params(engine), adam_state(engine)
        batch, reward = sample_batch(sampler, setup, cfg, seed, t, size)
        if t >= size.warmup:
            batches.append(batch.clone())
        rewards.append(reward)
        harness.train_step(engine, batch, loss_fn)
        sampler.load(local_params(engine))
        if t % 25 == 0:
            log(f"    warm-up seed {seed} step {t + 1}/{size.warmup + 1 + size.replay} reward {reward:+.3f}")
    return WarmState(seed, weights, adam, warm_grads, batches, rewards)


def _rows(adv: torch.Tensor) -> list[torch.Tensor]:
    """One view per sequence of a batch's advantages (padded rows, or the rows of a nested tensor)."""
    if adv.is_nested:  # no-padding layout: one nested row per sequence, views into values()
        dense, offsets = adv.values(), adv.offsets()
        return [dense[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    return list(adv)


def outlier_(batch, scale: float) -> None:
    """One sequence of the batch gets its advantages x ``scale``: the one with the largest |advantage|, so the
    outlier is a sample that already moves the update (a zero-advantage one would be a null fault)."""
    rows = _rows(batch["advantages"])
    pick = max(range(len(rows)), key=lambda i: float(rows[i].abs().max()))
    rows[pick] *= scale


def reward_noise_(batch, samples: int, seed: int) -> None:
    """The batch's advantages replaced by verl's GRPO advantages of uniform random rewards over the scorer's
    range (one scalar per sequence, on every response token, as the outcome advantage is)."""
    from aggc_rl.inprocess.loop import grpo_advantages
    from aggc_rl.proxy.sampler import REWARD_RANGE

    rows = _rows(batch["advantages"])
    gen = torch.Generator().manual_seed(stable_seed("lab-reward-noise", seed) % (2**31))
    lo, hi = REWARD_RANGE
    rewards = lo + (hi - lo) * torch.rand(len(rows), generator=gen)
    adv = grpo_advantages(rewards, torch.ones(len(rows), 1, dtype=torch.long), samples)[:, -1]
    for row, a in zip(rows, adv, strict=True):
        row.fill_(float(a))


@dataclass
class OnPolicy:
    """Branch on-policy instead of replaying: each step samples from the branch's own weights (same prompts
    and sampling seeds as the clean continuation), so a fault's behavioural effect shows in the rewards."""

    sampler: Sampler
    setup: Any
    cfg: Any


def branch(
    engine, loss_fn, state: WarmState, size: ReplaySize, fault=None, on_policy: OnPolicy | None = None
) -> list[dict[str, Any]]:
    """One twin: restore, then train on the recorded batches (or, ``on_policy``, on fresh samples) with
    ``fault`` at the first. Per step (0: the warm state, 1..replay+1 after each update): weights, Adam's
    moments, the clip result and, on-policy, the batch's mean reward."""
    from verl_cpu import harness

    restore(engine, state, size)
    engine.arm(None if fault is None else dataclasses.replace(fault, step=size.warmup, seed=state.seed))
    trajectory: list[dict[str, Any]] = [
        {"params": local_params(engine), "adam": adam_state(engine), "clip": None}
    ]
    for t, recorded in enumerate(state.batches):
        reward = None
        if on_policy is None:
            batch = recorded.clone()
        else:
            on_policy.sampler.load(local_params(engine))
            batch, reward = sample_batch(
                on_policy.sampler, on_policy.setup, on_policy.cfg, state.seed, size.warmup + t, size
            )
        in_batch = fault is not None and fault.kind in BATCH_FAULTS and t < fault.duration
        if in_batch and fault.kind == "outlier_sequence":
            outlier_(batch, fault.scale)
        elif in_batch:
            reward_noise_(batch, size.samples, state.seed)
        harness.train_step(engine, batch, loss_fn)
        trajectory.append({"params": local_params(engine), "adam": adam_state(engine), "clip": engine.last_clip,
                           "pre_norm": dict(engine.pre_norms), "fault_fired": engine.fault_fired or in_batch,
                           "reward": reward})  # fmt: skip
    return trajectory
