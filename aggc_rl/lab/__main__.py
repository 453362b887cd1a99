"""``python -m aggc_rl.lab``: the stability lab (v2). Faults on a warm Adam, measured against a clean twin.

    python -m aggc_rl.lab --out outputs/lab                # 10 seeds x 7 arms x (clean + 7 faults), replayed
    python -m aggc_rl.lab --quick --out outputs/lab-quick  # 2 seeds x 3 arms x 3 faults, short warm-up
    python -m aggc_rl.lab --on-policy --out outputs/lab    # the behavioural mode: twins resample, reward/accuracy

Per seed one warm state (docs/lab.md): every arm and fault branches from it. One JSON record per (seed, arm)
under ``OUT/twins/`` (``OUT/onpolicy/``); a killed lab started again with the same settings continues. The
report goes to ``OUT/report/`` (``OUT/report-onpolicy/``): report.md and the PNGs of Adam's moments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def parse_args(argv: Sequence[str] | None):
    from aggc_rl.lab import twins

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/lab", help="twins/, onpolicy/ and report/ go here")
    ap.add_argument("--quick", action="store_true", help=twins.QUICK.describe())
    ap.add_argument("--on-policy", action="store_true", help=twins.ON_POLICY.describe())
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the plan's)")
    ap.add_argument("--arms", default=None, help=f"comma list of {', '.join(twins.ARMS)}")
    ap.add_argument("--faults", default=None, help=f"comma list of {', '.join(twins.FAULTS)}")
    ap.add_argument("--test-proxy", action="store_true", help=argparse.SUPPRESS)  # tests: the small proxy
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument(
        "--jobs", type=int, default=2, help="worker processes, seeds split between them (default 2)"
    )
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/N": one worker of --jobs N
    args = ap.parse_args(argv)
    plan = twins.ON_POLICY if args.on_policy else twins.QUICK if args.quick else twins.FULL
    if args.quick and args.on_policy:
        plan = dataclasses.replace(twins.QUICK, on_policy=True, heldout=200)
    change = {}
    if args.seeds is not None:
        change["seeds"] = args.seeds
    if args.arms:
        change["arms"] = tuple(args.arms.split(","))
    if args.faults:
        change["faults"] = tuple(args.faults.split(","))
    plan = dataclasses.replace(plan, **change)
    try:
        plan.check()
    except ValueError as err:
        ap.error(str(err))
    if args.jobs < 1:
        ap.error(f"--jobs={args.jobs} must be >= 1")
    return args, plan


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, plan = parse_args(argv)
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
    if args.device == "cuda":
        print(
            "error: --device cuda: lab v2 runs on the CPU proxy only; allowed here: --device cpu",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    from aggc_rl.lab import twins
    from aggc_rl.proxy.policy import PROXY, TEST_PROXY, proxy_policy

    out = Path(args.out).resolve()
    worker = args.shard is not None
    t0 = time.time()
    spec = TEST_PROXY if args.test_proxy else PROXY
    model = proxy_policy(spec, eval_count=0, log=(lambda *_: None) if worker else print)
    if worker:
        index, shards = (int(x) for x in args.shard.split("/"))
        from aggc_rl.inprocess.logfile import output_to

        log_path = out / "logs" / f"shard{index}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        console = _console(index)  # before the redirection: progress lines still reach the terminal
        with output_to(log_path):  # verl prints a lot per engine
            twins.run(model, out, plan, (index, shards), log=console)
        return 0
    print(f"lab: {plan.describe()}; proxy {spec.key()}; verl's output in {out / 'logs'}", flush=True)
    base = [sys.executable, "-m", "aggc_rl.lab", *argv]
    procs = [subprocess.Popen([*base, "--shard", f"{i}/{args.jobs}"]) for i in range(args.jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"error: a lab worker failed (exit codes {codes}; logs in {out / 'logs'}); run the same command "
              "again to continue", file=sys.stderr)  # fmt: skip
        return 1
    return report(out, plan, model, argv, time.time() - t0)


def _console(index: int):
    """Progress lines to the terminal (fd 2 saved before verl's output is redirected)."""
    stream = os.fdopen(os.dup(2), "w", buffering=1)

    def log(*parts) -> None:
        print(f"[worker {index}]", *parts, file=stream)

    return log


def report(out: Path, plan, model: Path, argv: Sequence[str], wall: float) -> int:
    """Write the report from this plan's records under OUT, and print its headline."""
    from aggc_rl.lab import twins, twins_report

    records = []
    for seed in range(plan.seeds):
        for arm in plan.arms:
            rec = twins.load(out, plan, model, seed, arm)
            if rec is None:
                raise SystemExit(f"error: the record of seed {seed} arm {arm} is missing under {out}")
            records.append(rec)
    meta = {
        "command": "python -m aggc_rl.lab " + " ".join(shlex.quote(a) for a in argv),
        "wall": f"{wall / 60:.1f} min",
        "plan": plan.describe(),
        "model": f"the proxy policy ({model})",
    }
    path = twins_report.write(records, out / ("report-onpolicy" if plan.on_policy else "report"), meta)
    text = path.read_text()
    if "## Headline" in text:
        print("\n== stability lab: headline ==" + text.split("## Headline", 1)[1].split("\n## ", 1)[0])
    print(f"report: {path}; lab wall time {wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
