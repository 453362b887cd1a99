"""verl's v1 replay buffer, polled every ``POLL_INTERVAL_S`` on the CPU platform instead of every 2 s.

verl 0.9.1's trainer waits for a step's rollouts in ``ReplayBuffer.sample``, which sleeps ``poll_interval`` between
checks of TransferQueue; ``ReplayBuffer.__init__`` defaults it to 2.0 s and the trainer (``trainer_base.
PPOTrainer._build_replay_buffer``) builds the buffer without it, so no config key reaches it. A GPU step takes
minutes and 2 s is noise there; a CPU step of the demo takes seconds, and ``timing_s/gen`` came out as a multiple
of 2 s (8.0 s for 7.x s of rollout; 4.0 s for ~2.5 s once batched). Only the default changes: a caller that passes
``poll_interval`` keeps its value. Installed by the CPU plugin with ``VERL_PLATFORM=cpu`` only;
``AGGC_RL_REPLAY_POLL_S`` sets another interval (``bench.rollout_batching`` runs its "before" at verl's 2.0).
"""

from __future__ import annotations

import functools
import math
import os
from types import ModuleType
from typing import Any

from verl_patches.import_hooks import patch_after_import

REPLAY_BUFFER_MODULE = "verl.trainer.ppo.v1.replay_buffer"
#: Seconds between the trainer's checks for finished rollouts (each check is one metadata read of TransferQueue).
POLL_INTERVAL_S = 0.05
#: The environment variable that sets another interval (seconds).
POLL_ENV = "AGGC_RL_REPLAY_POLL_S"
#: Set on the wrapper, so that patching twice never wraps twice.
MARK = "_aggc_rl_cpu_poll_interval"


def poll_interval_s() -> float:
    """:data:`POLL_INTERVAL_S`, or the positive number of seconds in ``AGGC_RL_REPLAY_POLL_S``."""
    text = os.environ.get(POLL_ENV)
    if text is None:
        return POLL_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{POLL_ENV}={text!r}: allowed is a positive number of seconds (verl's default: 2.0)"
        )
    return value


def patch_replay_buffer(module: ModuleType) -> None:
    """Default ``module.ReplayBuffer``'s ``poll_interval`` to :data:`POLL_INTERVAL_S` (its subclasses inherit it)."""
    cls = module.ReplayBuffer
    init = cls.__init__
    if getattr(init, MARK, False):
        return
    interval = poll_interval_s()

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("poll_interval", interval)
        init(self, *args, **kwargs)

    setattr(__init__, MARK, True)
    cls.__init__ = __init__


def install() -> None:
    """Patch the replay buffer now if it is imported, else right after its import; idempotent. A bad
    ``AGGC_RL_REPLAY_POLL_S`` is refused here, in the process that starts Ray, before it starts."""
    poll_interval_s()
    patch_after_import(
        REPLAY_BUFFER_MODULE, patch_replay_buffer, imported=lambda m: hasattr(m, "ReplayBuffer")
    )
