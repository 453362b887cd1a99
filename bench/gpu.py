"""GPU benchmark: clip-step cost against torch and the bandwidth floor, train-step overhead, host syncs.

    python -m bench.gpu --out bench/results/gpu.json --md bench/results/gpu.md    # one GPU, < 8 min
    python -m bench.gpu --tiny                                                   # CPU smoke run (CI)

1. The clip step on Qwen2.5-0.5B / 1.5B / 3B / 7B-shaped gradients, bf16 and fp32: torch's
   ``clip_grad_norm_(foreach=True)`` and ``GradClipper`` with each rule (and the step guard, once it
   exists), interleaved rounds timed with CUDA events (see :mod:`bench.rounds`); the floor (3 x the
   gradient bytes over the device copy bandwidth measured in the same rounds) and each method's ratio
   to it. Only the gradients live on the device (the weights take no memory), plus one copy of them
   to restore between calls: 7B fp32 needs 2 x 30.5 GB.
2. A whole train step of a random Qwen2.5-1.5B-shaped ``Qwen2ForCausalLM`` (bf16, sdpa, sequence
   1024): each method's step time over torch's, and the peak memory its clip call adds.
3. Host syncs per clip call, counted by torch's sync detector.

Needs only torch and transformers: no verl, Ray or vLLM. Full sizes refuse to run without CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from bench import rounds as rd
from bench.clip_methods import BASELINE, build, measure
from bench.shapes import FULL_SIZES, TINY_SIZES
from bench.train_step import bench_train_step

DTYPES = ("bfloat16", "float32")
#: Copy-bandwidth probe size: far beyond any cache (H200 L2 is 60 MB).
PROBE_BYTES_FULL = 2 << 30
PROBE_BYTES_TINY = 8 << 20


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tiny", action="store_true", help="tiny shapes: the same code path in seconds, on CPU too"
    )
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu (only with --tiny)")
    ap.add_argument("--sizes", default=None, help=f"comma-separated; default {','.join(FULL_SIZES)}")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument(
        "--runs", type=int, default=None, help="timed rounds per clip-step case (default 60; tiny 5)"
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--train-size", default=None, help="default qwen2.5-1.5b (tiny: tiny-a)")
    ap.add_argument(
        "--train-batch", type=int, default=None, help="micro-batch; halved until it fits (default 4)"
    )
    ap.add_argument("--train-seq", type=int, default=None, help="default 1024 (tiny: 32)")
    ap.add_argument(
        "--train-runs", type=int, default=None, help="timed train-step rounds (default 20; tiny 3)"
    )
    ap.add_argument("--no-train-step", action="store_true")
    ap.add_argument(
        "--budget-s", type=float, default=360.0, help="skip the parts that would start after this"
    )
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--md", default=None, help="write the markdown tables here")
    return ap.parse_args(argv)


def refuse_without_cuda(args: argparse.Namespace, device: torch.device) -> None:
    if args.tiny or device.type == "cuda":
        return
    sys.stderr.write(
        "bench.gpu: the full sizes (Qwen2.5-0.5B to 7B gradients, a 1.5B train step) need a CUDA GPU, and "
        f"this run is on {device} (torch.cuda.is_available() is {torch.cuda.is_available()}).\n"
        "  On this machine: `python -m bench.gpu --tiny` (the same code path on tiny shapes) or `make bench`"
        " (the CPU benchmark).\n"
    )
    raise SystemExit(2)


def host_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        **rd.host_load(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    for mod in ("verl", "ray", "vllm"):
        info[f"{mod}_imported"] = mod in sys.modules
    return info


def clip_case(
    size: str, dtype: torch.dtype, device: torch.device, runs: int, warmup: int, probe: int
) -> dict:
    case = build(size, dtype, device)
    m = measure(case, device, runs=runs, warmup=warmup, probe_bytes=probe)
    summary, syncs = m.summary, m.syncs
    for key, row in summary["methods"].items():
        row["skipped_a_step"] = case.skipped.get(key, False)
    label = f"{size} {str(dtype).removeprefix('torch.')}"
    warnings = [f"{label}: {w}" for w in summary["warnings"]]
    warnings += [
        f"{label}: {k} skipped a step (less work): not comparable" for k, v in case.skipped.items() if v
    ]
    result = {
        "model": size,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "tensors": len(case.named),
        "elements": case.elements,
        "grad_bytes": case.grad_bytes,
        "copy_bandwidth_gbps": m.bandwidth_gbps,
        "methods": summary["methods"],
        "host_sync_sites": {k: v["measured"]["sites"] for k, v in syncs.items() if v["measured"]["sites"]},
        "host_sync_sites_modelled": {
            k: v["modelled"]["sites"] for k, v in syncs.items() if v["modelled"]["sites"]
        },
        "host_sync_method": next(iter(syncs.values()))["measured"]["how"],
        "host_sync_model": next(iter(syncs.values()))["modelled"]["how"],
        "warnings": warnings,
    }
    del case, m
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def clip_table(results: Sequence[dict]) -> str:
    header = [
        "model",
        "dtype",
        "method",
        "median ms",
        "min-max ms",
        "/ torch [IQR]",
        "/ floor",
        "host syncs (measured, model)",
    ]
    rows = []
    for res in results:
        for key, row in res["methods"].items():
            rows.append(
                [
                    res["model"],
                    res["dtype"],
                    key,
                    f"{row['median_ms']:.3f}",
                    f"{row['min_ms']:.3f}-{row['max_ms']:.3f}",
                    rd.fmt_ratio(row),
                    f"{row['floor_ratio']:.2f}",
                    _syncs(row),
                ]
            )
        floor = next(iter(res["methods"].values()))["floor_ms"]
        rows.append([res["model"], res["dtype"], "floor", f"{floor:.3f}", "", "", "1.00", ""])
    return rd.markdown_table(header, rows, align="lllrrrrr")


def _syncs(row: dict) -> str:
    measured, modelled = row["host_syncs"], row["host_syncs_modelled"]
    return f"{measured} (model {modelled})" if measured is not None else f"n/a (model {modelled})"


def train_table(res: dict) -> str:
    header = ["method", "median ms", "min-max ms", "/ torch [IQR]", "clip extra peak MiB", "step peak GiB"]
    rows = []
    for key, row in res["methods"].items():
        extra, peak = row.get("clip_extra_peak_mib"), row.get("step_peak_gib")
        rows.append(
            [
                key,
                f"{row['median_ms']:.1f}",
                f"{row['min_ms']:.1f}-{row['max_ms']:.1f}",
                rd.fmt_ratio(row),
                "n/a" if extra is None else f"{extra:.1f}",
                "n/a" if peak is None else f"{peak:.2f}",
            ]
        )
    return rd.markdown_table(header, rows)


def render(report: dict) -> str:
    host = report["host"]
    out = [
        f"# bench.gpu {host['date']} on {host['gpu'] or host['device']} (torch {host['torch']}, "
        f"load {host['loadavg']} on {host['cpu_count']} cores){' [TINY shapes]' if report['tiny'] else ''}",
        "",
        "## Clip step (median of interleaved rounds; ratios are medians of per-round ratios)",
        "",
        clip_table(report["clip_step"]),
    ]
    if report.get("train_step"):
        res = report["train_step"]
        out += [
            "",
            f"## Train step: {res['model']} bf16 {res['attention']}, micro-batch {res['batch']} x {res['seq']}"
            f" tokens, {res['methods'][BASELINE]['runs']} rounds",
            "",
            train_table(res),
        ]
    warnings = [w for res in report["clip_step"] for w in res["warnings"]]
    if report.get("train_step"):
        warnings += [f"train step: {w}" for w in report["train_step"]["warnings"]]
    warnings += report["skipped_parts"]
    if warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in dict.fromkeys(warnings)]
    return "\n".join(out) + "\n"


def write(report: dict, args: argparse.Namespace) -> None:
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if args.md:
        os.makedirs(os.path.dirname(args.md) or ".", exist_ok=True)
        with open(args.md, "w") as f:
            f.write(render(report))


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    refuse_without_cuda(args, device)
    t_start = time.monotonic()
    sizes = args.sizes.split(",") if args.sizes else list(TINY_SIZES if args.tiny else FULL_SIZES)
    runs = args.runs or (5 if args.tiny else 60)
    probe = PROBE_BYTES_TINY if args.tiny else PROBE_BYTES_FULL
    report: dict[str, Any] = {
        "host": host_info(device),
        "tiny": args.tiny,
        "clip_step": [],
        "train_step": None,
        "skipped_parts": [],
    }
    for size in sizes:
        for dt in args.dtypes.split(","):
            if time.monotonic() - t_start > args.budget_s:
                report["skipped_parts"].append(
                    f"clip step {size} {dt}: over the {args.budget_s:.0f} s budget"
                )
                continue
            res = clip_case(size, getattr(torch, dt), device, runs, args.warmup, probe)
            report["clip_step"].append(res)
            print(f"clip step {size} {dt}: done at {time.monotonic() - t_start:.0f} s", flush=True)
            write(report, args)
    if not args.no_train_step:
        if time.monotonic() - t_start > args.budget_s:
            report["skipped_parts"].append(f"train step: over the {args.budget_s:.0f} s budget")
        else:
            report["train_step"] = bench_train_step(
                args.train_size or ("tiny-a" if args.tiny else "qwen2.5-1.5b"),
                device,
                batch=args.train_batch or (2 if args.tiny else 4),
                seq=args.train_seq or (32 if args.tiny else 1024),
                rounds=args.train_runs or (3 if args.tiny else 20),
                warmup=1 if args.tiny else 2,
            )
    report["host"]["loadavg_end"] = rd.host_load()["loadavg"]
    report["wall_s"] = time.monotonic() - t_start
    write(report, args)
    print(render(report))
    return report


if __name__ == "__main__":
    main()
