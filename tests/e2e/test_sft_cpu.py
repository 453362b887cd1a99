"""verl's SFT trainer on CPU through ``python -m aggc_rl.sft``: two gloo ranks (torchrun), clip=aggc, LoRA.

One run trains 3 steps straight; another trains 2, stops, and is started again to finish step 3 from its
checkpoint. The resumed clipper state must equal the uninterrupted one (the EMA continues exactly, the
step counter too), the metrics log must hold the clip metrics as plain numbers for every step, and the last
checkpoint must merge (LoRA folded in) into a model that ``python -m eval.run`` evaluates on GSM8K items.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aggc_rl.tiny import TinySpec, build

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def gsm8k_like(path: Path, count: int) -> Path:
    """Records in GSM8K's JSONL shape (question, answer ending in ``#### n``)."""
    with path.open("w") as f:
        for i in range(count):
            answer = f"{i} plus {i} is {2 * i}.\n#### {2 * i}"
            f.write(json.dumps({"question": f"What is {i} plus {i}?", "answer": answer}) + "\n")
    return path


def sft(run: Path, model: Path, data: Path, steps: int, port: int) -> subprocess.CompletedProcess:
    overrides = [
        f"model.path={model}",
        f"data.train_files={data / 'train.parquet'}",
        "data.train_batch_size=8",
        "data.micro_batch_size_per_gpu=2",  # 2 micro-batches per rank: gradients accumulate
        "data.max_length=192",
        "data.use_dynamic_bsz=false",
        "data.num_workers=0",
        "model.use_remove_padding=false",
        "+model.override_config.attn_implementation=sdpa",
        "model.enable_gradient_checkpointing=false",
        "model.lora_rank=8",
        "model.lora_alpha=16",
        f"model.target_modules=[{','.join(PROJECTIONS)}]",
        "engine.use_torch_compile=false",
        "engine.model_dtype=fp32",
        "engine.clip=aggc",
        # verl seeds the model (and the LoRA init) only with full determinism; both runs must start alike.
        "engine.full_determinism=true",
        "optim.lr=1e-2",
        "trainer.device=cpu",
        f"trainer.total_training_steps={steps}",
        "trainer.save_freq=1",
        f"trainer.default_local_dir={run / 'ckpt'}",
        "trainer.logger=[console,file]",
    ]
    # The first part of the resumed run stops at step 2. AGGC's band multipliers do not move before 60% of
    # training and the LR is constant, so steps 1-2 see the same rule as in the 3-step run.
    env = {
        **os.environ,
        "VERL_PLATFORM": "cpu",
        "VERL_FILE_LOGGER_PATH": str(run / "metrics.jsonl"),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    cmd += ["-m", "aggc_rl.sft", *overrides]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def clip_state(run: Path, step: int, rank: int = 0) -> dict:
    return torch.load(run / "ckpt" / f"global_step_{step}" / f"clip_state_world_size_2_rank_{rank}.pt")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("sft")
    model = build(root / "model", TinySpec(hidden_size=64))
    data = root / "data"
    made = subprocess.run(
        [sys.executable, "-m", "aggc_rl.data.metamath", "--out", str(data), "--source", "gsm8k",
         "--jsonl", str(gsm8k_like(root / "gsm8k.jsonl", 48))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return root, model, data


def test_sft_with_aggc_and_lora_resumes_exactly_merges_and_evaluates(setup):
    root, model, data = setup
    straight, resumed = root / "straight", root / "resumed"

    out = sft(straight, model, data, steps=3, port=29631)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    out = sft(resumed, model, data, steps=2, port=29632)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not (resumed / "ckpt" / "global_step_3").exists()
    out = sft(resumed, model, data, steps=3, port=29633)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    a, b = clip_state(straight, 3), clip_state(resumed, 3)
    assert a["rule"] == b["rule"] == "aggc"
    assert a["groups"] == b["groups"] == list(PROJECTIONS)  # LoRA: the adapted projections are the groups
    assert int(a["state"]["step"]) == int(b["state"]["step"]) == 3
    assert torch.count_nonzero(a["state"]["ema"]) == len(PROJECTIONS)
    torch.testing.assert_close(b["state"]["ema"], a["state"]["ema"], rtol=1e-6, atol=1e-12)
    assert torch.equal(
        clip_state(resumed, 3, rank=1)["state"]["ema"], b["state"]["ema"]
    )  # same on every rank

    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r["data"]]
    assert [r["step"] for r in train] == [1, 2, 3]
    for r in train:
        m = r["data"]
        assert isinstance(m["train/clip/total_norm_pre"], float)
        assert m["train/grad_norm"] == pytest.approx(m["train/clip/total_norm_pre"], rel=1e-6)
        assert all(isinstance(m[f"train/clip/scale/{g}"], float) for g in PROJECTIONS)
    # After the first step the inverted official band scales every group down (0.9): the clip acted.
    assert train[1]["data"]["train/clip/frac_scaled_down"] == 1.0

    merged = root / "merged"
    out = subprocess.run(
        ["bash", str(REPO / "my_scripts" / "merge_ckpt" / "merge.sh"), str(resumed / "ckpt"), "latest", str(merged)],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "folded the LoRA adapter" in out.stdout

    test_rows = root / "gsm8k_test"
    subprocess.run(
        [sys.executable, "-m", "aggc_rl.data.gsm8k", "--out", str(test_rows),
         "--test-jsonl", str(gsm8k_like(root / "test.jsonl", 4))],
        check=True, capture_output=True,
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "eval.run", "--model", str(merged), "--task", "gsm8k", "--backend", "hf",
         "--data", str(test_rows), "--out", str(root / "eval"), "--limit", "4", "--max-new-tokens", "16",
         "--device", "cpu", "--method", "flexible"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert list((root / "eval").rglob("*.json")), "eval.run wrote no results"
