"""Time one clip step on Qwen2.5-0.5B-shaped gradients: torch's clip_grad_norm_ vs GradClipper per rule.

Methods are interleaved in one process (so drift hits all alike); each timed
call starts from the same random gradients (restored untimed); adaptive rules
start from a steady state reached by running the rule alone for 200 updates on
these gradients' norms, so every group is scaled as in a long run. Also counts
the collectives of one ``clip_`` call in a 2-process gloo run (torch profiler).

    python -m bench.clip_step --out bench/results/clip_step_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from aggc_rl.clipping import GradClipper, make_rule
from bench.shapes import qwen2_shapes

RULES = ("global", "aggc", "aggc_official", "adagc")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_params(
    model: str, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> list[tuple[str, torch.nn.Parameter]]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    named = []
    for name, shape in qwen2_shapes(model):
        p = torch.nn.Parameter(torch.empty(shape, dtype=dtype, device=device))
        p.grad = torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
        named.append((name, p))
    return named


def steady_state(clipper: GradClipper, updates: int = 200) -> None:
    """Advance the rule's state as if it had seen these gradients ``updates`` times (grads untouched)."""
    saved = [p.grad.clone() for p in clipper.params]
    norms = clipper.clip_(progress=0.0).norms
    for p, g in zip(clipper.params, saved, strict=True):
        p.grad.copy_(g)
    state = clipper.rule.init(len(clipper.groups), dtype=torch.float64)
    for _ in range(updates):
        _, state = clipper.rule.update(norms, state, progress=0.0)
    clipper.state = state


def bench_clip(model: str, dtype: torch.dtype, device: torch.device, runs: int) -> dict:
    named = make_params(model, dtype, device)
    params = [p for _, p in named]
    original = [p.grad.clone() for p in params]
    n_elems = sum(p.numel() for p in params)

    methods: dict[str, Callable[[], object]] = {
        "torch_clip_grad_norm_foreach": lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    }
    for rule in RULES:
        clipper = GradClipper(named, make_rule(rule))
        if rule != "global":
            steady_state(clipper)
        methods[rule] = lambda c=clipper: c.clip_(progress=0.0)

    times: dict[str, list[float]] = {k: [] for k in methods}
    for run in range(runs + 2):  # two warm-up rounds are discarded
        for key, fn in methods.items():
            for p, g in zip(params, original, strict=True):
                p.grad.copy_(g)
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if run >= 2:
                times[key].append(time.perf_counter() - t0)

    base = statistics.median(times["torch_clip_grad_norm_foreach"])
    rows = {
        k: {
            "median_ms": 1e3 * statistics.median(v),
            "ratio_to_torch": statistics.median(v) / base,
            "runs": len(v),
        }
        for k, v in times.items()
    }
    return {
        "model": model,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "tensors": len(params),
        "elements": n_elems,
        "methods": rows,
    }


def _collective_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from aggc_rl.collective_counter import CollectiveCounter

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    counts = {}
    mesh = init_device_mesh("cpu", (world,))
    for rule in RULES:
        torch.manual_seed(0)
        model = torch.nn.Sequential()
        model.add_module("q_proj", torch.nn.Linear(64, 64))
        model.add_module("down_proj", torch.nn.Linear(64, 64))
        fully_shard(model, mesh=mesh)
        model(torch.randn(8, 64)).square().mean().backward()
        clipper = GradClipper(model.named_parameters(), make_rule(rule))
        with CollectiveCounter() as counter:
            clipper.clip_(progress=0.5)
        counts[rule] = len(counter.calls)
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(counts, f)
    # Leave gloo only when every rank is done with it (see tests/support/distributed.py).
    dist.barrier()
    store = dist.FileStore(init_file + ".exit", world)
    store.set(f"done{rank}", "1")
    store.wait([f"done{r}" for r in range(world)])
    dist.destroy_process_group()


def count_collectives(world: int = 2) -> dict[str, int]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "counts.json")
        mp.start_processes(
            _collective_worker, args=(world, init_file, out_file), nprocs=world, start_method="spawn"
        )
        with open(out_file) as f:
            return json.load(f)


def print_table(result: dict) -> None:
    print(
        f"\n{result['model']} ({result['tensors']} tensors, {result['elements'] / 1e6:.0f}M elements), "
        f"{result['dtype']} on {result['device']}"
    )
    print(f"{'method':<30} {'median ms':>10} {'/ torch':>8}")
    for key, row in result["methods"].items():
        print(f"{key:<30} {row['median_ms']:>10.1f} {row['ratio_to_torch']:>8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--dtypes", default="float32", help="comma-separated, e.g. float32,bfloat16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    device = torch.device(args.device)
    report = {
        "host": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        },
        "clip_step": [],
    }
    for dt in args.dtypes.split(","):
        result = bench_clip(args.model, getattr(torch, dt), device, args.runs)
        print_table(result)
        report["clip_step"].append(result)
    report["collectives_per_clip_world2_gloo"] = count_collectives()
    print(f"\ncollectives per clip_ call, 2-process gloo FSDP2: {report['collectives_per_clip_world2_gloo']}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
