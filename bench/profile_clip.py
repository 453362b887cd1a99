"""Where a clip step's time goes: torch's profiler over a few calls of each method, per operator.

    python -m bench.profile_clip --model qwen2.5-0.5b --dtype bfloat16 --calls 3
    python -m bench.profile_clip --tiny                                   # seconds

Prints, per method, the operators by self time (CPU, or CUDA time on a GPU) and the bytes they
allocated, so an extra pass over the gradients (a cast, a copy) stands out next to the norm and
scale kernels every method needs.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from bench.clip_methods import build


def profile_methods(model: str, dtype: torch.dtype, device: torch.device, calls: int, top: int) -> dict:
    case = build(model, dtype, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out = {}
    for key, fn in case.methods.items():
        case.reset()
        fn()  # warm: layout cached, state on the device
        case.reset()
        with profile(activities=activities, profile_memory=True) as prof:
            for _ in range(calls):
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
        averages = sorted(prof.key_averages(), key=lambda e: getattr(e, sort_key), reverse=True)
        rows = []
        for e in averages[:top]:
            rows.append(
                {
                    "op": e.key,
                    "calls_per_step": e.count / calls,
                    "self_ms_per_step": getattr(e, sort_key) / 1e3 / calls,
                    "alloc_mib_per_step": max(
                        e.self_cpu_memory_usage, getattr(e, "self_device_memory_usage", 0)
                    )
                    / 2**20
                    / calls,
                }
            )
        out[key] = rows
    return {"model": model, "dtype": str(dtype).removeprefix("torch."), "device": str(device), "methods": out}


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    model = "tiny-a" if args.tiny else args.model
    result = profile_methods(
        model, getattr(torch, args.dtype), torch.device(args.device), args.calls, args.top
    )
    print(f"{result['model']} {result['dtype']} on {result['device']}, per clip step:")
    for key, rows in result["methods"].items():
        print(f"\n{key}")
        for r in rows:
            print(
                f"  {r['op']:<40} x{r['calls_per_step']:<6.0f} {r['self_ms_per_step']:>9.2f} ms"
                f" {r['alloc_mib_per_step']:>9.1f} MiB"
            )
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
