"""``python -m aggc_rl.demo``: verl's real GRPO trainer on a CPU, global-norm vs AGGC, then a stability comparison.

What runs is the whole pipeline, unchanged from a GPU cluster except for the CPU platform and rollout:
Ray, verl's v1 trainer and agent loop, the ``hf_cpu`` rollout, the Knights-and-Knaves reward, GRPO
advantages, the actor update with our clipping, checkpoints. The policy is the proxy
(:mod:`aggc_rl.proxy.policy`, docs/proxy.md): a 0.4M-parameter Qwen2 warm-started to partial skill on
compact 2-person puzzles, built once and cached. Each arm trains from it with the same seed and data; its
last checkpoint is merged (verl's model merger) and scored greedily on 1,000 held-out puzzles that neither
the warm start nor the training data can contain. The demo ends with a small learning-rate comparison on
the proxy (a stable and a collapsing lr, global vs aggc, 2 seeds; :mod:`aggc_rl.lr_sweep`).
Everything lands under ``--out``:

    data/             proxy parquet (compact prompts)          <arm>/metrics.jsonl  verl's file logger
    <arm>/ckpt/       verl checkpoints                         <arm>/merged/  the last checkpoint as HF
    report/           stability plots (PNG) and report.md      stability/  the lr comparison
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aggc_rl.rewards
from aggc_rl import metrics as names
from aggc_rl.proxy.policy import PROXY, TEST_PROXY, ProxySpec
from verl_cpu.recipe import CPU_ACTOR_OVERRIDES
from verl_cpu.vllm_setup import VLLM_CPU_OVERRIDES

ARMS = ("global", "aggc")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo; ``fast()`` is the smoke version."""

    steps: int = 12
    prompts_per_step: int = 16
    samples_per_prompt: int = 8
    response_length: int = 56
    lr: float = 1e-4
    seed: int = 0
    proxy: ProxySpec = field(default=PROXY)
    heldout: int = 1000  # held-out puzzles scored at the start and the end of each arm
    # The closing comparison (aggc_rl.lr_sweep): a stable and a collapsing lr, global vs aggc, 2 seeds.
    stability_lrs: tuple[float, ...] = (1e-4, 3e-3)
    stability_seeds: int = 2
    stability_steps: int = 16

    @classmethod
    def fast(cls) -> DemoSettings:
        return cls(steps=3, prompts_per_step=4, samples_per_prompt=4, proxy=TEST_PROXY, heldout=100)


#: The demo's rollouts: the project's ``hf_cpu``, or verl's own vLLM server (needs ``make venv-vllm``).
ROLLOUTS = ("hf_cpu", "vllm")


def trainer_overrides(
    model: Path,
    data: Path,
    run_dir: Path,
    clip: str,
    settings: DemoSettings,
    steps: int | None = None,
    rollout: str = "hf_cpu",
) -> list[str]:
    """Hydra overrides of ``python -m aggc_rl.train`` for verl's trainer on a 2-core CPU."""
    if rollout not in ROLLOUTS:
        raise ValueError(f"rollout={rollout!r}; allowed: {', '.join(ROLLOUTS)}")
    reward_file = Path(aggc_rl.rewards.__file__).resolve()
    batch = settings.prompts_per_step
    return [
        f"data.train_files={data / 'train.parquet'}",
        f"data.val_files={data / 'test.parquet'}",
        f"data.train_batch_size={batch}",
        "data.max_prompt_length=768",
        f"data.max_response_length={settings.response_length}",
        "data.filter_overlong_prompts=false",
        f"data.seed={settings.seed}",
        f"actor_rollout_ref.model.path={model}",
        # CPU: no flash-attention, no compile, no activation checkpointing, fp32 (the CPU recipe), and no
        # padding-free kernels.
        *CPU_ACTOR_OVERRIDES,
        "actor_rollout_ref.model.use_remove_padding=false",
        f"actor_rollout_ref.actor.clip={clip}",
        f"actor_rollout_ref.actor.optim.lr={settings.lr}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={batch * settings.samples_per_prompt}",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.actor.data_loader_seed={settings.seed}",
        "actor_rollout_ref.rollout.name=hf_cpu",
        f"actor_rollout_ref.rollout.n={settings.samples_per_prompt}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch * settings.samples_per_prompt}",
        "actor_rollout_ref.rollout.free_cache_engine=false",
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=false",
        f"reward.custom_reward_function.path={reward_file}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "trainer.logger=[console,file]",
        # Greedy validation on the held-out puzzles before training and after the last step.
        "trainer.val_before_train=true",
        f"trainer.test_freq={steps or settings.steps}",
        f"trainer.total_training_steps={steps or settings.steps}",
        f"trainer.save_freq={steps or settings.steps}",
        f"trainer.default_local_dir={run_dir / 'ckpt'}",
        f"hydra.run.dir={run_dir / 'hydra'}",
        "trainer.project_name=aggc_rl_demo",
        f"trainer.experiment_name={clip}",
        # One agent-loop, reward and data-loader worker each: 8 of each (verl's defaults) only cost start-up on 2 cores.
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        "data.dataloader_num_workers=0",
        # TransferQueue and Ray sized for 2 cores; Ray's GPUs are the CPU platform's stand-ins.
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "+ray_kwargs.ray_init.num_cpus=8",
        "+ray_kwargs.ray_init.num_gpus=1",
        *_rollout_overrides(rollout),
    ]


def _rollout_overrides(rollout: str) -> list[str]:
    """The ``hf_cpu`` rollout's threads, or overrides that replace it (Hydra: the last value of a key wins)."""
    if rollout == "hf_cpu":
        # verl's sync trainer leaves the actor idle while the rollout decodes: let it use every core.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return [f"+actor_rollout_ref.rollout.engine_kwargs.hf_cpu.num_threads={cores}"]
    return list(VLLM_CPU_OVERRIDES)


def trainer_env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        VERL_PLATFORM="cpu",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        VERL_FILE_LOGGER_PATH=str(run_dir / "metrics.jsonl"),
        RAY_DEDUP_LOGS="1",
        PYTHONWARNINGS="ignore::UserWarning",
    )
    return env


def read_metrics(path: Path) -> list[dict]:
    """verl's file-logger records; a last line still being written (no newline yet) is left for later."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # everything before the last newline is complete
    return [json.loads(line) for line in lines if line.strip()]


def run_arm(
    model: Path,
    data: Path,
    run_dir: Path,
    clip: str,
    settings: DemoSettings,
    extra: Sequence[str] = (),
    rollout: str = "hf_cpu",
    env: dict[str, str] | None = None,
) -> list[dict]:
    """Train one arm in a child process, printing one line per step; returns its metric records. ``env``: more
    environment variables for the trainer."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    cmd = [
        sys.executable,
        "-m",
        "aggc_rl.train",
        *trainer_overrides(model, data, run_dir, clip, settings, rollout=rollout),
        *extra,
    ]
    metrics_path = run_dir / "metrics.jsonl"
    seen = len(read_metrics(metrics_path))
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**trainer_env(run_dir), **(env or {})}
        )
        while proc.poll() is None:
            time.sleep(1.0)
            records = read_metrics(metrics_path)
            for rec in records[seen:]:
                m = rec["data"]
                if names.SCORE_MEAN in m:
                    print(
                        f"  [{clip:>6}] step {rec['step']:>3}/{settings.steps}  reward {m[names.SCORE_MEAN]:+.3f}"
                        f"  grad_norm {m.get(names.GRAD_NORM.logged(), float('nan')):.3f}"
                        f"  scaled_down {m.get(names.FRAC_SCALED_DOWN.logged(), float('nan')):.2f}"
                        f"  ({m.get('timing_s/step', float('nan')):.1f}s/step, {time.time() - t0:.0f}s)",
                        flush=True,
                    )
                for key, value in m.items():  # greedy validation, before training and after the last step
                    if key.startswith(names.VAL_PREFIX) and ("/acc/" in key or "/score/" in key):
                        print(
                            f"  [{clip:>6}] validation at step {rec['step']}: {key} = {value:+.3f}",
                            flush=True,
                        )
            seen = len(records)
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-40:]
        raise RuntimeError(
            f"the {clip} arm failed (exit {proc.returncode}); last lines of {log_path}:\n" + "\n".join(tail)
        )
    return read_metrics(metrics_path)


def reward_trend(records: Sequence[dict], window: int = 3) -> tuple[float, float]:
    """Mean reward over the first and the last ``window`` steps."""
    train = [r for r in records if names.SCORE_MEAN in r["data"]]
    rewards = [r["data"][names.SCORE_MEAN] for r in sorted(train, key=lambda r: r["step"])]
    if not rewards:
        raise ValueError("no reward was logged")
    w = max(1, min(window, len(rewards) // 2))
    return sum(rewards[:w]) / w, sum(rewards[-w:]) / w


def prepare(out: Path, settings: DemoSettings) -> tuple[Path, Path]:
    """The cached proxy policy and the demo's parquet (enough training puzzles for every step)."""
    from aggc_rl.proxy.policy import proxy_policy, write_parquet

    model = proxy_policy(settings.proxy, eval_count=settings.heldout)
    data = out / "data"
    if not (data / "train.parquet").exists():
        write_parquet(data, settings.steps * settings.prompts_per_step, 32, seed=settings.seed)
    return model, data


def merge_last_checkpoint(run_dir: Path, steps: int) -> Path:
    """verl's model merger on the arm's last checkpoint -> ``<arm>/merged`` (a Hugging Face directory)."""
    merged = run_dir / "merged"
    cmd = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
           "--local_dir", str(run_dir / "ckpt" / f"global_step_{steps}" / "actor"), "--target_dir", str(merged)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=trainer_env(run_dir))
    if proc.returncode != 0:
        raise RuntimeError(
            f"merging {run_dir}'s last checkpoint failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/demo", help="where everything is written")
    ap.add_argument("--fast", action="store_true", help="a 3-step smoke run (about 3 minutes)")
    ap.add_argument(
        "--arms", default=",".join(ARMS), help="comma-separated clip methods (default global,aggc)"
    )
    ap.add_argument(
        "--rollout",
        choices=ROLLOUTS,
        default="hf_cpu",
        help="hf_cpu (default) or vllm: verl's vLLM server on the CPU (make venv-vllm; docs/vllm-cpu.md)",
    )
    args = ap.parse_args(argv)
    settings = DemoSettings.fast() if args.fast else DemoSettings()
    arms = [a for a in args.arms.split(",") if a]
    out = Path(args.out).resolve()
    for arm in arms:
        if (out / arm).exists():
            raise SystemExit(
                f"{out / arm} exists from an earlier demo (the trainer would resume it): remove it or pick --out"
            )

    t0 = time.time()
    model, data = prepare(out, settings)
    from aggc_rl.proxy.policy import heldout_eval, heldout_puzzles

    heldout = heldout_puzzles(settings.heldout)
    start = heldout_eval(model, heldout)
    print(f"proxy policy {model.name}: held-out greedy accuracy {start['acc']:.3f} on {start['n']} puzzles "
          f"(always 'knight, knight': {sum(all(p.solution) for p in heldout) / len(heldout):.3f})", flush=True)  # fmt: skip
    results, accuracy = {}, {}
    for arm in arms:
        print(f"\n== arm clip={arm}: {settings.steps} GRPO steps, {settings.prompts_per_step} prompts x "
              f"{settings.samples_per_prompt} samples, lr {settings.lr:g} ==", flush=True)  # fmt: skip
        results[arm] = run_arm(model, data, out / arm, arm, settings, rollout=args.rollout)
        end = heldout_eval(merge_last_checkpoint(out / arm, settings.steps), heldout)
        accuracy[arm] = (start, end)
        print(f"  [{arm:>6}] held-out greedy accuracy {start['acc']:.3f} -> {end['acc']:.3f} "
              f"({end['n']} puzzles, {time.time() - t0:.0f}s)", flush=True)  # fmt: skip

    print("\n== stability report ==", flush=True)
    subprocess.run(
        [sys.executable, "-m", "aggc_rl.report", *(str(out / a) for a in arms), "--labels", ",".join(arms),
         "--out", str(out / "report")],
        check=True,
    )  # fmt: skip
    print(
        "\nper arm: held-out greedy accuracy (start -> end) and mean training reward (first vs last 3 steps)"
    )
    for arm, records in results.items():
        first, last = reward_trend(records)
        (s0, s1) = accuracy[arm]
        print(f"  clip={arm:<8} accuracy {s0['acc']:.3f} -> {s1['acc']:.3f} ({s1['acc'] - s0['acc']:+.3f}, "
              f"{s1['n']} puzzles)  reward {first:+.3f} -> {last:+.3f}")  # fmt: skip
    (out / "accuracy.json").write_text(
        json.dumps({a: {"start": s0, "end": s1} for a, (s0, s1) in accuracy.items()})
    )
    print(f"\nreport: {out / 'report' / 'report.md'} (plots: {out / 'report'}/*.png)")
    if not args.fast:  # then the learning-rate comparison on the proxy: a stable and a collapsing lr
        print("\n== stability: global vs aggc at a stable and a collapsing learning rate, "
              f"{settings.stability_seeds} seeds (in process, aggc_rl.lr_sweep) ==", flush=True)  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "aggc_rl.lr_sweep", "--out", str(out / "stability"), "--arms", "global,aggc",
             "--lrs", ",".join(f"{lr:g}" for lr in settings.stability_lrs), "--seeds", str(settings.stability_seeds),
             "--steps", str(settings.stability_steps), "--heldout", str(settings.heldout), "--jobs", "2"],
            check=True,
        )  # fmt: skip
    print(f"demo wall time: {time.time() - t0:.0f}s")
    if args.fast:
        print("(--fast is a smoke run of the pipeline: a few steps are too few to judge learning)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
