"""Run a test function in N gloo processes on CPU; a failure in any rank fails the test with its traceback."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import torch.distributed as dist
import torch.multiprocessing as mp

from aggc_rl.process_groups import finish_together


def _entry(rank: int, world: int, init_file: str, fn: Callable[..., None], args: tuple) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    fn(rank, world, *args)
    finish_together(rank, world, init_file + ".exit")


def run_distributed(fn: Callable[..., None], world: int = 2, *args) -> None:
    """``fn(rank, world, *args)`` must be a module-level function (it is pickled for spawn)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(
            _entry, args=(world, os.path.join(tmp, "init"), fn, args), nprocs=world, start_method="spawn"
        )
