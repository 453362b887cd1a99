"""The ``torch.<device>`` namespace verl's CPU platform hands out as ``device_module``.

verl treats ``get_torch_device()`` as if it were ``torch.cuda``: it asks it for memory figures
after every update (``max_memory_allocated``), for RNG state when a checkpoint is loaded
(``set_rng_state``), for the device name (FLOPs counter) and to synchronize or empty caches.
``torch.cpu`` answers only a few of these, so this module answers the rest with the CPU
meaning of each query. It imports nothing from verl, so it works with any verl version.

Memory: the CPU has no caching allocator, so "allocated" and "reserved" are both this
process's resident set size and "max" is the process's peak resident set size (which the
OS cannot reset, so ``reset_peak_memory_stats`` leaves it alone).

Anything verl asks for that is not defined here fails with an ``AttributeError`` naming this
module, instead of being answered with a made-up value.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import psutil
import torch
import torch.cpu

# Streams and events exist for the CPU in torch itself; re-export them under the names verl uses.
Stream = torch.cpu.Stream
StreamContext = torch.cpu.StreamContext
Event = torch.cpu.Event
current_stream = torch.cpu.current_stream
stream = torch.cpu.stream

#: What ``get_device_name`` reports; verl's FLOPs counter looks it up in its table of peak FLOPs.
DEVICE_NAME = "CPU"


@dataclass(frozen=True)
class CPUDeviceProperties:
    """The subset of ``torch.cuda.get_device_properties`` that verl reads (name, total memory)."""

    name: str
    total_memory: int


# --- device management ------------------------------------------------------------------------------


def is_available() -> bool:
    """The CPU is always there."""
    return True


def is_initialized() -> bool:
    """Nothing to initialise lazily on the CPU."""
    return True


def device_count() -> int:
    """One CPU "device" per process, like one GPU per verl worker."""
    return 1


def current_device() -> str:
    """``"cpu"``, not ``0``: verl passes this to ``Tensor.to``/``torch.device``, where ``0`` means cuda:0."""
    return "cpu"


def set_device(device: Any) -> None:
    """No-op: verl selects ``LOCAL_RANK`` as the device, but every CPU process has the same one."""


def synchronize(device: Any = None) -> None:
    """No-op: CPU kernels run synchronously."""


def get_device_name(device: Any = None) -> str:
    """A fixed name, so verl's FLOPs counter finds no peak (MFU is then reported as 0)."""
    return DEVICE_NAME


def get_device_capability(device: Any = None) -> tuple[None, None]:
    """No compute capability on the CPU."""
    return (None, None)


def get_device_properties(device: Any = None) -> CPUDeviceProperties:
    """Name and total host memory."""
    return CPUDeviceProperties(name=DEVICE_NAME, total_memory=psutil.virtual_memory().total)


# --- memory -----------------------------------------------------------------------------------------


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes. Linux updates the high-water mark lazily, so it can
    # trail the current size: never report a peak below it.
    return max(peak if sys.platform == "darwin" else peak * 1024, _rss())


def memory_allocated(device: Any = None) -> int:
    """Resident set size of this process, in bytes."""
    return _rss()


def memory_reserved(device: Any = None) -> int:
    """Same as :func:`memory_allocated`: there is no allocator cache on the CPU."""
    return _rss()


def max_memory_allocated(device: Any = None) -> int:
    """Peak resident set size of this process, in bytes."""
    return _peak_rss()


def max_memory_reserved(device: Any = None) -> int:
    """Same as :func:`max_memory_allocated`."""
    return _peak_rss()


def reset_peak_memory_stats(device: Any = None) -> None:
    """No-op: the OS keeps the peak resident set size for the life of the process."""


def reset_accumulated_memory_stats(device: Any = None) -> None:
    """No-op: nothing is accumulated."""


def memory_stats(device: Any = None) -> dict[str, int]:
    """The figures above under the names ``torch.cuda.memory_stats`` uses for them."""
    return {
        "allocated_bytes.all.current": memory_allocated(),
        "allocated_bytes.all.peak": max_memory_allocated(),
        "reserved_bytes.all.current": memory_reserved(),
        "reserved_bytes.all.peak": max_memory_reserved(),
    }


def mem_get_info(device: Any = None) -> tuple[int, int]:
    """``(free, total)`` host memory in bytes, where free is what the OS reports as available."""
    memory = psutil.virtual_memory()
    return memory.available, memory.total


def empty_cache() -> None:
    """No-op: no allocator cache to release."""


def ipc_collect() -> None:
    """No-op: no CUDA IPC handles on the CPU."""


def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
    """No-op: host memory is not capped per process (verl only sets this to avoid GPU OOM)."""


# --- random number generation: the CPU generator is torch's default generator ----------------------


def get_rng_state(device: Any = None) -> torch.Tensor:
    """State of torch's default (CPU) generator."""
    return torch.get_rng_state()


def set_rng_state(new_state: torch.Tensor, device: Any = None) -> None:
    """Restore torch's default (CPU) generator (verl calls this when loading a checkpoint)."""
    torch.set_rng_state(new_state)


def get_rng_state_all() -> list[torch.Tensor]:
    """One state per device, and there is one device."""
    return [get_rng_state()]


def set_rng_state_all(new_states: list[torch.Tensor]) -> None:
    """Inverse of :func:`get_rng_state_all`."""
    if len(new_states) != 1:
        raise ValueError(f"the CPU device module has one RNG state, got {len(new_states)}")
    set_rng_state(new_states[0])


def manual_seed(seed: int) -> None:
    """Seed torch's default generator."""
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    """Same as :func:`manual_seed`: there is one CPU generator."""
    torch.manual_seed(seed)


def seed() -> None:
    """Seed torch's default generator non-deterministically."""
    torch.seed()


def seed_all() -> None:
    """Same as :func:`seed`."""
    torch.seed()


def initial_seed() -> int:
    """Initial seed of torch's default generator."""
    return torch.initial_seed()


def __getattr__(name: str) -> NoReturn:
    """Fail loudly, naming this module, for a ``torch.cuda`` function that has no CPU answer here."""
    raise AttributeError(
        f"verl asked the CPU device module ({__name__}) for {name!r}, which it does not implement. "
        f"If it has a meaning on the CPU, add it to {__name__}."
    )
