"""Count the collectives a block of code issues, by watching the dispatcher (no profiler needed).

Used by the tests and `make bench` to check that one clip step costs exactly one all-reduce.
"""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode

_COLLECTIVE_NAMESPACES = ("c10d.", "_c10d_functional.", "c10d_functional.")
_NOT_COLLECTIVES = ("wait_tensor", "barrier", "monitored_barrier")


class CollectiveCounter(TorchDispatchMode):
    """``with CollectiveCounter() as c: ...`` then ``c.calls`` lists the collective ops seen."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.startswith(_COLLECTIVE_NAMESPACES) and not any(x in name for x in _NOT_COLLECTIVES):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))
