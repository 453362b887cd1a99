"""Leaving a gloo process group safely: shared by the multi-process tests and ``make bench``.

A rank that closes its sockets while a peer is still completing its last collective aborts that peer
("terminate called without an active exception"). :func:`finish_together` tears gloo down only once every
rank is done with it.
"""

from __future__ import annotations

import torch.distributed as dist


def finish_together(rank: int, world: int, store_file: str) -> None:
    """Barrier, then wait on a file store outside gloo until every rank got here, then destroy the group."""
    dist.barrier()
    store = dist.FileStore(store_file, world)
    store.set(f"done{rank}", "1")
    store.wait([f"done{r}" for r in range(world)])
    dist.destroy_process_group()
