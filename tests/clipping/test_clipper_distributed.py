"""GradClipper under FSDP2 and HSDP (2 gloo processes): sharded results equal an unsharded replica.

Each rank trains on its own batch; FSDP2 averages the gradients, so the replica
takes the mean loss of all ranks' batches. Norms, scales and the scaled
gradients (gathered) must match the replica for every rule, with exactly one
collective per ``clip_`` call where the shard group has more than one rank.
"""

from __future__ import annotations

import pytest
import torch
from support.distributed import run_distributed
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from aggc_rl.clipping import RULE_NAMES, GradClipper, make_rule
from aggc_rl.collective_counter import CollectiveCounter
from aggc_rl.tiny import lm_loss, tiny_qwen2

pytestmark = pytest.mark.slow

RULE_KNOBS = {
    "global": {"max_norm": 0.5},
    "aggc": {},
    "aggc_official": {},
    "aggc_lora": {},
    "adagc": {"warmup": 2},
    "zclip": {"warmup_steps": 2},
}
SPIKES = (1.0, 1.0, 6.0, 1.0, 0.2)  # gradient multipliers of successive steps


def _collectives(fn):
    with CollectiveCounter() as counter:
        out = fn()
    return out, len(counter.calls)


def _assert_rel(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(
        a.double(), b.double(), rtol=1e-5, atol=1e-9, msg=lambda m: f"{what}: {m}\n{a}\n{b}"
    )


def _fsdp_matches_replica(rank: int, world: int, mesh_shape: tuple[int, ...]) -> None:
    names = ("replicate", "shard") if len(mesh_shape) == 2 else ("shard",)
    mesh = init_device_mesh("cpu", mesh_shape, mesh_dim_names=names)
    shard_size = mesh_shape[-1]
    replica, sharded = tiny_qwen2(), tiny_qwen2()
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)

    batches = [
        torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(r)) for r in range(world)
    ]
    lm_loss(sharded, batches[rank]).backward()
    (sum(lm_loss(replica, ids) for ids in batches) / world).backward()
    sharded_params = dict(sharded.named_parameters())
    assert all(isinstance(p.grad, DTensor) for p in sharded_params.values())
    base_local = {n: p.grad.to_local().clone() for n, p in sharded_params.items()}
    base_full = {n: p.grad.clone() for n, p in replica.named_parameters()}

    for rule in RULE_NAMES:
        ours = GradClipper(sharded.named_parameters(), make_rule(rule, **RULE_KNOBS[rule]))
        ref = GradClipper(replica.named_parameters(), make_rule(rule, **RULE_KNOBS[rule]))
        assert ours.groups == ref.groups
        for step, mult in enumerate(SPIKES):
            for n, p in sharded_params.items():
                p.grad.to_local().copy_(base_local[n] * mult)
            for n, p in replica.named_parameters():
                p.grad.copy_(base_full[n] * mult)
            progress = step / (len(SPIKES) - 1)
            got, calls = _collectives(lambda o=ours, p=progress: o.clip_(progress=p))
            want = ref.clip_(progress=progress)
            assert calls == (1 if shard_size > 1 else 0), f"{rule}: {calls} collectives in one clip_"
            _assert_rel(got.norms, want.norms, f"{rule} step {step} norms")
            _assert_rel(got.scales, want.scales, f"{rule} step {step} scales")
            assert got.skipped is want.skipped is False
        for k, v in ref.state.items():
            _assert_rel(ours.state[k], v, f"{rule} state {k}")
        for n, p in sharded_params.items():
            _assert_rel(p.grad.full_tensor(), dict(replica.named_parameters())[n].grad, f"{rule} grad {n}")


@pytest.mark.parametrize("mesh_shape", [(2,), (1, 2), (2, 1)], ids=["fsdp2", "hsdp-1x2", "hsdp-2x1"])
def test_fsdp2_and_hsdp_match_unsharded_replica(mesh_shape):
    run_distributed(_fsdp_matches_replica, 2, mesh_shape)


def _mixed_placements(rank: int, world: int) -> None:
    """Sharded, replicated and plain gradients in one clipper: every element counted exactly once."""
    mesh = init_device_mesh("cpu", (world,))
    gen = torch.Generator().manual_seed(7)
    full = {
        n: torch.randn(6, 4, generator=gen) for n in ("a.q_proj.weight", "a.k_proj.weight", "a.v_proj.weight")
    }
    placed = {
        "a.q_proj.weight": distribute_tensor(full["a.q_proj.weight"].clone(), mesh, [Shard(0)]),
        "a.k_proj.weight": distribute_tensor(full["a.k_proj.weight"].clone(), mesh, [Replicate()]),
        "a.v_proj.weight": full["a.v_proj.weight"].clone(),
    }
    named = []
    for n, g in placed.items():
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g
        named.append((n, p))
    for scheme in ("module_type", "global"):
        clipper = GradClipper(named, make_rule("global", max_norm=1.0), grouping=scheme)
        result, calls = _collectives(clipper.clip_)
        want = {k: v.double().norm() for k, v in full.items()}
        if scheme == "global":
            want = {"all": torch.stack(list(want.values())).norm()}
        _assert_rel(result.norms, torch.stack(list(want.values())), f"{scheme} norms")
        assert calls == 1
        for n, p in named:
            full[n] = full[n] * float(result.scales[0])
            got = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
            _assert_rel(got, full[n], f"{scheme} {n}")


def test_mixed_placements_count_each_element_once():
    run_distributed(_mixed_placements, 2)
