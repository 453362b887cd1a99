"""``python -m aggc_rl.demo``: verl's real GRPO trainer on a CPU, global-norm vs AGGC, then the stability report.

What runs is the whole pipeline, unchanged from a GPU cluster except for the CPU platform and rollout:
Ray, verl's v1 trainer and agent loop, the ``hf_cpu`` rollout, the Knights-and-Knaves reward, GRPO
advantages, the actor update with our clipping, checkpoints. A tiny Qwen2 is built locally and
warm-started on the task's answer format, so sampling earns some reward from the first step; each arm
then trains from the same model, seed and data. Everything lands under ``--out``:

    model/            the warm-started tiny policy            data/   K&K parquet (2 people)
    <arm>/metrics.jsonl  verl's file logger                     <arm>/ckpt/  verl checkpoints
    report/           stability plots (PNG) and report.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aggc_rl.rewards
from aggc_rl import metrics as names
from verl_cpu.recipe import CPU_ACTOR_OVERRIDES
from verl_cpu.vllm_setup import VLLM_CPU_OVERRIDES

ARMS = ("global", "aggc")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo; ``fast()`` is the smoke version."""

    steps: int = 12
    prompts_per_step: int = 8
    samples_per_prompt: int = 8
    response_length: int = 64
    lr: float = 2e-4
    warm_start_steps: int = 100
    seed: int = 0

    @classmethod
    def fast(cls) -> DemoSettings:
        return cls(steps=3, prompts_per_step=4, samples_per_prompt=4, warm_start_steps=60)


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
    """Overrides that replace the ``hf_cpu`` rollout above (Hydra: the last value of a key wins)."""
    if rollout == "hf_cpu":
        return []
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
) -> list[dict]:
    """Train one arm in a child process, printing one line per step; returns its metric records."""
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
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=trainer_env(run_dir))
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
    from aggc_rl.tiny import TinySpec, build

    model, data = out / "model", out / "data"
    if not (model / "config.json").exists():
        print(
            f"building the tiny policy (warm start: {settings.warm_start_steps} supervised steps) ...",
            flush=True,
        )
        build(model, TinySpec(seed=settings.seed), warm_start_steps=settings.warm_start_steps, people=(2,))
    if not (data / "train.parquet").exists():
        from aggc_rl.data import knights_knaves

        argv = [
            "--out",
            str(data),
            "--people",
            "2",
            "--train",
            "512",
            "--test",
            "64",
            "--seed",
            str(settings.seed),
        ]
        if knights_knaves.main(argv) != 0:
            raise RuntimeError(f"making the demo's Knights-and-Knaves data in {data} failed")
    return model, data


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
    results = {}
    for arm in arms:
        print(f"\n== arm clip={arm}: {settings.steps} GRPO steps, {settings.prompts_per_step} prompts x "
              f"{settings.samples_per_prompt} samples ==", flush=True)  # fmt: skip
        results[arm] = run_arm(model, data, out / arm, arm, settings, rollout=args.rollout)

    print("\n== stability report ==", flush=True)
    subprocess.run(
        [sys.executable, "-m", "aggc_rl.report", *(str(out / a) for a in arms), "--labels", ",".join(arms),
         "--out", str(out / "report")],
        check=True,
    )  # fmt: skip
    print("\nmean reward, first vs last 3 steps:")
    rose = True
    for arm, records in results.items():
        start, end = reward_trend(records)
        rose &= end > start
        print(
            f"  clip={arm:<8} {start:+.3f} -> {end:+.3f}  ({'rose' if end > start else 'did NOT rise'} by {end - start:+.3f})"
        )
    print(f"\nreport: {out / 'report' / 'report.md'} (plots: {out / 'report'}/*.png)")
    if not args.fast:  # then the stability lab's --quick comparison: known faults, what reaches the weights
        subprocess.run(
            [sys.executable, "-m", "aggc_rl.lab", "--quick", "--out", str(out / "lab")], check=True
        )
    print(f"demo wall time: {time.time() - t0:.0f}s")
    if args.fast:
        print("(--fast is a smoke run of the pipeline: a few steps are too few to judge the reward trend)")
        return 0
    return 0 if rose else 1


if __name__ == "__main__":
    sys.exit(main())
