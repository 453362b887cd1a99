"""``python -m aggc_rl.train <hydra overrides>``: verl's PPO/GRPO trainer with the clip switch.

The same flow as ``python -m verl.trainer.main_ppo`` with our primary config
(configs/aggc_ppo_trainer.yaml, which extends verl's ppo_trainer), our plugin loaded in the driver,
and the clip settings, the model, the data and the reward settings checked before Ray starts any worker
(:mod:`aggc_rl.preflight`), composed once without importing verl so that a refusal takes seconds.
``--cfg job`` checks the values too before printing: clip settings and reward arguments fail it; model
and data problems, which may only mean the files are not made yet, are warnings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aggc_rl.preflight import PreflightError, Problem, check_rl, preflight_rl, split_dry_run
from aggc_rl.preflight.cli import (
    check_before_start,
    nothing_runs,
    other_config,
    overrides_of,
    refuse,
    wants_cfg,
)
from aggc_rl.preflight.hydra_errors import compose_or_refuse
from aggc_rl.preflight.overrides import RL_ACTOR, expand_short_form, misplaced_switch
from aggc_rl.preflight.problems import raise_if_any
from aggc_rl.preflight.ray_bind import bind_ray_to_loopback
from aggc_rl.preflight.run_dir import ClipSettings, prepare_run_dir
from aggc_rl.preflight.run_lock import RunDirLocked
from aggc_rl.preflight.values import check_finite, check_strategy
from verl_patches.config_files import CONFIG_DIR
from verl_patches.config_files import PPO_CONFIG_NAME as CONFIG_NAME


def validate_clip(config: DictConfig) -> None:
    """Build the actor config (and so the clip spec) now, so bad values fail before any Ray worker."""
    from verl.utils.config import omega_conf_to_dataclass

    try:
        omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    except (TypeError, ValueError, AssertionError) as err:
        refuse(err)  # verl's and our config classes name the key and what is allowed


_checked = False  # set once __main__ ran the preflight, so run() does not read the data twice


def preflight(config: DictConfig) -> None:
    """Model, data and reward settings (:mod:`aggc_rl.preflight`); exits with REFUSED and the problems."""
    if _checked:
        return
    plain = OmegaConf.to_container(config, resolve=True)
    try:
        raise_if_any(check_values(plain), "the RL run")
        preflight_rl(plain, os.environ)
    except PreflightError as err:
        refuse(err, err.exit_code)
    check_run_dir(plain)


def _touches_clip(argv: Sequence[str]) -> bool:
    return any(".clip" in arg.split("=", 1)[0] for arg in argv if "=" in arg)


def check_values(config: Mapping[str, Any]) -> list[Problem]:
    """Checks of values only (no files): finite numbers, the FSDP2 strategy the clip engine needs."""
    strategy = config["actor_rollout_ref"]["actor"].get("strategy")
    return [*check_finite(config), *check_strategy(f"{RL_ACTOR}.strategy", strategy)]


def world_size(config: Mapping[str, Any]) -> int:
    """The actor's ranks: every GPU of the run (verl's colocated actor/rollout worker group)."""
    trainer = config["trainer"]
    return int(trainer.get("n_gpus_per_node") or 1) * int(trainer.get("nnodes") or 1)


def check_run_dir(config: Mapping[str, Any]) -> None:
    """Lock the run directory, stop a finished run (exit 0), refuse an unusable clipper state (exit 2)."""
    actor = config["actor_rollout_ref"]["actor"]
    clip = ClipSettings(
        RL_ACTOR, actor.get("clip", "global"), actor.get("clip_config"), actor["optim"]["clip_grad"]
    )
    try:
        done = prepare_run_dir(
            config, clip, sft=False, world=world_size(config), lock=True, what="the RL run"
        )
    except (PreflightError, RunDirLocked) as err:
        refuse(err)
    if done is not None:
        print(done, file=sys.stderr, flush=True)
        raise SystemExit(0)


def check_before_verl(argv: Sequence[str]) -> None:
    """Compose without importing verl (~1-2 s) and run every check that needs no worker.

    A real start refuses every problem with exit status 2 and one message (no traceback); a ``--cfg job``
    run (which Hydra answers without calling main) refuses bad values and only warns about model and data
    files, which a dry run may not have made yet. A real start then takes the run directory's lock and
    checks the checkpoint it would resume (:mod:`aggc_rl.preflight.run_dir`).
    """
    global _checked
    if nothing_runs(argv):
        return  # Hydra prints its help and exits
    if other_config(argv):
        return  # run() checks the config Hydra composes (preflight)
    misplaced = misplaced_switch(argv, RL_ACTOR)
    if misplaced is not None:
        refuse(ValueError(misplaced))
    dry_run = wants_cfg(argv)
    try:
        if _touches_clip(argv):  # clipping imports torch: only when there is something to check
            from aggc_rl.clipping import check_clip_overrides

            check_clip_overrides(argv)  # unknown clip keys and methods, with what is allowed
        plain = compose_or_refuse(CONFIG_DIR, CONFIG_NAME, overrides_of(argv))
        if _touches_clip(argv):
            from aggc_rl.clipping.switch import resolve_clip

            actor = plain["actor_rollout_ref"]["actor"]
            resolve_clip(actor.get("clip", "global"), actor.get("clip_config"), actor["optim"]["clip_grad"])
    except (TypeError, ValueError) as err:
        refuse(err)
    check_before_start(
        plain, argv, lambda config: [*check_values(config), *check_rl(config, os.environ)], split_dry_run
    )
    if not dry_run:
        check_run_dir(plain)
        bind_ray_to_loopback(plain, os.environ)  # before verl imports Ray
    _checked = True


def check_cpu_vllm(config: DictConfig) -> None:
    """On the CPU platform, verl's vLLM rollout needs settings of its own: refuse others before Ray starts."""
    from verl_cpu.platform import cpu_platform_selected

    if cpu_platform_selected() and config.actor_rollout_ref.rollout.name == "vllm":
        from verl_cpu.vllm_setup import check_rollout_config

        try:
            check_rollout_config(config.actor_rollout_ref.rollout)
        except ValueError as err:
            refuse(err)


def run(config: DictConfig) -> None:
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate_clip(config)
    preflight(config)
    check_cpu_vllm(config)
    try:
        validate_config(
            config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
        )
    except (TypeError, ValueError, AssertionError) as err:
        refuse(err)  # verl's own checks of batch sizes and the like: a bad setting, not a crash
    if not config.trainer.use_v1:
        refuse(
            ValueError("trainer.use_v1=false (verl's deprecated v0 trainer) is not supported; allowed: true")
        )
    run_ppo(config, task_runner_class=TaskRunnerV1)


@hydra.main(config_path=CONFIG_DIR, config_name=CONFIG_NAME, version_base=None)
def main(config: DictConfig) -> None:
    run(config)


if __name__ == "__main__":
    sys.argv[1:] = expand_short_form(sys.argv[1:])  # actor.<key> -> actor_rollout_ref.actor.<key>, said once
    check_before_verl(sys.argv[1:])  # before verl is imported (the plugin imports it) and long before Ray

    from verl_cpu.plugin import load as load_cpu_backend
    from verl_patches.plugin import load

    load()  # loud where verl's plugin loader would swallow an error
    load_cpu_backend()
    main()
