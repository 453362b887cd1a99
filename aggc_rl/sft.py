"""``python -m aggc_rl.sft <hydra overrides>``: verl's SFT trainer with the clip switch (and LoRA).

The same flow as ``python -m verl.trainer.sft_trainer`` with our primary config (configs/aggc_sft_trainer.yaml,
which extends verl's ``sft_trainer_engine``): ``engine.clip=global|aggc|aggc_lora|...`` picks the method,
``engine.clip_config.<method>.<knob>`` tunes it, ``model.lora_rank > 0`` trains LoRA adapters (the groups are
then the adapted projections). The settings are checked before any process group starts. One process by
default; ``torchrun --nproc_per_node=N -m aggc_rl.sft ...`` for N GPUs (or N gloo ranks on the CPU platform).
The model path and the messages data are checked first, as for RL (:mod:`aggc_rl.preflight`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aggc_rl.data.metamath import CHAT_TEMPLATES
from aggc_rl.preflight import PreflightError, Problem, check_sft, preflight_sft, split_dry_run
from aggc_rl.preflight.cli import (
    check_before_start,
    nothing_runs,
    other_config,
    overrides_of,
    refuse,
    wants_cfg,
)
from aggc_rl.preflight.hydra_errors import compose_or_refuse
from aggc_rl.preflight.overrides import misplaced_switch
from aggc_rl.preflight.problems import raise_if_any
from aggc_rl.preflight.run_dir import ClipSettings, prepare_run_dir
from aggc_rl.preflight.run_lock import RunDirLocked
from aggc_rl.preflight.values import check_finite, check_strategy
from verl_patches.config_files import CONFIG_DIR, SFT_CONFIG_NAME

#: Where the switch lives in this config (errors name it).
ENGINE_KEY = "engine"
_checked = False  # set once __main__ checked the composed config, so main() does not read the data twice


def validate(config: DictConfig) -> None:
    """Build the engine config and the clip spec now, so a bad setting fails before training starts."""
    from verl.utils.config import omega_conf_to_dataclass

    from verl_patches.engine.clip_engine import ClipFSDPEngineConfig

    engine = omega_conf_to_dataclass(config.engine)
    if not isinstance(engine, ClipFSDPEngineConfig):
        raise TypeError(
            f"engine must be built as {ClipFSDPEngineConfig.__module__}.{ClipFSDPEngineConfig.__name__} "
            f"(set by configs/{SFT_CONFIG_NAME}.yaml), got {type(engine).__name__}"
        )
    engine.clip_spec(max_norm=config.optim.clip_grad)
    check_chat_template(config.get("chat_template"))


def check_chat_template(template: str | None) -> None:
    if template is not None and template not in CHAT_TEMPLATES:
        raise ValueError(
            f"chat_template={template!r} is invalid; allowed: null (the tokenizer's own) or one of "
            f"{', '.join(CHAT_TEMPLATES)}"
        )


def apply_chat_template_preset(config: DictConfig) -> None:
    """``chat_template=alpaca``: give a base model (no template of its own) the recipe's instruction format."""
    template = config.get("chat_template")
    if template is not None:
        config.model.custom_chat_template = CHAT_TEMPLATES[template]


@hydra.main(config_path=CONFIG_DIR, config_name=SFT_CONFIG_NAME, version_base=None)
def main(config: DictConfig) -> None:
    from verl.utils.device import auto_set_device

    from verl_patches.sft import run_sft

    auto_set_device(config)
    try:
        validate(config)
    except (TypeError, ValueError, AssertionError) as err:
        refuse(err)  # verl's and our config classes name the key and what is allowed
    if not _checked:  # another primary config (-cn/-cp/-cd): check the one Hydra composed
        plain = OmegaConf.to_container(config, resolve=True)
        try:
            raise_if_any(check_values(plain), "the SFT run")
            preflight_sft(plain, os.environ)
        except PreflightError as err:
            refuse(err, err.exit_code)
        check_run_dir(plain)
    apply_chat_template_preset(config)
    run_sft(config)


def check_values(config: Mapping[str, Any]) -> list[Problem]:
    """Checks of values only (no files): finite numbers, the FSDP2 strategy the clip engine needs."""
    return [
        *check_finite(config),
        *check_strategy(f"{ENGINE_KEY}.strategy", config["engine"].get("strategy")),
    ]


def check_run_dir(config: Mapping[str, Any]) -> None:
    """Lock the run directory (rank 0), stop a finished run (exit 0), refuse an unusable clipper state (exit 2)."""
    engine = config["engine"]
    clip = ClipSettings(
        ENGINE_KEY, engine.get("clip", "global"), engine.get("clip_config"), config["optim"]["clip_grad"]
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    lock = os.environ.get("RANK", "0") == "0"  # torchrun: one holder per run, the others follow rank 0
    try:
        done = prepare_run_dir(config, clip, sft=True, world=world, lock=lock, what="the SFT run")
    except (PreflightError, RunDirLocked) as err:
        refuse(err)
    if done is not None:
        print(done, file=sys.stderr, flush=True)
        raise SystemExit(0)


def check_before_verl(argv: Sequence[str]) -> None:
    """Compose without verl and refuse bad clip settings, a bad model path or bad data before training.

    Every refusal of a real start exits with status 2 and one message (no traceback). A ``--cfg job`` run
    refuses bad values and only warns about model and data files (:mod:`aggc_rl.preflight`); a real start
    then takes the run directory's lock and checks the checkpoint it would resume.
    """
    global _checked
    if nothing_runs(argv):
        return  # Hydra prints its help and exits
    if other_config(argv):
        return  # main() checks the config Hydra composes
    misplaced = misplaced_switch(argv, ENGINE_KEY)
    if misplaced is not None:
        refuse(ValueError(misplaced))
    try:
        from aggc_rl.clipping import check_clip_overrides, resolve_clip

        check_clip_overrides(argv, prefix=ENGINE_KEY)  # unknown clip keys and methods, with what is allowed
        plain = compose_or_refuse(CONFIG_DIR, SFT_CONFIG_NAME, overrides_of(argv))
        engine = plain["engine"]
        resolve_clip(engine["clip"], engine["clip_config"], plain["optim"]["clip_grad"], prefix=ENGINE_KEY)
        check_chat_template(plain.get("chat_template"))
    except (TypeError, ValueError) as err:
        refuse(err)
    check_before_start(
        plain, argv, lambda config: [*check_values(config), *check_sft(config, os.environ)], split_dry_run
    )
    if not wants_cfg(argv):
        check_run_dir(plain)
    _checked = True


if __name__ == "__main__":
    check_before_verl(
        sys.argv[1:]
    )  # before verl is imported (the plugin imports it) and before any rank trains

    from verl_cpu.plugin import load as load_cpu_backend
    from verl_patches.plugin import load
    from verl_patches.sft import single_process_env

    load()  # loud where verl's plugin loader would swallow an error
    load_cpu_backend()
    single_process_env()
    main()
