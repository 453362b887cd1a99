"""``make gpu-check``: its CPU path runs (so the script cannot rot before a GPU is lent), and its comparison
catches a difference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from aggc_rl.clipping import GradClipper, make_rule
from aggc_rl.tiny import lm_loss, tiny_qwen2
from bench import gpu_check

REPO = Path(__file__).resolve().parents[2]


def test_make_gpu_check_tiny_prints_its_table_and_exits_0(tmp_path):
    out = subprocess.run(
        ["make", "gpu-check", "TINY=1", f"GPU_PY={sys.executable}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| parity | cpu | bfloat16 | aggc + guard |" in out.stdout
    assert "| fsdp2 ws=1 | cpu | float32 | aggc |" in out.stdout
    assert "MISMATCH" not in out.stdout
    rows = [
        line for line in out.stdout.splitlines() if line.startswith("| parity") or line.startswith("| fsdp2")
    ]
    assert len(rows) == 2 * 2 * 6 + 6  # (no guard, guard) x (fp32, bf16) x 6 rules, + FSDP2 per rule


def _one_step(mult: float):
    model = tiny_qwen2(seed=0)
    lm_loss(model, torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))).backward()
    for p in model.parameters():
        p.grad.mul_(mult)
    return GradClipper(model.named_parameters(), make_rule("global", max_norm=0.01)).clip_(progress=0.5)


def test_a_difference_beyond_the_tolerance_is_a_mismatch():
    want = _one_step(1.0)
    assert float(want.scales.min()) < 1  # the rule acted
    problems: list[str] = []
    assert gpu_check.compare_results(_one_step(1.0), want, 0, 1e-5, problems) == 0.0 and problems == []
    worst = gpu_check.compare_results(_one_step(1.001), want, 0, 1e-5, problems)
    assert worst > 1e-5 and any("norms" in p for p in problems)


def test_rel_diff_sees_a_non_finite_disagreement():
    assert gpu_check.rel_diff(torch.tensor([1.0, float("inf")]), torch.tensor([1.0, 2.0])) == float("inf")
    assert gpu_check.rel_diff(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")])) == 0.0
