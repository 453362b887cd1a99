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
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from aggc_rl.preflight import PreflightError, check_rl, preflight_rl, split_dry_run
from aggc_rl.preflight.cli import (
    check_before_start,
    nothing_runs,
    other_config,
    overrides_of,
    refuse,
    wants_cfg,
)
from aggc_rl.preflight.compose import compose_plain
from verl_patches.config_files import CONFIG_DIR
from verl_patches.config_files import PPO_CONFIG_NAME as CONFIG_NAME


def validate_clip(config: DictConfig) -> None:
    """Build the actor config (and so the clip spec) now, so bad values fail before any Ray worker."""
    from verl.utils.config import omega_conf_to_dataclass

    omega_conf_to_dataclass(config.actor_rollout_ref.actor)


_checked = False  # set once __main__ ran the preflight, so run() does not read the data twice


def preflight(config: DictConfig) -> None:
    """Model, data and reward settings (:mod:`aggc_rl.preflight`); exits with REFUSED and the problems."""
    if _checked:
        return
    try:
        preflight_rl(OmegaConf.to_container(config, resolve=True), os.environ)
    except PreflightError as err:
        refuse(err, err.exit_code)


def _touches_clip(argv: Sequence[str]) -> bool:
    return any(".clip" in arg.split("=", 1)[0] for arg in argv if "=" in arg)


def check_before_verl(argv: Sequence[str]) -> None:
    """Compose without importing verl (~1-2 s) and run every check that needs no worker.

    A real start refuses every problem; a ``--cfg job`` run (which Hydra answers without calling main)
    refuses bad values and only warns about model and data files, which a dry run may not have made yet.
    Bad clip values of a real start are left to :func:`validate_clip` in :func:`run` (verl's own config
    classes, still before Ray), which reports them before any file problem.
    """
    global _checked
    if nothing_runs(argv):
        return  # Hydra prints its help and exits
    if other_config(argv):
        return  # run() checks the config Hydra composes (preflight)
    dry_run = wants_cfg(argv)
    if _touches_clip(argv):  # clipping imports torch: only when there is something to check
        from aggc_rl.clipping import check_clip_overrides

        check_clip_overrides(argv)  # unknown clip keys and methods, with what is allowed
    plain = compose_plain(CONFIG_DIR, CONFIG_NAME, overrides_of(argv))
    if _touches_clip(argv):
        from aggc_rl.clipping.switch import resolve_clip

        actor = plain["actor_rollout_ref"]["actor"]
        try:
            resolve_clip(actor.get("clip", "global"), actor.get("clip_config"), actor["optim"]["clip_grad"])
        except (TypeError, ValueError) as err:
            if dry_run:
                refuse(err)
            return  # run() -> validate_clip refuses it, then runs the preflight
    check_before_start(plain, argv, lambda config: check_rl(config, os.environ), split_dry_run)
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
    validate_config(
        config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
    )
    if not config.trainer.use_v1:
        raise ValueError(
            "trainer.use_v1=false (verl's deprecated v0 trainer) is not supported; allowed: true"
        )
    run_ppo(config, task_runner_class=TaskRunnerV1)


@hydra.main(config_path=CONFIG_DIR, config_name=CONFIG_NAME, version_base=None)
def main(config: DictConfig) -> None:
    run(config)


if __name__ == "__main__":
    check_before_verl(sys.argv[1:])  # before verl is imported (the plugin imports it) and long before Ray

    from verl_cpu.plugin import load as load_cpu_backend
    from verl_patches.plugin import load

    load()  # loud where verl's plugin loader would swallow an error
    load_cpu_backend()
    main()
