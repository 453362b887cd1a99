"""``python -m aggc_rl.train <hydra overrides>``: verl's PPO/GRPO trainer with the clip switch.

The same flow as ``python -m verl.trainer.main_ppo`` with our primary config
(configs/aggc_ppo_trainer.yaml, which extends verl's ppo_trainer), our plugin loaded in the driver,
and the clip settings validated before Ray starts any worker.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from verl_patches.config_files import CONFIG_DIR
from verl_patches.config_files import PPO_CONFIG_NAME as CONFIG_NAME


def validate_clip(config: DictConfig) -> None:
    """Build the actor config (and so the clip spec) now, so bad values fail before any Ray worker."""
    from verl.utils.config import omega_conf_to_dataclass

    omega_conf_to_dataclass(config.actor_rollout_ref.actor)


def run(config: DictConfig) -> None:
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate_clip(config)
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
    main()
