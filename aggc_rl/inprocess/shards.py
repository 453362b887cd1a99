"""Local shards at world size 1: the harness runs one process, so a DTensor's local shard is the whole tensor.

A module of its own so the engine (which reads gradients) and the loops (which copy weights) share it without
importing each other.
"""

from __future__ import annotations

import torch


def local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (world size 1: the whole tensor); a plain tensor as it is."""
    return t.to_local() if hasattr(t, "to_local") else t


def local_params(engine) -> dict[str, torch.Tensor]:
    """Copies of the engine's weights (world size 1: the local shard is the whole tensor)."""
    return {n: local(p).detach().clone() for n, p in engine.module.named_parameters()}
