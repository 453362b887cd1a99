"""Where gradient shards live, and which ranks must sum their squares.

Under FSDP2 every gradient is a DTensor sharded (``Shard(0)``) over the FSDP
mesh dimension; HSDP adds a replicate dimension whose ranks hold identical
shards. The exact norm of a group is therefore the sum of squares of the local
shards, summed over the *shard* dimension only -- one all-reduce of a small
per-group vector per step. FSDP2's reduce-scatter has already averaged over
data-parallel ranks, so nothing is divided again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def local_tensor(grad: torch.Tensor) -> torch.Tensor:
    """The part of a gradient this rank holds (a view: scaling it scales the DTensor)."""
    return grad.to_local() if isinstance(grad, DTensor) else grad


@dataclass(frozen=True)
class ReductionPlan:
    """How this rank's per-tensor squared norms become exact global ones.

    ``group`` is the process group whose ranks hold disjoint shards (None: no
    collective needed). ``weights[i]`` is 1.0 when tensor i's local squares
    must be counted on this rank and 0.0 when the tensor is replicated over
    ``group`` and another rank counts it, so that the SUM all-reduce counts
    every element exactly once. ``device`` is where the collective runs.
    """

    group: dist.ProcessGroup | None
    weights: tuple[float, ...]
    device: torch.device


def _shard_dim(grad: DTensor, name: str) -> int | None:
    placements = grad.placements
    if any(p.is_partial() for p in placements):
        raise ValueError(
            f"gradient of {name!r} has a Partial placement {placements}: it must be reduced before clipping"
        )
    dims = [i for i, p in enumerate(placements) if p.is_shard()]
    if len(dims) > 1:
        raise NotImplementedError(
            f"gradient of {name!r} is sharded over {len(dims)} mesh dimensions {placements}; "
            "only one shard dimension (FSDP2, HSDP) is supported"
        )
    return dims[0] if dims else None


def _same_group(a: dist.ProcessGroup, b: dist.ProcessGroup) -> bool:
    return a is b or dist.get_process_group_ranks(a) == dist.get_process_group_ranks(b)


def _collective_device(group: dist.ProcessGroup) -> torch.device:
    backend = str(dist.get_backend(group))
    if "nccl" in backend or "cuda" in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def plan_reduction(
    names: Sequence[str], grads: Sequence[torch.Tensor], process_group: dist.ProcessGroup | None = None
) -> ReductionPlan:
    """Inspect the gradients once and decide the single reduction this clipper needs.

    With ``process_group`` given, every gradient (plain or DTensor) is taken to
    be this rank's shard over that group (FSDP1 with ``use_orig_params=True``).
    """
    fallback_device = grads[0].device if grads else torch.device("cpu")
    if process_group is not None:
        return ReductionPlan(process_group, tuple(1.0 for _ in grads), _collective_device(process_group))

    group: dist.ProcessGroup | None = None
    device = fallback_device
    sharded: list[bool] = []
    for name, grad in zip(names, grads, strict=True):
        if not isinstance(grad, DTensor):
            sharded.append(False)
            continue
        dim = _shard_dim(grad, name)
        sharded.append(dim is not None)
        if dim is None:
            continue
        mesh_group = grad.device_mesh.get_group(dim)
        if group is None:
            group, device = mesh_group, torch.device(grad.device_mesh.device_type)
        elif not _same_group(group, mesh_group):
            raise ValueError(
                f"gradient of {name!r} is sharded over ranks {dist.get_process_group_ranks(mesh_group)} but "
                f"earlier ones over {dist.get_process_group_ranks(group)}: one clipper needs one shard group"
            )

    if group is None or dist.get_world_size(group) == 1:
        return ReductionPlan(None, tuple(1.0 for _ in grads), device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    # Whole (replicated) tensors are counted by the group's first rank only.
    counts_replicas = dist.get_rank(group) == 0
    weights = tuple(1.0 if s or counts_replicas else 0.0 for s in sharded)
    return ReductionPlan(group, weights, device)
