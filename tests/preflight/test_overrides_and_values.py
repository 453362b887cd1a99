"""The short form ``actor.<key>``, misplaced spellings of the switch, one-line Hydra errors, finite values."""

from __future__ import annotations

import io
import math

import pytest

from aggc_rl.preflight.compose import compose_plain
from aggc_rl.preflight.hydra_errors import BadOverride, compose_or_refuse
from aggc_rl.preflight.overrides import RL_ACTOR, expand_short_form, misplaced_switch
from aggc_rl.preflight.ray_bind import LOOPBACK_ENV, bind_ray_to_loopback
from aggc_rl.preflight.values import check_finite, check_strategy
from verl_patches.config_files import CONFIG_DIR, PPO_CONFIG_NAME


def test_the_short_form_is_rewritten_and_said_once():
    said = io.StringIO()
    argv = [
        "--cfg",
        "job",
        "actor.clip=aggc",
        "+actor.clip_config.aggc.beta=0.9",
        "~actor.foo",
        "data.seed=1",
    ]
    out = expand_short_form(argv, say=said)
    assert out == [
        "--cfg",
        "job",
        "actor_rollout_ref.actor.clip=aggc",
        "++actor_rollout_ref.actor.clip_config.aggc.beta=0.9",  # set, or add where absent
        "~actor_rollout_ref.actor.foo",
        "data.seed=1",
    ]
    lines = said.getvalue().splitlines()
    assert lines[0] == "actor.clip=aggc -> actor_rollout_ref.actor.clip=aggc" and len(lines) == 3


def test_a_flag_value_and_other_keys_are_left_alone():
    argv = ["-cn", "actor.yaml", "actor_rollout_ref.actor.clip=zclip", "actors.x=1", "critic.optim.lr=1"]
    assert expand_short_form(argv, say=io.StringIO()) == argv


@pytest.mark.parametrize(
    "arg",
    ["clip=aggc", "+clip=aggc", "++clip=aggc", "actor_rollout_ref.clip=aggc", "+engine.clip=aggc",
     "clip_config.aggc.beta=0.9", "+actor_rollout_ref.ref.clip=aggc"],
)  # fmt: skip
def test_the_switch_anywhere_else_is_refused_naming_the_full_key(arg):
    message = misplaced_switch([arg], RL_ACTOR)
    assert message is not None and message.startswith(arg)
    assert "actor_rollout_ref.actor.clip" in message and "\n" not in message


def test_the_switch_in_its_place_and_lookalike_keys_pass():
    argv = [
        "actor_rollout_ref.actor.clip=aggc",
        "actor_rollout_ref.actor.clip_config.aggc.beta=0.9",
        "actor_rollout_ref.actor.optim.clip_grad=1.0",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
    ]
    assert misplaced_switch(argv, RL_ACTOR) is None
    assert misplaced_switch(["engine.clip=aggc"], "engine") is None
    assert "engine.clip=aggc" in misplaced_switch(["actor.clip=aggc"], "engine")


def test_hydra_errors_become_one_line_with_what_is_allowed():
    with pytest.raises(BadOverride) as err:
        compose_or_refuse(CONFIG_DIR, PPO_CONFIG_NAME, ["actor_rollout_ref.actor.entropy_coef=0.1"])
    message = str(err.value)
    assert "\n" not in message
    assert "'actor_rollout_ref.actor.entropy_coef'" in message and "entropy_coeff" in message
    assert "allowed under actor_rollout_ref.actor" in message and "+actor_rollout_ref" not in message
    for bad in ("+actor_rollout_ref.actor.clip=aggc", "actor_rollout_ref.actor.clip=[a", "data=nope"):
        with pytest.raises(BadOverride) as err:
            compose_or_refuse(CONFIG_DIR, PPO_CONFIG_NAME, [bad])
        assert "\n" not in str(err.value) and str(err.value).startswith("bad override: "), str(err.value)


def test_non_finite_numbers_are_refused_by_key():
    config = compose_plain(CONFIG_DIR, PPO_CONFIG_NAME, [])
    assert check_finite(config) == []
    config["actor_rollout_ref"]["actor"]["entropy_coeff"] = math.nan
    config["algorithm"]["kl_ctrl"]["kl_coef"] = -math.inf
    config["ray_kwargs"] = {"ray_init": {"x": math.inf}}  # Ray's own block is not a training setting
    keys = [p.key for p in check_finite(config)]
    assert keys == ["actor_rollout_ref.actor.entropy_coeff", "algorithm.kl_ctrl.kl_coef"]
    assert "Allowed: a finite number" in str(check_finite(config)[0])


def test_only_fsdp2_builds_the_clip_engine():
    assert check_strategy("actor_rollout_ref.actor.strategy", "fsdp2") == []
    (problem,) = check_strategy("actor_rollout_ref.actor.strategy", "fsdp")
    assert problem.kind == "value" and "Allowed: fsdp2" in str(problem)


def test_ray_is_kept_on_loopback_only_for_a_run_that_starts_its_own_single_node_ray(tmp_path):
    one = {"trainer": {"nnodes": 1}, "ray_kwargs": {"ray_init": {}}}
    env = {"RAY_TMPDIR": str(tmp_path)}
    assert bind_ray_to_loopback(one, env) and env[LOOPBACK_ENV] == "0"
    for config, extra in (
        ({"trainer": {"nnodes": 2}}, {}),
        (one, {"RAY_ADDRESS": "10.0.0.1:6379"}),
        ({"trainer": {"nnodes": 1}, "ray_kwargs": {"ray_init": {"address": "auto"}}}, {}),
    ):
        env = {"RAY_TMPDIR": str(tmp_path), **extra}
        assert not bind_ray_to_loopback(config, env) and LOOPBACK_ENV not in env
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("10.0.0.1:6379")  # `ray start` ran here
    env = {"RAY_TMPDIR": str(tmp_path)}
    assert not bind_ray_to_loopback(one, env) and LOOPBACK_ENV not in env
    env = {"RAY_TMPDIR": str(tmp_path / "elsewhere"), LOOPBACK_ENV: "1"}  # the user's own choice stays
    assert not bind_ray_to_loopback(one, env) and env[LOOPBACK_ENV] == "1"


def test_the_hf_cpu_rollout_takes_num_threads_and_a_positive_max_num_seqs():
    from aggc_rl.preflight.values import check_hf_cpu_rollout

    good = {"name": "hf_cpu", "max_num_seqs": 1, "engine_kwargs": {"hf_cpu": {"num_threads": 2}, "vllm": {}}}
    assert check_hf_cpu_rollout(good) == []
    bad = {"name": "hf_cpu", "max_num_seqs": 0, "engine_kwargs": {"hf_cpu": {"num_threads": 0, "thread": 2}}}
    problems = {p.key: p for p in check_hf_cpu_rollout(bad)}
    assert set(problems) == {
        "actor_rollout_ref.rollout.max_num_seqs",
        "actor_rollout_ref.rollout.engine_kwargs.hf_cpu.num_threads",
        "actor_rollout_ref.rollout.engine_kwargs.hf_cpu.thread",
    }
    assert "Allowed: num_threads." in str(problems["actor_rollout_ref.rollout.engine_kwargs.hf_cpu.thread"])
    assert check_hf_cpu_rollout({**bad, "name": "vllm"}) == []  # another rollout's settings are its own
