"""The LoRA SFT scripts (my_scripts/run_lora_aggc_*_metamath.sh, logic in my_scripts/sft_common.sh), without a GPU.

A dry run prints the training command with the official AGGC LoRA recipe, the merge and the GSM8K evaluation,
and starts nothing; its Hydra arguments compose with configs/aggc_sft_trainer.yaml and build the engine config
and clip rule the trainer would build; CLIP switches the method; bad settings are refused with exit 2.
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from script_sandbox import Sandbox, as_dict, hydra_args, make_sandbox, run

from verl_patches.config_files import CONFIG_DIR, SFT_CONFIG_NAME

SCRIPTS = {
    "run_lora_aggc_mistral-7b_metamath.sh": "mistralai/Mistral-7B-v0.1",
    "run_lora_aggc_llama2-7b_metamath.sh": "meta-llama/Llama-2-7b-hf",
}
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: The official LoRA run's settings (AGGC's LoRA scripts), as composed values.
RECIPE = {
    "model.lora_rank": 128,
    "model.lora_alpha": 128,
    "model.target_modules": PROJECTIONS,
    "optim.lr": 2e-5,
    "optim.lr_scheduler_type": "cosine",
    "optim.lr_warmup_steps_ratio": 0.03,
    "trainer.total_epochs": 1,
    "data.max_length": 512,
    "data.train_batch_size": 32,
    "engine.dtype": "bfloat16",
    "trainer.n_gpus_per_node": 4,
    "engine.clip": "aggc_lora",
    "chat_template": "alpaca",
}


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return make_sandbox(tmp_path)


def compose_sft(args: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(SFT_CONFIG_NAME, overrides=args)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("interpreter", ["sh", "bash"])
def test_dry_run_prints_the_recipe_then_merge_and_eval(sandbox, script, interpreter):
    out = run(sandbox, script, interpreter=interpreter, DRY_RUN="1")
    assert out.returncode == 0, out.stderr
    assert "-m torch.distributed.run --nproc_per_node=4 -m aggc_rl.sft" in out.stdout
    assert (
        "merge_ckpt/merge.sh" in out.stdout and "-m eval.run" in out.stdout and "--task gsm8k" in out.stdout
    )
    assert "aggc_rl.data.metamath" in out.stdout and "--limit 100000" in out.stdout
    args = as_dict(hydra_args(out.stdout))
    assert args["engine.clip"] == "aggc_lora" and args["model.path"] == SCRIPTS[script]
    assert args["model.override_config.attn_implementation"] == "flash_attention_2"
    assert args["trainer.max_ckpt_to_keep"] == "3"
    assert "check attention: ATTN=flash_attention_2 needs flash_attn" in out.stdout
    # A dry run starts nothing: its one Python call looks for flash_attn without importing it.
    assert len(sandbox.python_calls()) == 1 and 'find_spec("flash_attn")' in sandbox.python_calls()[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_args_compose_and_build_the_engine_the_trainer_builds(sandbox, script):
    from verl.utils.config import omega_conf_to_dataclass

    from aggc_rl.sft import validate

    cfg = compose_sft(hydra_args(run(sandbox, script, DRY_RUN="1").stdout))
    for key, value in RECIPE.items():
        got = cfg
        for part in key.split("."):
            got = got[part]
        assert (list(got) if key == "model.target_modules" else got) == value, key
    validate(cfg)  # the engine config, the clip spec and the chat template, as before training
    engine = omega_conf_to_dataclass(cfg.engine)
    rule = engine.clip_spec(cfg.optim.clip_grad).build_rule()
    assert (rule.beta, rule.low, rule.low_late, rule.high, rule.high_late) == (0.95, 0.95, 0.98, 0.6, 0.7)
    assert (rule.switch, rule.transition, rule.min_norm, rule.raise_small) == (0.4, 0.3, 0.01, False)
    assert (rule.max_up, rule.max_down, rule.schedule) == (1.1, 0.9, "linear")


def test_clip_global_gives_the_lora_baseline(sandbox):
    out = run(sandbox, "run_lora_aggc_mistral-7b_metamath.sh", interpreter="sh", DRY_RUN="1", CLIP="global")
    assert out.returncode == 0, out.stderr
    args = as_dict(hydra_args(out.stdout))
    assert args["engine.clip"] == "global"
    assert "lora_global" in args["trainer.experiment_name"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLIP": "bogus"}, "CLIP='bogus' is invalid; allowed: global, aggc"),
        ({"N_GPUS": "3"}, "does not divide the effective batch 32"),
        ({"N_GPUS": "x"}, "N_GPUS='x' is invalid"),
    ],
)
def test_bad_settings_exit_2(sandbox, env, message):
    out = run(sandbox, "run_lora_aggc_llama2-7b_metamath.sh", interpreter="sh", DRY_RUN="1", **env)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_without_gpus_a_real_run_stops_before_anything_starts(sandbox):
    out = run(sandbox, "run_lora_aggc_mistral-7b_metamath.sh", interpreter="sh")
    assert out.returncode == 1 and "nvidia-smi not found" in out.stderr, out.stderr
    assert sandbox.python_calls() == []
