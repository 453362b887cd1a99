"""With LoRA, AGGC groups are the seven adapted projections and only adapter weights are clipped."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from aggc_rl.clipping import GradClipper
from aggc_rl.tiny import lm_loss, tiny_qwen2

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_lora_groups_are_the_seven_projections():
    model = get_peft_model(tiny_qwen2(), LoraConfig(r=4, lora_alpha=8, target_modules=list(PROJECTIONS)))
    lm_loss(model, torch.randint(0, 96, (2, 8))).backward()
    # LoRA B starts at zero, so only B has a gradient on the first step; give A one too.
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.randn_like(p)
    clipper = GradClipper(model.named_parameters(), "aggc")
    assert set(clipper.groups) == set(PROJECTIONS)
    assert all("lora_" in n for n in clipper.param_names)
    frozen = {n: p.grad for n, p in model.named_parameters() if not p.requires_grad}
    assert all(g is None for g in frozen.values())
    result = clipper.clip_()
    for j, group in enumerate(result.groups):
        want = torch.cat(
            [p.grad.flatten() for n, p in model.named_parameters() if p.requires_grad and f".{group}." in n]
        )
        assert float(result.norms[j]) == pytest.approx(float(want.double().norm()), rel=1e-6), group
