"""verl plugin entry point (group ``verl.plugins``): loaded by every ``import verl``, driver and Ray workers.

verl swallows exceptions raised while loading plugins, so whatever can fail here also fails loudly
where it is used: the actor config imports the engine module itself, and ``aggc_rl.train`` calls
:func:`load` directly.
"""

from __future__ import annotations

import os


def load() -> None:
    """Register our engine backend, and the CPU platform when ``VERL_PLATFORM=cpu``."""
    import verl_patches.clip_engine  # noqa: F401  (registers the aggc_fsdp2 backend)

    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        from verl_patches.cpu_platform import register_cpu_platform

        register_cpu_platform()


load()
