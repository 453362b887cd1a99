"""The engine's backend name, and the one trick it needs (written for verl 0.9.1).

verl uses ``engine_config.strategy`` for two different things:

1. ``TrainingWorker`` looks the engine class up by it (``EngineRegistry.new(model_type, backend=strategy)``,
   ``workers/engine_workers.py``), so selecting our engine means ``strategy == CLIP_BACKEND``;
2. ``FSDPEngine._build_fsdp_module`` and the activation-offload helper branch on it and only know
   ``"fsdp"`` / ``"fsdp2"`` (``workers/engine/fsdp/transformer_impl.py``).

So the config a worker holds says ``CLIP_BACKEND`` (set once, by :func:`route_to_clip_engine`) and the
engine builds its module from a copy that says ``"fsdp2"`` (:func:`for_module_builder`). Nothing else
writes ``strategy``. verl's own ``fsdp_turbo`` variant avoids this only because verl's builder knows it.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

#: The backend name the engine is registered under (``EngineRegistry``); users never type it.
CLIP_BACKEND = "aggc_fsdp2"
#: What the engine's module is built as.
BUILDER_STRATEGY = "fsdp2"

_Config = TypeVar("_Config")


def route_to_clip_engine(engine_config: object) -> None:
    """Point an FSDP2 engine config at our engine (registry key). verl's configs freeze ``strategy``."""
    strategy = getattr(engine_config, "strategy", None)
    if strategy not in (BUILDER_STRATEGY, CLIP_BACKEND):
        raise ValueError(
            f"the clip engine needs FSDP2 (exact per-module norms of sharded DTensors), but the engine config "
            f"has strategy={strategy!r}; allowed: {BUILDER_STRATEGY}"
        )
    object.__setattr__(engine_config, "strategy", CLIP_BACKEND)


def for_module_builder(engine_config: object, verl_cls: type[_Config]) -> _Config:
    """The config as verl's FSDP engine must see it: verl's own class ``verl_cls``, ``strategy="fsdp2"``.

    A copy of ``verl_cls``'s fields (our extra fields stay behind), so verl's engine code holds exactly the
    config type it was written for.
    """
    values = {f.name: getattr(engine_config, f.name) for f in dataclasses.fields(verl_cls) if f.init}
    values["strategy"] = BUILDER_STRATEGY
    return verl_cls(**values)
