"""``python -m aggc_rl.train <hydra overrides>``: verl's PPO/GRPO trainer with the clip switch.

The same flow as ``python -m verl.trainer.main_ppo`` with our primary config
(configs/aggc_ppo_trainer.yaml, which extends verl's ppo_trainer), our plugin loaded in the driver,
and the clip settings, the model, the data and the reward settings checked before Ray starts any worker
(:mod:`aggc_rl.preflight`). ``--cfg job`` checks the values too before printing: clip settings and reward
arguments fail it; model and data problems, which may only mean the files are not made yet, are warnings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from aggc_rl.preflight import PreflightError, check_rl, preflight_rl, split_dry_run

from verl_patches.config_files import CONFIG_DIR
from verl_patches.config_files import PPO_CONFIG_NAME as CONFIG_NAME


def validate_clip(config: DictConfig) -> None:
    """Build the actor config (and so the clip spec) now, so bad values fail before any Ray worker."""
    from verl.utils.config import omega_conf_to_dataclass

    omega_conf_to_dataclass(config.actor_rollout_ref.actor)


#: Exit status of a run refused before Ray started (as the cluster scripts' bad settings).
REFUSED = 2
_CFG_FLAGS = ("--cfg", "-c")
_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn")


def refuse(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(REFUSED)


def preflight(config: DictConfig) -> None:
    """Model, data and reward settings (:mod:`aggc_rl.preflight`); exits with REFUSED and the problems."""
    try:
        preflight_rl(OmegaConf.to_container(config, resolve=True), os.environ)
    except PreflightError as err:
        refuse(err)


def overrides_of(argv: Sequence[str]) -> list[str]:
    """The Hydra overrides in ``argv``, without Hydra's flags and the ``hydra.*`` settings."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE
            continue
        if not arg.lstrip("+~").startswith("hydra"):
            out.append(arg)
    return out


def wants_cfg(argv: Sequence[str]) -> bool:
    return any(a in _CFG_FLAGS or a.startswith("--cfg=") for a in argv)


def check_values(argv: Sequence[str]) -> None:
    """What a ``--cfg job`` run checks before Hydra prints: value problems refuse, file problems warn."""
    from hydra import compose, initialize_config_dir

    from aggc_rl.clipping.switch import resolve_clip

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(CONFIG_NAME, overrides=overrides_of(argv))
    plain = OmegaConf.to_container(cfg, resolve=True)
    actor = plain["actor_rollout_ref"]["actor"]
    try:
        resolve_clip(actor.get("clip", "global"), actor.get("clip_config"), actor["optim"]["clip_grad"])
    except (TypeError, ValueError) as err:
        refuse(err)
    values, files = split_dry_run(check_rl(plain, os.environ))
    for problem in files:
        print(f"warning: a real start would refuse: {problem}", file=sys.stderr)
    if values:
        refuse(PreflightError(values))


def run(config: DictConfig) -> None:
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate_clip(config)
    preflight(config)
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
    from aggc_rl.clipping import check_clip_overrides
    from verl_patches.plugin import load

    check_clip_overrides(sys.argv[1:])
    load()  # loud where verl's plugin loader would swallow an error
    if wants_cfg(sys.argv[1:]):
        check_values(sys.argv[1:])  # Hydra prints the config without calling main()
    main()
