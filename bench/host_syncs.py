"""Count the host syncs of one call: the times the host waits for the device.

On CUDA this uses torch's own sync detector, ``torch.cuda.set_sync_debug_mode("warn")``, which warns
at every synchronizing operation (device-to-host copies such as ``.cpu()`` / ``.item()`` / ``int()``,
blocking host-to-device copies, stream or device synchronizations); each warning is one sync, and
where it came from is kept. On a CPU, host and device are one memory: there is no sync to count, and
this says so instead of reporting a number.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

_SYNC_WARNING = "synchroniz"


def count_host_syncs(fn: Callable[[], object], device: torch.device) -> dict[str, Any]:
    """``{"count": n | None, "how": ..., "sites": [...]}`` for one call of ``fn``."""
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
        "how": 'torch.cuda.set_sync_debug_mode("warn"), one warning per synchronizing operation',
        "sites": [f"{w.filename}:{w.lineno}" for w in syncs],
    }
