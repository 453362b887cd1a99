"""``python -m aggc_rl.lr_sweep``: learning-rate sensitivity of each clipping rule on the proxy.

    python -m aggc_rl.lr_sweep --out outputs/lr-sweep            # the full GRPO sweep
    python -m aggc_rl.lr_sweep --quick --out outputs/lr-sweep-quick
    python -m aggc_rl.lr_sweep --sft --out outputs/lr-sweep-sft  # the LoRA SFT sweep

Arms x learning rates x seeds (:mod:`aggc_rl.lr_sweep.plans`) on the proxy policy (:mod:`aggc_rl.proxy`), each
run in process through the shared harness (:mod:`aggc_rl.inprocess`) and the ``aggc_fsdp2`` engine: on-policy
GRPO (:mod:`aggc_rl.proxy.grpo`; verl's Ray trainer costs ~10x more per step on two cores) or, with ``--sft``,
LoRA supervised fine-tuning of the proxy (:mod:`aggc_rl.proxy.sft`, the AGGC paper's headline path). One JSON
file per run under ``OUT/runs/``: a killed sweep started again with the same settings continues.
``OUT/report/lr_sweep.md`` (``--sft``: ``lr_sweep_sft.md``) and the ``.png`` are rewritten at the end
(definitions in :mod:`aggc_rl.lr_sweep.sensitivity`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aggc_rl.lr_sweep.plans import ARMS, FULL, FULL_SFT, QUICK, QUICK_SFT, SFT_ARMS, describe


def run_path(out: Path, arm: str, lr: float, seed: int) -> Path:
    return out / "runs" / f"{arm}__lr{lr:g}__s{seed}.json"


def parse_args(argv: Sequence[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/lr-sweep", help="runs/ and report/ go here")
    ap.add_argument(
        "--quick", action="store_true", help="a short version (arms none,global,aggc; 3 lrs; 1 seed)"
    )
    ap.add_argument(
        "--sft", action="store_true", help="the LoRA SFT sweep (arms none, global, aggc_lora, adagc)"
    )
    ap.add_argument(
        "--arms", default=None, help=f"comma list of {', '.join(ARMS)} (--sft: {', '.join(SFT_ARMS)})"
    )
    ap.add_argument("--lrs", default=None, help="comma list of learning rates")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1")
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps per run")
    ap.add_argument("--prompts", type=int, default=None, help="puzzles per step")
    ap.add_argument("--samples", type=int, default=None, help="responses per puzzle (the GRPO group)")
    ap.add_argument("--eval-every", type=int, default=None, help="held-out evaluation every N steps")
    ap.add_argument(
        "--heldout", type=int, default=None, help="held-out puzzles per evaluation (>= 1000 advised)"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1 is fastest on 2 busy cores)"
    )
    ap.add_argument(
        "--warm-start",
        type=int,
        default=None,
        help="the proxy's warm-start steps (default: its own; the last min(N, its decay) steps decay)",
    )
    ap.add_argument("--hidden", type=int, default=None, help="the proxy's width (default: its own)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel, one process each")
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/N": one worker of --jobs N
    args = ap.parse_args(argv)
    arms = SFT_ARMS if args.sft else ARMS
    plan = dict((QUICK_SFT if args.quick else FULL_SFT) if args.sft else (QUICK if args.quick else FULL))
    if args.arms:
        plan["arms"] = tuple(a for a in args.arms.split(",") if a)
    bad = [a for a in plan["arms"] if a not in arms]
    if bad:
        ap.error(f"unknown arm(s) {bad}; allowed{' with --sft' if args.sft else ''}: {', '.join(arms)}")
    if args.lrs:
        try:
            plan["lrs"] = tuple(float(x) for x in args.lrs.split(",") if x)
        except ValueError:
            ap.error(f"--lrs={args.lrs!r}: expected comma-separated numbers")
    if any(lr <= 0 for lr in plan["lrs"]):
        ap.error(f"--lrs={plan['lrs']}: every learning rate must be > 0")
    for key in ("seeds", "steps", "prompts", "samples", "eval_every", "heldout"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                ap.error(f"--{key.replace('_', '-')}={value} must be >= 1")
            plan[key] = value
    from aggc_rl.proxy.policy import PROXY

    proxy = PROXY
    if args.warm_start is not None or args.hidden is not None:
        width = args.hidden if args.hidden is not None else PROXY.hidden_size
        if width < 4 or width % 4:
            ap.error(f"--hidden={width} must be a positive multiple of 4 (attention heads)")
        if args.warm_start is not None and args.warm_start < 0:
            ap.error(f"--warm-start={args.warm_start} must be >= 0")
        proxy = dataclasses.replace(
            PROXY,
            hidden_size=width,
            intermediate_size=2 * width,
            **(
                {}
                if args.warm_start is None
                else {
                    "warm_start_steps": args.warm_start,
                    "decay_steps": min(args.warm_start, PROXY.decay_steps),
                }
            ),
        )
    plan["proxy"] = proxy
    if args.jobs < 1:
        ap.error(f"--jobs={args.jobs} must be >= 1")
    plan["mode"] = "sft" if args.sft else "grpo"
    if args.sft:
        from aggc_rl.proxy.sft import SFTSize

        size = SFTSize(steps=plan["steps"], batch=plan["prompts"], eval_every=plan["eval_every"])
    else:
        from aggc_rl.proxy.grpo import GRPOSize

        size = GRPOSize(
            steps=plan["steps"],
            prompts=plan["prompts"],
            samples=plan["samples"],
            eval_every=plan["eval_every"],
        )
    try:
        size.check()
    except ValueError as err:
        ap.error(str(err))
    return args, plan, size


def main(argv: Sequence[str] | None = None) -> int:
    args, plan, size = parse_args(argv)
    os.environ.setdefault("VERL_PLATFORM", "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(max(1, args.threads))
    from aggc_rl.inprocess.logfile import output_to
    from aggc_rl.proxy.policy import heldout_puzzles, proxy_policy

    out = Path(args.out).resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    worker = args.shard is not None
    t0 = time.time()
    model = proxy_policy(plan["proxy"], log=(lambda *_: None) if worker else print)
    start_path = out / f"start_eval_{plan['heldout']}.json"
    if not worker and not start_path.exists():  # the same for every run: measured once
        from aggc_rl.proxy.policy import heldout_eval

        start = {**heldout_eval(model, heldout_puzzles(plan["heldout"])), "model": str(model)}
        start_path.write_text(json.dumps(start))
    runs = [(seed, arm, lr) for seed in range(plan["seeds"]) for lr in plan["lrs"] for arm in plan["arms"]]
    if not worker:
        print(
            f"lr-sweep: {len(plan['arms'])} arms x {len(plan['lrs'])} lrs x {plan['seeds']} seeds = {len(runs)} runs "
            f"of {size.describe()}, held-out "
            f"{plan['heldout']} puzzles; proxy {model}; logs in {out / 'runs'}/*.log",
            flush=True,
        )
        if args.jobs > 1:
            argv = list(argv if argv is not None else sys.argv[1:])
            base = [sys.executable, "-m", "aggc_rl.lr_sweep", *argv]
            procs = [subprocess.Popen([*base, "--shard", f"{i}/{args.jobs}"]) for i in range(args.jobs)]
            codes = [p.wait() for p in procs]
            if any(codes):
                raise SystemExit(
                    f"a sweep worker failed (exit codes {codes}); run the same command again to continue"
                )
            return _report(argv, plan, size, out, model, t0)
    from aggc_rl.proxy import grpo, sft

    one_run = sft.run if plan["mode"] == "sft" else grpo.run
    arms = SFT_ARMS if plan["mode"] == "sft" else ARMS
    heldout = heldout_puzzles(plan["heldout"])
    start = json.loads(start_path.read_text())
    if start.pop("model") != str(model):
        raise SystemExit(f"{start_path} was measured on another model: remove it or pick another --out")
    shard, shards = (int(x) for x in args.shard.split("/")) if worker else (0, 1)
    settings = {"size": dataclasses.asdict(size), "heldout": plan["heldout"], "model": str(model)}
    times = []
    for i, (seed, arm, lr) in enumerate(runs, 1):
        if i % shards != shard:
            continue
        path = run_path(out, arm, lr, seed)
        if path.exists():
            rec = json.loads(path.read_text())
            if {k: rec.get(k) for k in settings} != settings:
                raise SystemExit(
                    f"{path} was written with other settings: remove {out / 'runs'} or pick another --out"
                )
            print(f"[{i}/{len(runs)}] {arm} lr {lr:g} seed {seed}: done earlier", flush=True)
            continue
        t1 = time.time()
        with output_to(path.with_suffix(".log")):
            rec = one_run(
                model,
                arms[arm],
                lr,
                seed,
                size,
                heldout,
                log=lambda *a: print(*a, flush=True),
                start_eval=start,
            )
        rec["arm"] = arm
        rec.update(settings)
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(rec))
        tmp.rename(path)
        times.append(time.time() - t1)
        eta = (len(runs) - i) / shards * sum(times) / len(times)
        key = "loss" if plan["mode"] == "sft" else "reward"
        print(
            f"[{i}/{len(runs)}] {arm} lr {lr:g} seed {seed}: {times[-1]:.0f}s  held-out acc "
            f"{rec['start_acc']:.3f} -> {rec['final_acc']:.3f}  {key} {rec['steps'][0][key]:+.3f} -> "
            f"{rec['steps'][-1][key]:+.3f}  collapsed {int(rec['collapsed'])}  (eta {eta / 60:.1f} min)",
            flush=True,
        )
    if worker:
        return 0
    return _report(argv, plan, size, out, model, t0)


def _report(argv, plan, size, out: Path, model: Path, t0: float) -> int:
    from aggc_rl.lr_sweep import sensitivity

    records = []
    for seed in range(plan["seeds"]):
        for lr in plan["lrs"]:
            for arm in plan["arms"]:
                records.append(json.loads(run_path(out, arm, lr, seed).read_text()))
    wall = time.time() - t0
    sft = plan["mode"] == "sft"
    arms = SFT_ARMS if sft else ARMS
    count = f"{len(records)} ({len(plan['arms'])} arms x {len(plan['lrs'])} lrs x {plan['seeds']} seeds), "
    meta = {
        "title": f"{'LoRA SFT' if sft else 'GRPO'} learning-rate sweep on the proxy",
        "command": "python -m aggc_rl.lr_sweep " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "runs": count + size.describe() + " each",
        "update path": "in process: the shared harness (aggc_rl.inprocess), the aggc_fsdp2 engine, "
        + (
            "LoRA adapters, answer-token NLL (verl's sft_loss)"
            if sft
            else "verl's GRPO advantage and PPO loss"
        ),
        "held-out": f"{plan['heldout']} puzzles, greedy, evaluated every {size.eval_every} steps",
        "collapsed": "non-finite loss/grad norm, or final accuracy > 5 points below the start",
        "arms": "; ".join(f"{a} = {describe(arms[a])}" for a in plan["arms"]),
        "wall": f"{wall / 60:.1f} min this invocation",
        "mean run time": f"{sum(r['wall_s'] for r in records) / len(records):.0f}s",
        "model": str(model),
    }
    name = "lr_sweep_sft" if sft else "lr_sweep"
    path = sensitivity.write_report(records, plan["arms"], plan["lrs"], out / "report", meta, name)
    print("\n" + path.read_text())
    print(f"report: {path}; sweep wall time {wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
