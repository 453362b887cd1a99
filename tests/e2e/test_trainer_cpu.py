"""verl's whole GRPO trainer on CPU with clip=aggc: train, checkpoint, resume, merge, generate.

Ray, verl's v1 trainer and agent loop, the hf_cpu rollout, the Knights-and-Knaves reward, GRPO, the
aggc_fsdp2 actor update, verl's checkpoints and ``trainer.resume_mode=auto``, then verl's model merger
on the last checkpoint and the merged model generating with transformers. A small entropy bonus
keeps gradients non-zero even when every sample of a random tiny policy earns the same reward.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aggc_rl.demo import DemoSettings, read_metrics, trainer_env, trainer_overrides
from aggc_rl.tiny import TinySpec, build

pytestmark = pytest.mark.slow

SETTINGS = DemoSettings(steps=2, prompts_per_step=2, samples_per_prompt=2, response_length=16, lr=1e-3)
EXTRA = ["actor_rollout_ref.actor.entropy_coeff=0.01", "trainer.save_freq=1"]


def train(model: Path, data: Path, run: Path, steps: int) -> subprocess.CompletedProcess:
    overrides = trainer_overrides(model, data, run, "aggc", SETTINGS, steps=steps)
    cmd = [sys.executable, "-m", "aggc_rl.train", *overrides, *EXTRA]
    return subprocess.run(cmd, env=trainer_env(run), capture_output=True, text=True, timeout=900, check=False)


def training_records(run: Path) -> list[dict]:
    """Training-step records of verl's metrics log (validation records carry no reward mean)."""
    return [r for r in read_metrics(run / "metrics.jsonl") if "critic/score/mean" in r["data"]]


def clip_state(run: Path, step: int) -> dict:
    return torch.load(run / "ckpt" / f"global_step_{step}" / "actor" / "clip_state_world_size_1_rank_0.pt")


def test_grpo_trains_checkpoints_resumes_and_merges(tmp_path):
    model = build(tmp_path / "model", TinySpec(hidden_size=64))
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "aggc_rl.data.knights_knaves", "--out", str(data), "--people", "2",
         "--train", "16", "--test", "4", "--seed", "0"],
        check=True, capture_output=True,
    )  # fmt: skip
    run = tmp_path / "run"

    first = train(model, data, run, steps=2)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    records = training_records(run)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        m = r["data"]
        assert m["actor/grad_norm"] == pytest.approx(m["actor/clip/total_norm_pre"], rel=1e-6)
        # The rollout sampled with the actor's current weights: after step 1 that needs the weight sync.
        assert m["training/rollout_probs_diff_max"] < 1e-4
        assert "critic/score/mean" in m and "actor/clip/norm/q_proj" in m and "actor/clip/scale/lm_head" in m
    saved = clip_state(run, 2)
    assert int(saved["state"]["step"]) == 2 and saved["groups"][0] == "embed_tokens"
    assert (run / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"

    # Resume (verl's default resume_mode=auto) for one more step: the clipper continues from step 2.
    second = train(model, data, run, steps=3)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    records = training_records(run)
    assert [r["step"] for r in records] == [1, 2, 3]  # the first part's records survive the resume
    validations = [r for r in read_metrics(run / "metrics.jsonl") if "critic/score/mean" not in r["data"]]
    assert validations and all(
        any(k.startswith("val-core/knights_knaves/") for k in r["data"]) for r in validations
    )
    resumed = clip_state(run, 3)
    assert int(resumed["state"]["step"]) == 3
    # EMA_3 = beta * EMA_2 + (1 - beta) * scale_3 * norm_3, group by group: the restored EMA was used.
    m3 = records[-1]["data"]
    beta = 0.99
    for j, group in enumerate(resumed["groups"]):
        want = (
            beta * float(saved["state"]["ema"][j])
            + (1 - beta) * m3[f"actor/clip/scale/{group}"] * m3[f"actor/clip/norm/{group}"]
        )
        assert float(resumed["state"]["ema"][j]) == pytest.approx(want, rel=1e-5, abs=1e-12), group
    assert any(float(v) > 0 for v in saved["state"]["ema"])

    merged = tmp_path / "merged"
    merge = subprocess.run(
        [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
         "--local_dir", str(run / "ckpt" / "global_step_3" / "actor"), "--target_dir", str(merged)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert merge.returncode == 0, merge.stdout[-3000:] + merge.stderr[-3000:]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    policy = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Who is a knight?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = policy.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8 or int(out[0, -1]) == tokenizer.eos_token_id
    print(
        json.dumps(
            {
                "steps": [r["step"] for r in records],
                "time_per_step": [r["data"]["timing_s/step"] for r in records],
            }
        )
    )
