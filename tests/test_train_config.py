"""Config composition of `python -m aggc_rl.train`: presets resolve, bad keys and values are refused early."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from verl.utils.config import omega_conf_to_dataclass

from aggc_rl.clipping import RULE_NAMES, GuardConfig, rule_knobs
from aggc_rl.clipping.switch import BLOCK_METHODS, check_clip_overrides
from aggc_rl.train import CONFIG_DIR, CONFIG_NAME
from verl_patches.engine.backend import CLIP_BACKEND
from verl_patches.engine.config import ClipActorConfig

# verl's actor config refuses to build without a micro-batch size; any run sets one.
BASE = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]


def build_actor(*overrides: str) -> ClipActorConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(CONFIG_NAME, overrides=[*BASE, *overrides])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def run_train(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aggc_rl.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def test_yaml_lists_every_knob_with_its_default():
    # One block for every primary config (RL and SFT): configs/clip_config/default.yaml.
    with open(f"{CONFIG_DIR}/clip_config/default.yaml") as f:
        blocks = yaml.safe_load(f)
    for method in BLOCK_METHODS:
        assert blocks[method] == rule_knobs(method), method
    assert {"zclip", "aggc_lora"} <= set(BLOCK_METHODS)
    assert blocks["guard"] == GuardConfig.knobs()
    assert blocks["resume_mismatch"] == "refuse"


def test_guard_and_resume_policy_reach_the_engine_config():
    actor = build_actor(
        "actor_rollout_ref.actor.clip=zclip",
        "actor_rollout_ref.actor.clip_config.guard.skip_above=50",
        "actor_rollout_ref.actor.clip_config.guard.skip_sigma=6",
        "actor_rollout_ref.actor.clip_config.guard.window=16",
        "actor_rollout_ref.actor.clip_config.guard.max_consecutive_skips=0",
        "actor_rollout_ref.actor.clip_config.resume_mismatch=reset",
        "actor_rollout_ref.actor.clip_config.zclip.mode=percentile",
    )
    spec = actor.engine.clip_spec(actor.optim.clip_grad)
    assert spec.guard == GuardConfig(skip_above=50, skip_sigma=6, window=16, max_consecutive_skips=0)
    assert spec.resume_mismatch == "reset"
    rule = spec.build_rule()
    assert rule.name == "zclip" and rule.mode == "percentile" and rule.default_scheme == "global"
    assert spec.grouping is None  # the rule's default, global
    default = build_actor().engine.clip_spec(1.0)
    assert default.guard == GuardConfig() and default.guard.max_consecutive_skips == 10
    assert default.guard.skip_above is None and default.guard.skip_sigma is None


@pytest.mark.parametrize("method", RULE_NAMES)
def test_each_preset_resolves_to_the_clip_engine(method):
    """Both primary configs take their clip block from the same group file, so SFT sees the same knobs."""
    actor = build_actor(f"actor_rollout_ref.actor.clip={method}")
    assert isinstance(actor, ClipActorConfig)
    assert actor.engine.strategy == CLIP_BACKEND and actor.strategy == "fsdp2"
    spec = actor.engine.clip_spec(actor.optim.clip_grad)
    assert spec.method == method
    rule = spec.build_rule()
    if method == "global":
        assert rule.max_norm == actor.optim.clip_grad
    else:
        assert dict(spec.knobs) == rule_knobs(method)


def test_knob_override_reaches_the_rule():
    actor = build_actor(
        "actor_rollout_ref.actor.clip=aggc",
        "actor_rollout_ref.actor.clip_config.aggc.beta=0.95",
        "actor_rollout_ref.actor.clip_config.aggc.schedule=none",
        "actor_rollout_ref.actor.clip_config.grouping=module_type_per_layer",
    )
    spec = actor.engine.clip_spec(actor.optim.clip_grad)
    rule = spec.build_rule()
    assert rule.beta == 0.95 and rule.schedule == "none"
    assert spec.grouping == "module_type_per_layer"
    actor = build_actor("actor_rollout_ref.actor.clip=global", "actor_rollout_ref.actor.optim.clip_grad=0.3")
    assert actor.engine.clip_spec(actor.optim.clip_grad).build_rule().max_norm == 0.3


def test_reference_model_stays_on_the_stock_engine():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(CONFIG_NAME, overrides=[*BASE, "actor_rollout_ref.actor.clip=aggc"])
    assert cfg.actor_rollout_ref.ref.strategy == "fsdp2"
    assert "clip" not in cfg.actor_rollout_ref.ref


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["actor_rollout_ref.actor.clip=aggcc"],
            r"actor.clip='aggcc' is invalid; allowed: global, aggc, aggc_official, aggc_lora, adagc, zclip",
        ),
        (
            ["actor_rollout_ref.actor.clip=aggc", "actor_rollout_ref.actor.clip_config.aggc.beta=1.5"],
            r"clip_config.aggc: .*beta=1.5 is invalid; allowed: a number in \[0, 1\)",
        ),
        (
            ["actor_rollout_ref.actor.clip=adagc", "actor_rollout_ref.actor.clip_config.adagc.warmup=-3"],
            r"warmup=-3 is invalid",
        ),
        (
            ["actor_rollout_ref.actor.clip=aggc", "actor_rollout_ref.actor.clip_config.aggc.schedule=cosine"],
            r"schedule='cosine' is invalid; allowed: 'linear' or 'none'",
        ),
        (
            ["actor_rollout_ref.actor.clip=global", "actor_rollout_ref.actor.optim.clip_grad=-1"],
            r"optim.clip_grad: .*max_norm=-1(\.0)? is invalid",
        ),
        (
            ["actor_rollout_ref.actor.clip_config.grouping=layers"],
            r"grouping='layers' is invalid; allowed: null .*module_type",
        ),
        (["actor_rollout_ref.actor.strategy=fsdp"], r"needs FSDP2.*strategy='fsdp'; allowed: fsdp2"),
        # Item 5: checks verl lacks.
        (
            ["actor_rollout_ref.actor.clip=global", "actor_rollout_ref.actor.optim.clip_grad=0"],
            r"optim.clip_grad: .*max_norm=0(\.0)? is invalid; allowed: a number > 0",
        ),
        (
            ["actor_rollout_ref.actor.clip=global", "actor_rollout_ref.actor.optim.clip_grad=nan"],
            r"optim.clip_grad: .*max_norm=nan is invalid; allowed: a finite number",
        ),
        (
            ["actor_rollout_ref.actor.clip=global", "actor_rollout_ref.actor.optim.clip_grad=inf"],
            r"optim.clip_grad: .*max_norm=inf is invalid; allowed: a finite number",
        ),
        (
            [
                "actor_rollout_ref.actor.clip=aggc",
                "actor_rollout_ref.actor.clip_config.aggc.global_max_norm=nan",
            ],
            r"clip_config.aggc: .*global_max_norm=nan is invalid; allowed: a finite number",
        ),
        (
            [
                "actor_rollout_ref.actor.clip=zclip",
                "actor_rollout_ref.actor.clip_config.zclip.max_grad_norm=0",
            ],
            r"clip_config.zclip: .*max_grad_norm=0 is invalid; allowed: null \(no cap\) or a finite number > 0",
        ),
        (
            [
                "actor_rollout_ref.actor.clip=zclip",
                "actor_rollout_ref.actor.clip_config.zclip.max_grad_norm=-inf",
            ],
            r"max_grad_norm=-inf is invalid",
        ),
        (
            ["actor_rollout_ref.actor.clip=zclip", "actor_rollout_ref.actor.clip_config.zclip.mode=median"],
            r"mode='median' is invalid; allowed: 'zscore' or 'percentile'",
        ),
        (
            ["actor_rollout_ref.actor.grad_clip=0.5"],
            r"actor.grad_clip=0.5 is set, but verl 0.9.1 never reads it.*set actor_rollout_ref.actor.optim.clip_grad",
        ),
        (
            ["actor_rollout_ref.actor.clip_config.guard.skip_above=-1"],
            r"actor_rollout_ref.actor.clip_config.guard.skip_above=-1 is invalid; allowed: null \(off\) or a finite number > 0",
        ),
        (
            ["actor_rollout_ref.actor.clip_config.guard.skip_sigma=nan"],
            r"guard.skip_sigma=nan is invalid",
        ),
        (
            ["actor_rollout_ref.actor.clip_config.guard.window=1"],
            r"guard.window=1 is invalid; allowed: an integer number of steps >= 2",
        ),
        (
            ["actor_rollout_ref.actor.clip_config.guard.max_consecutive_skips=-1"],
            r"guard.max_consecutive_skips=-1 is invalid; allowed: an integer >= 0 \(0: never stop\)",
        ),
        (
            ["actor_rollout_ref.actor.clip_config.resume_mismatch=ignore"],
            r"clip_config.resume_mismatch='ignore' is invalid; allowed: refuse, reset",
        ),
    ],
)
def test_bad_values_are_refused_with_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(Exception, match=message):
        build_actor(*overrides)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (
            "actor_rollout_ref.actor.clip_config.aggc.bogus=1",
            r"unknown knob .*aggc.bogus.*allowed for aggc: beta, low, high",
        ),
        (
            "+actor_rollout_ref.actor.clip_config.adagc.gamma=1",
            r"allowed for adagc: lambda_rel, beta, warmup, lambda_abs, eps",
        ),
        (
            "actor_rollout_ref.actor.clip_config.zclipp.alpha=1",
            r"allowed under actor_rollout_ref.actor.clip_config: grouping",
        ),
        (
            "actor_rollout_ref.actor.clip_config.zclip.z_threshold=3",
            r"allowed for zclip: alpha, z_thresh, max_grad_norm, eps, warmup_steps, mode, clip_option",
        ),
        (
            "actor_rollout_ref.actor.clip_config.guard.sigma=6",
            r"unknown knob .*guard.sigma.*allowed for guard: skip_above, skip_sigma, window, max_consecutive_skips",
        ),
        (
            "actor_rollout_ref.actor.clip_config.resume_mismatch=ignore",
            r"resume_mismatch='ignore' is invalid; allowed: refuse, reset",
        ),
        (
            "actor_rollout_ref.actor.clip=agc",
            r"allowed: global, aggc, aggc_official, aggc_lora, adagc, zclip",
        ),
    ],
)
def test_unknown_override_keys_are_refused_before_hydra(arg, message):
    with pytest.raises(ValueError, match=message):
        check_clip_overrides([arg])
    check_clip_overrides(
        [
            "actor_rollout_ref.actor.clip_config.aggc.beta=0.9",
            "trainer.total_epochs=3",
            "actor_rollout_ref.actor.clip=zclip",
            "actor_rollout_ref.actor.clip_config.zclip.alpha=0.9",
            "actor_rollout_ref.actor.clip_config.guard.skip_sigma=6",
            "actor_rollout_ref.actor.clip_config.resume_mismatch=reset",
        ]
    )


def test_cfg_job_prints_the_composed_config():
    out = run_train("--cfg", "job", "actor_rollout_ref.actor.clip=aggc_official")
    assert out.returncode == 0, out.stderr[-3000:]
    actor = yaml.safe_load(out.stdout)["actor_rollout_ref"]["actor"]
    assert actor["clip"] == "aggc_official"
    assert actor["clip_config"]["aggc_official"]["schedule"] == "none"
    assert actor["_target_"] == "verl_patches.engine.config.ClipActorConfig"


def test_cli_refuses_unknown_knob_before_composing():
    out = run_train("--cfg", "job", "actor_rollout_ref.actor.clip_config.aggc.betta=0.9")
    assert out.returncode != 0
    assert "unknown knob 'actor_rollout_ref.actor.clip_config.aggc.betta'" in out.stderr
    assert "allowed for aggc: beta" in out.stderr


def test_cfg_job_composes_zclip():
    out = run_train("--cfg", "job", "actor_rollout_ref.actor.clip=zclip")
    assert out.returncode == 0, out.stderr[-3000:]
    actor = yaml.safe_load(out.stdout)["actor_rollout_ref"]["actor"]
    assert actor["clip"] == "zclip"
    assert actor["clip_config"]["zclip"] == rule_knobs("zclip")
    assert actor["clip_config"]["guard"] == GuardConfig.knobs()


def test_zero_clip_grad_under_global_is_refused_before_ray_starts():
    out = run_train("actor_rollout_ref.actor.optim.clip_grad=0", env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode == 2, out.stderr[-3000:]
    assert "actor_rollout_ref.actor.optim.clip_grad: clip rule 'global': max_norm=0 is invalid" in out.stderr
    assert "Traceback" not in out.stderr  # one message, even with Hydra's full errors on
    assert "Platform override" not in out.stderr  # refused before verl (and so Ray) was imported
    assert "Started a local Ray instance" not in out.stdout + out.stderr


def error_lines(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.strip()]


def test_the_short_form_sets_the_switch():
    out = run_train("actor.clip=aggc", "--cfg", "job")
    assert out.returncode == 0, out.stderr[-3000:]
    assert yaml.safe_load(out.stdout)["actor_rollout_ref"]["actor"]["clip"] == "aggc"
    assert "clip: aggc" in out.stdout
    assert out.stderr.count("actor.clip=aggc -> actor_rollout_ref.actor.clip=aggc") == 1
    out = run_train("+actor.clip=zclip", "+actor.clip_config.zclip.alpha=0.9", "--cfg", "job")
    assert out.returncode == 0, out.stderr[-3000:]
    actor = yaml.safe_load(out.stdout)["actor_rollout_ref"]["actor"]
    assert actor["clip"] == "zclip" and actor["clip_config"]["zclip"]["alpha"] == 0.9
    assert "actor" not in yaml.safe_load(out.stdout)  # no top-level block that nothing reads


@pytest.mark.parametrize("arg", ["clip=aggc", "+clip=aggc", "+actor_rollout_ref.clip=aggc"])
def test_the_switch_elsewhere_exits_2_in_one_line_naming_the_full_key(arg):
    out = run_train(arg)
    assert out.returncode == 2, out.stderr[-3000:]
    (line,) = error_lines(out)
    assert line.startswith(f"error: {arg}") and "actor_rollout_ref.actor.clip=aggc" in line


@pytest.mark.parametrize(
    ("args", "message", "starts"),
    [
        (
            ["actor_rollout_ref.actor.entropy_coef=0.1"],
            "Key 'entropy_coef' is not in struct; allowed under",
            True,
        ),
        (
            ["+actor_rollout_ref.actor.clip=aggc"],
            "An item is already at 'actor_rollout_ref.actor.clip'",
            True,
        ),
        (
            ["actor.clip_config.aggc.betta=0.9"],
            "unknown knob 'actor_rollout_ref.actor.clip_config.aggc.betta'",
            True,
        ),
        (
            ["actor.clip=aggc", "actor.clip_config.aggc.beta=1.5"],
            "beta=1.5 is invalid; allowed: a number in [0, 1)",
            True,
        ),
        # Value problems are listed with every file problem of a real start (here the default model and data
        # paths, which do not exist), so these are checked as dry runs, which refuse values alone.
        (
            ["actor.entropy_coeff=nan"],
            "actor_rollout_ref.actor.entropy_coeff=nan: not a finite number",
            False,
        ),
        (
            ["actor.strategy=fsdp", "actor.clip=aggc"],
            "actor_rollout_ref.actor.strategy='fsdp': the clip engine",
            False,
        ),
    ],
)
def test_bad_settings_exit_2_with_one_message_and_no_traceback(args, message, starts):
    for dry in (("--cfg", "job"), *([()] if starts else [])):
        out = run_train(*args, *dry)
        assert out.returncode == 2, out.stderr[-3000:]
        errors = [line for line in error_lines(out) if not line.startswith(("warning:", "actor."))]
        assert len(errors) == 1 and message in errors[0], out.stderr[-3000:]
        assert "Traceback" not in out.stderr


def test_sft_config_has_the_same_clip_block():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        rl = compose(CONFIG_NAME, overrides=BASE)
        sft = compose("aggc_sft_trainer", overrides=["engine.clip_config.zclip.alpha=0.9"])
    assert sft.engine.clip_config.zclip.alpha == 0.9  # every knob is overridable without "+"
    sft.engine.clip_config.zclip.alpha = rl.actor_rollout_ref.actor.clip_config.zclip.alpha
    assert sft.engine.clip_config == rl.actor_rollout_ref.actor.clip_config
