"""Config composition of `python -m aggc_rl.train`: presets resolve, bad keys and values are refused early."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from verl.utils.config import omega_conf_to_dataclass

from aggc_rl.clipping import RULE_NAMES, rule_knobs
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


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aggc_rl.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_yaml_lists_every_knob_with_its_default():
    with open(f"{CONFIG_DIR}/{CONFIG_NAME}.yaml") as f:
        blocks = yaml.safe_load(f)["actor_rollout_ref"]["actor"]["clip_config"]
    for method in BLOCK_METHODS:
        assert blocks[method] == rule_knobs(method), method


@pytest.mark.parametrize("method", RULE_NAMES)
def test_each_preset_resolves_to_the_clip_engine(method):
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
            r"actor.clip='aggcc' is invalid; allowed: global, aggc, aggc_official, adagc",
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
            "actor_rollout_ref.actor.clip_config.zclip.alpha=1",
            r"allowed under actor_rollout_ref.actor.clip_config: grouping",
        ),
        ("actor_rollout_ref.actor.clip=agc", r"allowed: global, aggc, aggc_official, adagc"),
    ],
)
def test_unknown_override_keys_are_refused_before_hydra(arg, message):
    with pytest.raises(ValueError, match=message):
        check_clip_overrides([arg])
    check_clip_overrides(["actor_rollout_ref.actor.clip_config.aggc.beta=0.9", "trainer.total_epochs=3"])


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
