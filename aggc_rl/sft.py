"""``python -m aggc_rl.sft <hydra overrides>``: verl's SFT trainer with the clip switch (and LoRA).

The same flow as ``python -m verl.trainer.sft_trainer`` with our primary config (configs/aggc_sft_trainer.yaml,
which extends verl's ``sft_trainer_engine``): ``engine.clip=global|aggc|aggc_lora|...`` picks the method,
``engine.clip_config.<method>.<knob>`` tunes it, ``model.lora_rank > 0`` trains LoRA adapters (the groups are
then the adapted projections). The settings are checked before any process group starts. One process by
default; ``torchrun --nproc_per_node=N -m aggc_rl.sft ...`` for N GPUs (or N gloo ranks on the CPU platform).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from aggc_rl.data.metamath import CHAT_TEMPLATES
from verl_patches.config_files import CONFIG_DIR, SFT_CONFIG_NAME

#: Where the switch lives in this config (errors name it).
CLIP_PREFIX = "engine"


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
    template = config.get("chat_template")
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
    validate(config)
    apply_chat_template_preset(config)
    run_sft(config)


if __name__ == "__main__":
    from aggc_rl.clipping import check_clip_overrides
    from verl_patches.plugin import load
    from verl_patches.sft import single_process_env

    check_clip_overrides(sys.argv[1:], prefix=CLIP_PREFIX)
    load()  # loud where verl's plugin loader would swallow an error
    single_process_env()
    main()
