"""Time one clip step on Qwen2.5-0.5B-shaped gradients: torch's clip_grad_norm_ vs GradClipper per rule.

Robust to a shared machine (see :mod:`bench.rounds`): each round times torch and every method back to
back on the same gradients (restored untimed before each call), and the figure per method is the
median of its per-round ratios to torch, with their spread, min / median / max times and a plain
warning when the spread is too wide to trust. A copy timed in the same rounds gives the floor (3 x
the gradient bytes over the copy bandwidth). Adaptive rules start from their steady state on these
gradients (every group scaled). Also counts the collectives of one ``clip_`` call in a 2-process
gloo run.

    python -m bench.clip_step --out bench/results/clip_step_cpu.json
    python -m bench.clip_step --tiny --runs 5 --no-collectives     # seconds: the CI path
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile

import torch

from aggc_rl.clipping import RULE_NAMES, GradClipper, make_rule
from bench import rounds as rd
from bench.clip_methods import BENCH_GUARD, GUARD_RULE, GUARDED, build, measure

RULES = RULE_NAMES
#: Bigger than the last-level cache of any CPU this runs on.
PROBE_BYTES = 256 << 20


def bench_clip(model: str, dtype: torch.dtype, device: torch.device, runs: int, warmup: int = 2) -> dict:
    case = build(model, dtype, device)
    probe = PROBE_BYTES if not model.startswith("tiny") else 8 << 20
    m = measure(case, device, runs=runs, warmup=warmup, probe_bytes=probe)
    return {
        "model": model,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "tensors": len(case.named),
        "elements": case.elements,
        "grad_bytes": case.grad_bytes,
        "copy_bandwidth_gbps": m.bandwidth_gbps,
        "methods": m.summary["methods"],
        "host_sync_sites_modelled": {
            k: v["modelled"]["sites"] for k, v in m.syncs.items() if v["modelled"]["sites"]
        },
        "host_sync_model": next(iter(m.syncs.values()))["modelled"]["how"],
        "warnings": m.summary["warnings"],
    }


def _collective_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from aggc_rl.collective_counter import CollectiveCounter
    from aggc_rl.process_groups import finish_together

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    counts = {}
    mesh = init_device_mesh("cpu", (world,))
    variants = [(rule, rule, {}) for rule in RULES] + [(GUARDED, GUARD_RULE, {"guard": BENCH_GUARD})]
    for key, rule, kwargs in variants:
        torch.manual_seed(0)
        model = torch.nn.Sequential()
        model.add_module("q_proj", torch.nn.Linear(64, 64))
        model.add_module("down_proj", torch.nn.Linear(64, 64))
        fully_shard(model, mesh=mesh)
        model(torch.randn(8, 64)).square().mean().backward()
        clipper = GradClipper(model.named_parameters(), make_rule(rule), **kwargs)
        with CollectiveCounter() as counter:
            clipper.clip_(progress=0.5)
        counts[key] = len(counter.calls)
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(counts, f)
    finish_together(rank, world, init_file + ".exit")  # leave gloo only when every rank is done with it


def count_collectives(world: int = 2) -> dict[str, int]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "counts.json")
        mp.start_processes(
            _collective_worker, args=(world, init_file, out_file), nprocs=world, start_method="spawn"
        )
        with open(out_file) as f:
            return json.load(f)


def table(result: dict) -> str:
    header = [
        "method",
        "min ms",
        "median ms",
        "max ms",
        "/ torch (median of rounds)",
        "IQR",
        "min-max",
        "/ floor",
        "host syncs (model)",
    ]
    rows = [
        [
            key,
            f"{r['min_ms']:.1f}",
            f"{r['median_ms']:.1f}",
            f"{r['max_ms']:.1f}",
            f"{r['ratio']:.3f}",
            f"{r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}",
            f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f}",
            f"{r['floor_ratio']:.2f}",
            str(r["host_syncs_modelled"])
            if r["host_syncs"] is None
            else f"{r['host_syncs']} ({r['host_syncs_modelled']})",
        ]
        for key, r in result["methods"].items()
    ]
    return rd.markdown_table(header, rows)


def print_table(result: dict) -> None:
    floor = next(iter(result["methods"].values()))["floor_ms"]
    print(
        f"\n{result['model']} ({result['tensors']} tensors, {result['elements'] / 1e6:.1f}M elements), "
        f"{result['dtype']} on {result['device']}; floor {floor:.1f} ms at "
        f"{result['copy_bandwidth_gbps']:.1f} GB/s copy bandwidth"
    )
    print(table(result))
    for w in result["warnings"]:
        print(f"WARNING: {w}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--tiny", action="store_true", help="tiny-a shapes (overrides --model): the CI path")
    ap.add_argument("--runs", type=int, default=15, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtypes", default="float32", help="comma-separated, e.g. float32,bfloat16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-collectives", action="store_true", help="skip the 2-process collective count")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    model = "tiny-a" if args.tiny else args.model
    report = {
        "host": {
            "date": datetime.date.today().isoformat(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
            **rd.host_load(),
        },
        "clip_step": [],
    }
    for dt in args.dtypes.split(","):
        result = bench_clip(model, getattr(torch, dt), device, args.runs, args.warmup)
        print_table(result)
        report["clip_step"].append(result)
    report["host"]["loadavg_end"] = rd.host_load()["loadavg"]
    if not args.no_collectives:
        report["collectives_per_clip_world2_gloo"] = count_collectives()
        print(
            f"\ncollectives per clip_ call, 2-process gloo FSDP2: {report['collectives_per_clip_world2_gloo']}"
        )
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
