"""The CPU recipe is written once and reaches both users: the demo's trainer command and the harness's config."""

from __future__ import annotations

from pathlib import Path

from aggc_rl.demo import DemoSettings, trainer_overrides
from verl_cpu import harness
from verl_cpu.recipe import CPU_ACTOR_OVERRIDES


def test_the_demo_passes_every_override_of_the_recipe(tmp_path: Path):
    overrides = trainer_overrides(
        tmp_path / "model", tmp_path / "data", tmp_path / "run", "aggc", DemoSettings()
    )
    missing = [o for o in CPU_ACTOR_OVERRIDES if o not in overrides]
    assert not missing, missing
    keys = [o.split("=", 1)[0].lstrip("+") for o in overrides]
    assert len(keys) == len(set(keys)), "a key is given twice: the recipe and the demo disagree"


def test_the_harness_config_has_the_recipe(tmp_path: Path):
    cfg = harness.ppo_config(str(tmp_path / "model"))
    model, actor = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.actor
    assert model.override_config.attn_implementation == "sdpa"
    assert model.enable_gradient_checkpointing is False
    assert actor.use_torch_compile is False and actor.fsdp_config.use_torch_compile is False
    assert cfg.actor_rollout_ref.ref.fsdp_config.use_torch_compile is False
    assert dict(actor.fsdp_config.mixed_precision) == {
        "param_dtype": "fp32",
        "reduce_dtype": "fp32",
        "buffer_dtype": "fp32",
    }
    assert cfg.trainer.device == "cpu"
