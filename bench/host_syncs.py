"""Count the host syncs of one call: the times the host waits for the device.

Two counters, never mixed up in the output:

- ``count_host_syncs`` on CUDA: measured by torch's own sync detector,
  ``torch.cuda.set_sync_debug_mode("warn")``, which warns at every synchronizing operation
  (device-to-host copies such as ``.cpu()`` / ``.item()`` / ``int()``, blocking host-to-device copies such
  as ``torch.tensor(3.0, device="cuda")``, stream or device synchronizations); one warning is one sync.
  On a CPU there is nothing to measure (host and device are one memory): it returns ``None``.
- :class:`SyncModel`, a test double for CPU: a ``TorchFunctionMode`` that tracks which tensors would live
  on the accelerator (the gradients and whatever is computed from them or created with an explicit
  ``device=``) and counts the Python-level operations that would synchronize there: a tracked tensor
  read by the host (``.cpu()``, ``.item()``, ``.tolist()``, ``int()``, ``float()``, ``bool()``), and a
  blocking host-to-device copy (``torch.tensor(data, device=...)``, ``host_tensor.to(device)``). It is a
  model of CUDA's behaviour, reported as ``modelled``, not a measurement.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

_SYNC_WARNING = "called a synchronizing"
_HOST_READS = frozenset({"cpu", "item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"})


def count_host_syncs(fn: Callable[[], object], device: torch.device) -> dict[str, Any]:
    """``{"count": n | None, "how": ..., "sites": [...]}`` for one call of ``fn``, measured on CUDA."""
    if device.type != "cuda":
        return {
            "count": None,
            "how": f"not countable on {device.type}: host and device share memory, nothing is transferred",
            "sites": [],
        }
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    syncs = [w for w in caught if _SYNC_WARNING in str(w.message)]
    return {
        "count": len(syncs),
        "how": 'measured: torch.cuda.set_sync_debug_mode("warn"), one warning per synchronizing operation',
        "sites": [f"{w.filename}:{w.lineno}" for w in syncs],
    }


def _site() -> str:
    """The innermost caller outside torch and this module (where the sync is written)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = frame.filename.replace("\\", "/")
        if "/torch/" not in path and not path.endswith("bench/host_syncs.py"):
            return (
                f"{path.split('/aggc_rl/')[-1] if '/aggc_rl/' in path else path}:{frame.lineno} {frame.line}"
            )
    return "?"


class SyncModel(TorchFunctionMode):
    """``with SyncModel(device_tensors) as m: fn()``; then ``m.syncs`` lists (kind, site) per modelled sync."""

    def __init__(self, device_tensors: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._on_device: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.syncs: list[tuple[str, str]] = []
        for t in device_tensors:
            self._on_device[t] = True

    def _tracked(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x in self._on_device

    def _track(self, out: Any) -> None:
        for x in tree_flatten(out)[0]:
            if isinstance(x, torch.Tensor):
                self._on_device[x] = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = tree_flatten((args, kwargs))[0]
        on_device = any(self._tracked(x) for x in inputs)
        out = func(*args, **kwargs)
        if on_device and name in _HOST_READS:
            self.syncs.append((f"device-to-host ({name})", _site()))
            # On a CPU ``.cpu()`` returns the tensor itself; on the accelerator it is a new host tensor.
            return out.clone() if isinstance(out, torch.Tensor) else out
        explicit_device = kwargs.get("device") is not None or any(
            isinstance(x, torch.device) for x in tree_flatten(args)[0]
        )
        if name == "tensor" and explicit_device:
            self.syncs.append(("blocking host-to-device (torch.tensor(..., device=...))", _site()))
        elif name == "to" and explicit_device and not on_device:
            self.syncs.append(("blocking host-to-device (.to(device))", _site()))
        if on_device or explicit_device:
            self._track(out)
        return out


def model_host_syncs(fn: Callable[[], object], device_tensors: Iterable[torch.Tensor]) -> dict[str, Any]:
    """The syncs ``fn`` would make on an accelerator (see :class:`SyncModel`), counted on any device."""
    with SyncModel(device_tensors) as model:
        fn()
    return {
        "count": len(model.syncs),
        "how": "modelled: Python-level operations that synchronize on CUDA (bench.host_syncs.SyncModel)",
        "sites": [f"{kind}: {site}" for kind, site in model.syncs],
    }
