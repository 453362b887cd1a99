"""One LoRA supervised fine-tuning run on the proxy (:mod:`aggc_rl.proxy.policy`), in process, through the engine.

The path of the AGGC paper's headline claim (LoRA SFT) at proxy scale: the warm-started proxy is the base
model; verl's engine (the ``aggc_fsdp2`` clip engine via the lab's engine, world size 1, nothing armed)
trains LoRA adapters (``model.lora_rank``, every linear projection, so the clip groups are the seven
projection types) with the answer-token negative log-likelihood (verl's ``sft_loss`` on padded responses);
the clip rule under test sees the adapters' gradients. Per step ``batch`` fresh training puzzles of stream
``sft`` and the seed (never held out); the seed also draws the adapters' initialisation. Greedy held-out
accuracy at the start (shared), every ``eval_every`` steps and at the end, on the merged weights
(W + B A * alpha / r).
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
from aggc_rl.proxy.policy import finish_record, heldout_eval, train_puzzles
from aggc_rl.proxy.sampler import Sampler, short_answer

#: LoRA adapters of the SFT sweep (rank 8 on a 128-wide model; alpha 2r as is common).
LORA_RANK = 8
LORA_ALPHA = 16


@dataclass(frozen=True)
class SFTSize:
    """Sizes of one proxy LoRA SFT run."""

    steps: int = 150
    batch: int = 16
    eval_every: int = 75
    people: int = 2
    lora_rank: int = LORA_RANK
    lora_alpha: int = LORA_ALPHA

    def describe(self) -> str:
        return f"{self.steps} LoRA SFT steps of batch {self.batch} (rank {self.lora_rank}, alpha {self.lora_alpha})"

    def check(self) -> None:
        if self.steps < 2:
            raise ValueError(f"steps={self.steps} must be >= 2")
        if self.batch < 1:
            raise ValueError(f"batch={self.batch} must be >= 1")
        if self.eval_every < 1:
            raise ValueError(f"eval_every={self.eval_every} must be >= 1")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank={self.lora_rank} must be >= 1 (the SFT sweep trains LoRA adapters)")


class AnswerNLL:
    """verl's ``sft_loss`` for padded responses: the answer tokens' NLL, summed over the batch's loss tokens
    (micro-batches add up to the mean). Keeps the step's loss (verl's engine does not return it)."""

    def __init__(self) -> None:
        self.step_loss = 0.0

    def __call__(self, model_output: dict[str, Any], data, dp_group=None) -> tuple[torch.Tensor, dict]:
        from verl.utils.torch_functional import masked_sum
        from verl.workers.utils.padding import no_padding_2_padding

        log_prob = no_padding_2_padding(model_output["log_probs"], data)
        mask = data["response_mask"].to(bool)
        loss = -masked_sum(log_prob, mask) / data["batch_num_tokens"] * data["dp_size"]
        self.step_loss += float(loss.detach())
        return loss, {}


def merged_weights(params: dict[str, torch.Tensor], rank: int, alpha: int) -> dict[str, torch.Tensor]:
    """peft's parameter names -> the base model's, with each adapter folded in: W + (B @ A) * alpha / rank."""
    out = {}
    scale = alpha / rank
    for name, tensor in params.items():
        if ".lora_" in name:
            continue
        base = name.removeprefix("base_model.model.")
        if ".base_layer." in name:
            stem = name.rsplit(".base_layer.", 1)[0]
            base = base.replace(".base_layer.", ".")
            if name.endswith(".weight"):
                a = params[f"{stem}.lora_A.default.weight"]
                b = params[f"{stem}.lora_B.default.weight"]
                tensor = tensor + (b @ a) * scale
        out[base] = tensor
    return out


def sft_batch(sampler: Sampler, puzzles) -> dict[str, torch.Tensor]:
    """Prompts (left-padded) and their gold short answers + EOS as right-padded responses."""
    from aggc_rl.tiny import EOS

    prompts = sampler.encode(puzzles)
    answers = [sampler.tokenizer.encode(short_answer(p) + EOS, add_special_tokens=False) for p in puzzles]
    ids, mask = sampler.left_pad(prompts)
    width = max(len(a) for a in answers)
    resp = torch.full((len(answers), width), sampler.pad_id, dtype=torch.long)
    rmask = torch.zeros((len(answers), width), dtype=torch.long)
    for i, a in enumerate(answers):
        resp[i, : len(a)] = torch.tensor(a)
        rmask[i, : len(a)] = 1
    return {"prompts": ids, "prompt_mask": mask, "responses": resp, "response_mask": rmask,
            "log_probs": torch.zeros(resp.shape)}  # fmt: skip


@torch.no_grad()
def heldout_nll(sampler: Sampler, puzzles, chunk: int = 250) -> float:
    """Mean answer-token NLL (teacher forced) of the sampler's weights on ``puzzles``: SFT's own smooth measure."""
    total, count = 0.0, 0
    for i in range(0, len(puzzles), chunk):
        gen = sft_batch(sampler, puzzles[i : i + chunk])
        ids = torch.cat([gen["prompts"], gen["responses"]], dim=1)
        mask = torch.cat([gen["prompt_mask"], gen["response_mask"]], dim=1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = sampler.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
        width = gen["responses"].shape[1]
        logp = torch.log_softmax(logits[:, -width - 1 : -1], dim=-1)
        token = logp.gather(-1, gen["responses"][..., None]).squeeze(-1)
        total += float(-(token * gen["response_mask"]).sum())
        count += int(gen["response_mask"].sum())
    return total / count


def run(
    model_path: Path,
    arm: Arm,
    lr: float,
    seed: int,
    size: SFTSize,
    heldout,
    device: str = "cpu",
    log=print,
    start_eval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One (arm, lr, seed) LoRA SFT run; returns its record (JSON-safe, the fields of a GRPO run's)."""
    from aggc_rl.inprocess.loop import LabSize, build_engine, ensure_process_group, padded_batch
    from aggc_rl.inprocess.shards import local_params
    from verl_cpu import harness

    size.check()
    ensure_process_group(device)
    lab_size = LabSize(
        steps=size.steps, fault_step=1, prompts=size.batch, samples=1, lr=lr, people=size.people
    )
    torch.manual_seed(seed)  # the adapters' initialisation (peft draws lora_A from torch's generator)
    cfg, setup, engine, _ = build_engine(
        model_path, arm, lab_size, batch_size=size.batch,
        extra=(f"actor_rollout_ref.model.lora_rank={size.lora_rank}",
               f"actor_rollout_ref.model.lora_alpha={size.lora_alpha}"),
    )  # fmt: skip
    engine.arm(None)
    sampler = Sampler(model_path, device, compact=True)

    def sync() -> None:
        sampler.load(merged_weights(local_params(engine), size.lora_rank, size.lora_alpha))

    record: dict[str, Any] = {
        "arm": arm.name,
        "arm_desc": arm.describe(lab_size),
        "lr": lr,
        "seed": seed,
        "size": dataclasses.asdict(size),
        "groups": list(engine.measure_groups),
        "clip_groups": list(engine.clipper.groups),
        "steps": [],
        "evals": [],
    }
    t0 = time.time()

    def evaluate(step: int) -> None:
        sync()
        r = {**heldout_eval(sampler, heldout), "nll": heldout_nll(sampler, heldout)}
        record["evals"].append({"step": step, **r, "wall_s": time.time() - t0})
        log(
            f"    eval at step {step}: held-out acc {r['acc']:.3f} reward {r['reward']:+.3f} nll {r['nll']:.4f}"
        )

    if start_eval is None:
        evaluate(0)
    else:
        record["evals"].append({"step": 0, **start_eval, "wall_s": 0.0})
    nonfinite, loss_fn = False, AnswerNLL()
    for t in range(size.steps):
        gen = sft_batch(sampler, train_puzzles("sft", seed, t, size.batch, size.people))
        batch = harness.make_ppo_batch(setup, cfg, padded_batch(gen, torch.zeros(gen["responses"].shape)))
        loss_fn.step_loss = 0.0
        metrics = harness.train_step(engine, batch, loss_fn)
        clip = engine.last_clip
        grad_norm = float(metrics["grad_norm"])
        loss = loss_fn.step_loss
        step = {
            "step": t,
            "loss": loss,
            "grad_norm": grad_norm,
            "pre_norm": dict(engine.pre_norms),
            "scales": [float(s) for s in clip.scales.flatten()],
            "skipped": bool(clip.skipped),
            "clipped": bool((clip.scales < 1).any()) and not clip.skipped,
        }
        record["steps"].append(step)
        if t % 25 == 0 or t + 1 == size.steps:
            log(f"    step {t + 1:>3}/{size.steps} loss {loss:.4f} "
                f"grad_norm {grad_norm:.3g} clipped {int(step['clipped'])}")  # fmt: skip
        if not (math.isfinite(grad_norm) and math.isfinite(loss)):
            nonfinite = True
            log(f"    non-finite loss or grad norm at step {t + 1}: the run stops here (collapsed)")
            break
        if (t + 1) % size.eval_every == 0 and t + 1 < size.steps:
            evaluate(t + 1)
    return finish_record(record, nonfinite, lambda: evaluate(size.steps), t0)
