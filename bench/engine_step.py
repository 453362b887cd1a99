"""Per-step overhead of each clip method in verl's FSDP2 engine on CPU (world size 1, gloo).

Builds one ``aggc_fsdp2`` engine per method from configs/aggc_ppo_trainer.yaml (the trainer's path),
then times full PPO training steps (forward, backward, clip, optimizer, LR step) interleaved across
methods, and prints the median step time of each and its ratio to ``clip=global``.

    python -m bench.engine_step --out bench/results/engine_step_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

MODEL = dict(
    hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    os.environ["VERL_PLATFORM"] = "cpu"
    import torch.distributed as dist

    from aggc_rl.clipping import RULE_NAMES
    from verl_cpu import harness

    harness.use_cpu_platform()
    tmp = tempfile.mkdtemp()
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=0, world_size=1)
    model_path = harness.make_tiny_model_dir(f"{tmp}/model", **MODEL)

    engines = {}
    for method in RULE_NAMES:
        cfg = harness.clip_ppo_config(model_path, args.runs + 2, f"actor_rollout_ref.actor.clip={method}")
        setup = harness.engine_setup(cfg)
        batch = harness.make_ppo_batch(
            setup, cfg, harness.make_padded_batch(96, batch_size=4, prompt_len=16, response_len=16)
        )
        engines[method] = (harness.build_engine(setup), batch, harness.ppo_loss_fn(setup))

    times: dict[str, list[float]] = {m: [] for m in engines}
    for run in range(args.runs + 2):
        for method, (engine, batch, loss_fn) in engines.items():
            t0 = time.perf_counter()
            harness.train_step(engine, batch, loss_fn)
            if run >= 2:
                times[method].append(time.perf_counter() - t0)

    base = statistics.median(times["global"])
    params = sum(p.numel() for p in engines["global"][0].module.parameters())
    rows = {
        m: {"median_ms": 1e3 * statistics.median(t), "ratio_to_global": statistics.median(t) / base}
        for m, t in times.items()
    }
    print(
        f"\nverl FSDP2 engine on CPU, world 1, {params / 1e6:.1f}M params, PPO step on 4 x 32 tokens, {args.runs} runs"
    )
    print(f"{'clip':<16} {'median ms':>10} {'/ global':>9}")
    for m, r in rows.items():
        print(f"{m:<16} {r['median_ms']:>10.1f} {r['ratio_to_global']:>9.3f}")
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"params": params, "runs": args.runs, "methods": rows}, f, indent=2)
        print(f"wrote {args.out}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
