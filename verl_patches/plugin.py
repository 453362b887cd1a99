"""verl plugin entry point of the clip integration (group ``verl.plugins``): loaded by every ``import verl``.

It stays light: the append-mode file logger and the per-step reward events. The ``aggc_fsdp2`` engine
registers itself when its config classes are imported (Hydra instantiates them from
configs/aggc_ppo_trainer.yaml, in the driver and in each worker), so importing verl stays cheap. The CPU
backend has its own plugin (``verl_cpu.plugin``).

verl swallows exceptions raised while loading plugins, so whatever can fail here also fails loudly
where it is used: ``aggc_rl.train`` and ``aggc_rl.sft`` call :func:`load` directly.
"""

from __future__ import annotations


def load() -> None:
    """Keep file-logger metrics across resumes; log reward/unscored and reward/timeouts every step."""
    from verl_patches.file_logger import append_file_logger

    append_file_logger()
    from verl_patches.reward_metrics import install as log_reward_events

    log_reward_events()  # reward/unscored and reward/timeouts in every training step's metrics


load()
