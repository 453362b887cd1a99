"""One way to put an engine into verl's ``EngineRegistry``, for every device (written for verl 0.9.1).

verl registers its FSDP engines for ``cuda`` and ``npu`` only, and its public ``EngineRegistry.register``
asserts that a (model type, backend, device) key is taken once. We remember what we registered, so a
second call (a module imported again, a plugin loaded twice) is a no-op, and a clash with another class
is a clear error instead of a bare assert.
"""

from __future__ import annotations

from collections.abc import Iterable

from verl_patches.version import require_verl

require_verl(__name__)

#: What this project registered: (model_type, backend, device) -> class.
_registered: dict[tuple[str, str, str], type] = {}


class EngineRegistrationError(RuntimeError):
    """An engine could not be registered (the key is taken by another class)."""


def register_engine(
    engine_cls: type, *, model_type: str, backends: Iterable[str], devices: Iterable[str]
) -> None:
    """Register ``engine_cls`` under every (backend, device) pair; idempotent for the same class.

    verl's engine package is imported here, not at module import: importing it resolves verl's platform
    singleton (``workers/engine/fsdp/transformer_impl.py``), which must wait until the CPU platform, when
    selected, is registered.
    """
    from verl.workers.engine import BaseEngine, EngineRegistry

    if not (isinstance(engine_cls, type) and issubclass(engine_cls, BaseEngine)):
        raise TypeError(f"{engine_cls!r} is not a subclass of verl's BaseEngine")
    for backend in backends:
        for device in devices:
            key = (model_type, backend, device)
            known = _registered.get(key)
            if known is engine_cls:
                continue
            if known is not None:
                raise EngineRegistrationError(
                    f"{known.__qualname__} is already registered for model_type={model_type!r}, "
                    f"backend={backend!r}, device={device!r}; cannot register {engine_cls.__qualname__} as well"
                )
            try:
                EngineRegistry.register(model_type=model_type, backend=backend, device=device)(engine_cls)
            except AssertionError as err:  # verl asserts that a key is registered once
                raise EngineRegistrationError(
                    f"cannot register {engine_cls.__qualname__} for model_type={model_type!r}, backend={backend!r}, "
                    f"device={device!r}: verl's EngineRegistry already has an engine for that key ({err})"
                ) from err
            _registered[key] = engine_cls
