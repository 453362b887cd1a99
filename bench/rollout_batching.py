"""verl's CPU trainer step with the ``hf_cpu`` rollout decoding requests one at a time (before) and together
(after), against the in-process harness's step on the same batch: medians and ratios from one invocation.

    python -m bench.rollout_batching --out bench/results/rollout_batching_cpu.json   # the demo's settings
    python -m bench.rollout_batching --tiny                                           # smoke: test proxy, 3 steps

Three measurements on the proxy policy at the demo's settings (16 prompts x 8 samples, 56 response tokens,
lr 1e-4, clip=global; one torch thread for the actor and the harness, the rollout's as described below):

1. verl's trainer (``aggc_rl.train`` as ``make demo`` runs it) as it was before batching (:data:`BEFORE`: every
   request decoded alone on one thread, verl's 2 s replay-buffer poll) and as it is (a step's requests decoded
   together, joining between tokens, on every core; a 0.05 s poll):
   the medians of verl's own ``timing_s/gen`` and ``timing_s/step`` over the steps after the first (the first
   warms up; the last also validates and saves).
2. The in-process harness (:func:`aggc_rl.proxy.grpo.run`, the sweeps' loop): its median step and sampling time.
3. How far batching changes what is sampled: the same 128 requests (same seeds) decoded together and one at a
   time, compared token for token.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

#: The server before batching: every request decoded alone, on one thread (Ray's OMP_NUM_THREADS), and verl's
#: 2 s wait between the trainer's checks for finished rollouts.
BEFORE = (
    "actor_rollout_ref.rollout.max_num_seqs=1",
    "actor_rollout_ref.rollout.engine_kwargs.hf_cpu.num_threads=1",
)
BEFORE_ENV = {"AGGC_RL_REPLAY_POLL_S": "2.0"}


def trainer_timings(records: list[dict]) -> dict[str, float]:
    """Median ``timing_s/gen`` and ``timing_s/step`` over the training steps after the first."""
    steps = sorted((r for r in records if "timing_s/step" in r["data"]), key=lambda r: r["step"])[1:]
    if not steps:
        raise ValueError("the trainer logged fewer than two steps: nothing to time")
    gen = [r["data"]["timing_s/gen"] for r in steps]
    step = [r["data"]["timing_s/step"] for r in steps]
    return {"gen_s": statistics.median(gen), "step_s": statistics.median(step), "steps": len(steps)}


def harness_timings(model: Path, settings, steps: int) -> dict[str, float]:
    """The in-process harness's median step (sampling, scoring, update, weight sync) and sampling time."""
    import torch

    from aggc_rl.inprocess.arms import Arm
    from aggc_rl.proxy import grpo
    from aggc_rl.proxy.policy import heldout_puzzles

    torch.set_num_threads(1)
    size = grpo.GRPOSize(
        steps=steps,
        prompts=settings.prompts_per_step,
        samples=settings.samples_per_prompt,
        response_length=settings.response_length,
        eval_every=steps,
    )
    start = {"acc": 0.0, "reward": 0.0, "n": 0}  # no start evaluation: only the steps are timed
    rec = grpo.run(model, Arm("global"), settings.lr, settings.seed, size, heldout_puzzles(8), log=lambda *_: None,
                   start_eval=start)  # fmt: skip
    timed = rec["steps"][1:]
    return {
        "gen_s": statistics.median(s["sample_s"] for s in timed),
        "step_s": statistics.median(s["step_s"] for s in timed),
        "steps": len(timed),
    }


def agreement(model: Path, settings) -> dict[str, float]:
    """The demo's first batch of requests (same seeds) decoded together and one at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    from aggc_rl.proxy.policy import train_puzzles
    from aggc_rl.proxy.sampler import Sampler
    from verl_cpu.decoding import DecodeRequest, decode

    torch.set_num_threads(1)
    sampler = Sampler(model, compact=True)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    puzzles = train_puzzles("bench", settings.seed, 0, settings.prompts_per_step)
    prompts = [ids for ids in sampler.encode(puzzles) for _ in range(settings.samples_per_prompt)]
    requests = [
        DecodeRequest(tuple(p), settings.response_length, logprobs=True, seed=i)
        for i, p in enumerate(prompts)
    ]
    eos = {sampler.eos_id}
    t0 = time.perf_counter()
    together = decode(hf, requests, eos, sampler.pad_id)
    t_together = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [decode(hf, [r], eos, sampler.pad_id)[0] for r in requests]
    t_alone = time.perf_counter() - t0
    same = [a.token_ids == b.token_ids for a, b in zip(alone, together, strict=True)]
    tokens = sum(len(a.token_ids) for a in alone)
    equal_tokens = sum(
        next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x != y), len(a.token_ids))
        for a, b in zip(alone, together, strict=True)
    )  # fmt: skip
    dlogp = max(
        (abs(x - y) for a, b, s in zip(alone, together, same, strict=True) if s
         for x, y in zip(a.log_probs, b.log_probs, strict=True)),
        default=0.0,
    )  # fmt: skip
    return {
        "responses": len(requests),
        "identical_responses": sum(same),
        "tokens_before_first_difference": equal_tokens,
        "tokens": tokens,
        "max_abs_logprob_diff_identical": dlogp,
        "decode_together_s": t_together,
        "decode_alone_s": t_alone,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="trainer and harness steps per measurement (>= 3)")
    ap.add_argument("--tiny", action="store_true", help="the smoke version: the test proxy, 3 steps of 4 x 4")
    ap.add_argument(
        "--work", default=None, help="where the trainer runs write (default: a fresh temporary dir)"
    )
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.steps < 3:
        ap.error(
            f"--steps={args.steps} must be >= 3 (the first step is not timed; the medians need two more)"
        )
    os.environ.setdefault("VERL_PLATFORM", "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tempfile

    from aggc_rl.demo import DemoSettings, prepare, run_arm

    settings = DemoSettings.fast() if args.tiny else DemoSettings()
    settings = dataclasses.replace(settings, steps=3 if args.tiny else args.steps)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_rollout_")).resolve()
    if (work / "before").exists() or (work / "after").exists():
        ap.error(f"{work} holds earlier trainer runs (they would resume): remove them or pick another --work")
    t0 = time.time()
    model, data = prepare(work, settings)
    print(f"proxy {model}; {settings.steps} steps of {settings.prompts_per_step} x {settings.samples_per_prompt}",
          flush=True)  # fmt: skip
    figures: dict[str, dict] = {}
    print("\n== verl trainer, hf_cpu rollout, every request decoded alone (max_num_seqs=1) ==", flush=True)
    figures["before"] = trainer_timings(
        run_arm(model, data, work / "before", "global", settings, extra=BEFORE, env=BEFORE_ENV)
    )
    print("\n== verl trainer, hf_cpu rollout, a step's requests decoded together ==", flush=True)
    figures["after"] = trainer_timings(run_arm(model, data, work / "after", "global", settings))
    print("\n== in-process harness (aggc_rl.proxy.grpo) ==", flush=True)
    figures["harness"] = harness_timings(model, settings, settings.steps)
    print("\n== batched vs alone: the same requests and seeds ==", flush=True)
    agree = agreement(model, settings)

    b, a, h = figures["before"], figures["after"], figures["harness"]
    rows = [
        ("verl trainer, decoded alone (before)", b),
        ("verl trainer, decoded together (after)", a),
        ("in-process harness", h),
    ]
    lines = [
        "| | gen / sampling, median (s) | step, median (s) | gen / step |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {f['gen_s']:.2f} | {f['step_s']:.2f} | {f['gen_s'] / f['step_s']:.2f} |"
            for name, f in rows
        ),
        "",
        f"- after / before: gen {a['gen_s'] / b['gen_s']:.2f}x, step {a['step_s'] / b['step_s']:.2f}x",
        f"- trainer step (after) / harness step: {a['step_s'] / h['step_s']:.2f}x "
        f"(before: {b['step_s'] / h['step_s']:.2f}x)",
        f"- batched vs alone, {agree['responses']} sampled responses (same seeds): {agree['identical_responses']} "
        f"identical; {agree['tokens_before_first_difference']} of {agree['tokens']} tokens before a first "
        f"difference; max |Δ log-prob| on identical responses {agree['max_abs_logprob_diff_identical']:.1e}; "
        f"decoding {agree['decode_alone_s'] / agree['decode_together_s']:.1f}x faster together",
    ]
    print("\n" + "\n".join(lines))
    print(f"\nbench wall time {time.time() - t0:.0f}s; trainer runs under {work}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**figures, "agreement": agree, "settings": {
            "steps": settings.steps, "prompts": settings.prompts_per_step, "samples": settings.samples_per_prompt,
            "response_length": settings.response_length, "proxy": str(model)}}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
