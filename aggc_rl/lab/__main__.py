"""``python -m aggc_rl.lab``: the stability lab. Arms x faults x seeds through the project's update path.

    python -m aggc_rl.lab --out outputs/lab            # the default run (6 arms x 4 faults x 3 seeds)
    python -m aggc_rl.lab --quick --out outputs/lab-quick
    python -m aggc_rl.lab --model /models/Qwen2.5-0.5B-Instruct --device cuda --prompts 16 --samples 8 \\
        --response-length 512 --lr 1e-6 --steps 30 --fault-step 10      # a real model (GPU; not measured here)

One JSON file per run under ``OUT/runs/``; a killed lab started again with the same settings continues
from the runs already done. The report (``OUT/report/report.md`` and PNGs) is rewritten at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from aggc_rl.lab.arms import Arm, default_arms, parse_arm
from aggc_rl.lab.faults import FAULT_KINDS, Fault
from aggc_rl.lab.size import LabSize

DEFAULT_FAULTS = ("loss_spike", "group_spike", "reward_noise")
QUICK = dict(steps=7, fault_step=3, warm_start_steps=100)
QUICK_ARMS = ("global", "aggc")
QUICK_FAULTS = ("loss_spike", "group_spike")


def run_path(out: Path, arm: Arm, fault: str, seed: int) -> Path:
    safe = arm.name.replace("+", "__").replace("=", "-").replace(",", "_")
    return out / "runs" / f"{safe}__{fault}__s{seed}.json"


def parse_args(argv: Sequence[str] | None):
    d = LabSize()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/lab", help="runs/ and report/ go here")
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"{','.join(QUICK_ARMS)} x {','.join(QUICK_FAULTS)}, 2 seeds, 8 steps",
    )
    ap.add_argument(
        "--arms", default=None, help="comma list: METHOD or METHOD+guard.KNOB=V (default: all available)"
    )
    ap.add_argument(
        "--faults", default=None, help=f"comma list of {', '.join(FAULT_KINDS[1:])} ('none' is always run)"
    )
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; --quick 2)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--fault-step", type=int, default=None, help="1-based step the fault hits")
    ap.add_argument("--scale", type=float, default=100.0, help="spike factor of loss_spike / group_spike")
    ap.add_argument("--group", default="v_proj", help="group_spike's functional group")
    ap.add_argument("--prompts", type=int, default=d.prompts)
    ap.add_argument("--samples", type=int, default=d.samples)
    ap.add_argument("--response-length", type=int, default=d.response_length)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--warm-start", type=int, default=None, help="supervised steps of the tiny policy")
    ap.add_argument(
        "--model", default=None, help="a Hugging Face model directory (default: the tiny policy, built here)"
    )
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core machine)"
    )
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel, one process each (default 2)")
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/N": one worker of --jobs N
    args = ap.parse_args(argv)
    base = dict(QUICK) if args.quick else {"warm_start_steps": d.warm_start_steps}
    if args.steps is not None:
        base["steps"] = args.steps
    if args.fault_step is not None:
        base["fault_step"] = args.fault_step - 1
    if args.warm_start is not None:
        base["warm_start_steps"] = args.warm_start
    size = LabSize(
        prompts=args.prompts,
        samples=args.samples,
        response_length=args.response_length,
        lr=args.lr,
        compact=args.model is None,
        **base,
    )
    try:
        size.check()
    except ValueError as err:
        ap.error(str(err))
    try:
        arms = [parse_arm(a) for a in args.arms.split(",")] if args.arms else None
    except ValueError as err:
        ap.error(str(err))
    if arms is None:
        arms = [parse_arm(a) for a in QUICK_ARMS] if args.quick else default_arms()
    faults = args.faults.split(",") if args.faults else list(QUICK_FAULTS if args.quick else DEFAULT_FAULTS)
    bad = [f for f in faults if f not in FAULT_KINDS]
    if bad:
        ap.error(f"unknown fault(s) {bad}; allowed: {', '.join(FAULT_KINDS)}")
    faults = ["none", *[f for f in faults if f != "none"]]
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 3)
    return args, size, arms, faults, seeds


def main(argv: Sequence[str] | None = None) -> int:
    args, size, arms, faults, seeds = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("VERL_PLATFORM", "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda: no CUDA device is visible to this Python (torch.cuda.is_available() is "
            f"False; torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r}); "
            "allowed here: --device cpu",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(max(1, args.threads))
    from aggc_rl.lab import loop
    from aggc_rl.lab.policy import build_tiny_policy

    out = Path(args.out).resolve()
    t0 = time.time()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    worker = args.shard is not None
    if args.model:
        model = Path(args.model)
    else:
        if not worker:
            print(
                f"lab: tiny policy ({size.warm_start_steps} warm-start steps) in {out / 'model'}", flush=True
            )
        model = build_tiny_policy(out / "model", size.warm_start_steps, size.people)
    plan = [(seed, arm, f) for seed in range(seeds) for arm in arms for f in faults]
    if not worker:
        print(
            f"lab: {len(arms)} arms x {len(faults)} faults x {seeds} seeds = {len(plan)} runs of {size.steps} "
            f"steps (fault at step {size.fault_step + 1}); arms: {', '.join(a.name for a in arms)}; "
            f"verl's own output goes to {out / 'runs'}/*.log",
            flush=True,
        )
    if not worker and args.jobs > 1:
        return _parallel(
            argv if argv is not None else sys.argv[1:], args.jobs, plan, arms, size, model, out, t0
        )
    shard, shards = (int(x) for x in args.shard.split("/")) if worker else (0, 1)
    size_dict = dataclasses.asdict(size)
    records, done_now, run_times = [], 0, []
    for i, (seed, arm, kind) in enumerate(plan, 1):
        if i % shards != shard:
            continue
        path = run_path(out, arm, kind, seed)
        fault = Fault(kind, size.fault_step, scale=args.scale, group=args.group)
        if path.exists():
            rec = json.loads(path.read_text())
            if (
                rec["size"] != size_dict
                or rec["fault"] != dataclasses.asdict(fault)
                or rec.get("model") != str(model)
            ):
                raise SystemExit(
                    f"{path} was written with other settings: remove {out / 'runs'} or pick another --out"
                )
            records.append(rec)
            print(f"[{i}/{len(plan)}] {arm.name} {kind} seed {seed}: done earlier", flush=True)
            continue
        t1 = time.time()
        with output_to(path.with_suffix(".log")):  # verl and transformers print a lot per engine
            rec = loop.run(model, arm, fault, seed, size, device=args.device, log=lambda *_: None)
        rec["model"] = str(model)
        rec["wall_s"] = time.time() - t1
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(rec))
        tmp.rename(path)
        records.append(rec)
        done_now += 1
        run_times.append(rec["wall_s"])
        eta = (len(plan) - i) / shards * sum(run_times) / len(run_times)
        k = size.fault_step
        print(
            f"[{i}/{len(plan)}] {arm.name} {kind} seed {seed}: {rec['wall_s']:.0f}s  reward "
            f"{rec['steps'][0]['reward']:+.2f} -> {rec['steps'][-1]['reward']:+.2f}  fault-step grad_norm "
            f"{rec['steps'][k]['grad_norm']:.3g}  skipped {sum(s['skipped'] for s in rec['steps'])}  "
            f"(eta {eta / 60:.1f} min)",
            flush=True,
        )
    if args.shard is not None:
        return 0
    return _report(argv, records, arms, size, model, out, t0, args.model, done_now)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so verl's prints too) to ``path`` for a while.

    An exception still reaches the caller, and its traceback is printed after the streams are back.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with path.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _parallel(argv, jobs, plan, arms, size, model, out, t0) -> int:
    """Run the plan in ``jobs`` worker processes (each its own process group), then write the report."""
    import subprocess

    base = [sys.executable, "-m", "aggc_rl.lab", *argv]  # the tiny policy is built already: workers reuse it
    procs = [subprocess.Popen([*base, "--shard", f"{i}/{jobs}"]) for i in range(jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a lab worker failed (exit codes {codes}); run the same command again to continue")
    records = []
    for seed, arm, kind in plan:
        records.append(json.loads(run_path(out, arm, kind, seed).read_text()))
    user_model = next((a for a in argv if a == "--model" or a.startswith("--model=")), None)
    return _report(argv, records, arms, size, model, out, t0, user_model, len(plan))


def _report(argv, records, arms, size, model, out, t0, model_arg, done_now) -> int:
    from aggc_rl.lab import report

    wall = time.time() - t0
    meta = {
        "command": "python -m aggc_rl.lab "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "wall": f"{wall / 60:.1f} min ({done_now} runs this time)",
        "model": "tiny Qwen2 (aggc_rl.tiny), warm-started here" if not model_arg else str(model),
        "arm_desc": {a.name: a.describe(size) for a in arms},
    }
    path = report.write(records, out / "report", meta)
    text = path.read_text()
    head = text.split("## Headline", 1)[1].split("\n## ", 1)[0]
    print("\n== stability lab: headline ==" + head)
    print(f"report: {path} (plots: {out / 'report'}/*.png); lab wall time {wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
